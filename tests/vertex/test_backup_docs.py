"""The docs say how often the Trainer backs up on a training cluster, as the code does it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _save_freq() -> object:
    """The save_freq the Trainer gives Keras' BackupAndRestore, read from its source."""
    tree = ast.parse((REPO / "taxifare_modules" / "trainer.py").read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "BackupAndRestore"
    ]
    assert len(calls) == 1
    (value,) = [k.value for k in calls[0].keywords if k.arg == "save_freq"]
    return ast.literal_eval(value)


def test_the_docs_backup_frequency_is_the_trainers():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    text = " ".join(" ".join(p.read_text().split()) for p in pages)
    said = re.findall(r"backed up (every \d+ steps|after every epoch)", text)
    assert said, "the docs say how often the Trainer backs up"
    freq = _save_freq()
    expected = "after every epoch" if freq == "epoch" else f"every {freq} steps"
    assert set(said) == {expected}
