"""One self-contained HTML page per pipeline run (inline SVG, no scripts, no network)."""
