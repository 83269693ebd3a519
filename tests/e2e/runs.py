"""What the end-to-end tests do to a root: a smoke run, and a fingerprint of what it serves."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline import cli


def smoke_run(root: Path, *overrides: str) -> tuple[int, dict]:
    """`taxifare run` of configs/smoke.yaml into `root`: its exit code and summary.json."""
    args = ["run", "--config", "configs/smoke.yaml", "--set", f"root={root}"]
    for o in overrides:
        args += ["--set", o]
    code = cli.main(args)
    with open(root / "summary.json") as fh:
        return code, json.load(fh)


def serving_state(root: Path) -> dict[str, float]:
    """Every file under the root's serving folder with its modification time."""
    serving = root / "serving"
    return {
        str(p.relative_to(serving)): p.stat().st_mtime for p in serving.rglob("*") if p.is_file()
    }


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the SHA-256 of its bytes (folders as "dir")."""
    return {
        str(p.relative_to(folder)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }
