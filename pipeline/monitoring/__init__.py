"""Training/serving skew and data drift: statistics, verdicts and readable reports.

TFDV computes the statistics (with Beam) and the distances; this package decides which
comparator and threshold each feature gets, turns TFDV's answers into a JSON verdict and a
self-contained HTML report, and maps the outcome to an exit code.
"""
