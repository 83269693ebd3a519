"""Benchmarks: our pipeline against TFX's own Chicago taxi example.

Run ``python -m bench`` from the repository root; it writes ``BENCHMARKS.md``.

This package must stay cheap to import: ``bench.rss_wrapper`` is started as a
separate process around every measured command, so nothing heavy (TensorFlow,
TFX) may be imported here.
"""
