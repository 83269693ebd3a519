"""Every `taxifare ...` command the README and docs/ show exists as written.

The fenced shell blocks of README.md and docs/*.md are read, each `taxifare` command is
parsed by the real command-line parser (its subcommand and flags exist, what it needs is
given) and each `--set KEY=VALUE` key is checked against the typed config. A usage synopsis
(`[--flag]`, `(a | b)`, `<placeholder>`) is checked flag by flag. The configuration
reference (docs/configuration.md) is the one pipeline/config.py generates.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from pipeline import config_reference
from pipeline.cli import build_parser
from pipeline.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_SYNOPSIS = re.compile(r"[\[\]()|<>]|\.\.\.")


def _commands(path: Path) -> list[tuple[str, str]]:
    """(where, command) for each `taxifare` line of the fenced blocks of a markdown file."""
    found = []
    text = path.read_text()
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        lines = [line.strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
        # A block with a `$ ` prompt shows commands and their output: only prompted lines
        # are commands (an output line may begin with "taxifare run summary").
        if any(line.startswith("$ ") for line in lines):
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        for line in lines:
            if re.match(r"^(?:\.venv/bin/)?taxifare\s", line):
                found.append((path.name, line))
    return found


COMMANDS = [c for path in DOCS for c in _commands(path)]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _without_comment(command: str) -> str:
    return re.split(r"\s+#\s", command, maxsplit=1)[0].split(" > ")[0].strip()


def _check_synopsis(words: list[str]) -> None:
    parser = build_parser()
    names = [w for w in words[1:] if re.fullmatch(r"[a-z][a-z-]*", w)]
    while names and names[0] in _subparsers(parser):
        parser = _subparsers(parser)[names.pop(0)]
    known = {s for a in parser._actions for s in a.option_strings}
    flags = {m for w in words for m in re.findall(r"(--[a-z][a-z0-9-]*)", w)}
    assert flags <= known, f"unknown flags {sorted(flags - known)}"


def _set_keys(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "--set"]


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_the_documented_command_parses(where, command):
    text = _without_comment(command)
    words = text.split()
    if _SYNOPSIS.search(text.replace("{SPAN}", "")):
        _check_synopsis(words)
        return
    argv = shlex.split(text)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: `{text}` does not parse (exit {e.code})")
    overrides = [s for s in _set_keys(argv) if "=" in s]
    if overrides:
        config = getattr(args, "config", None) or "configs/local.yaml"
        try:
            load_config(REPO / config, overrides)
        except ConfigError as e:
            unknown = [line for line in str(e).splitlines() if "unknown key" in line]
            assert not unknown, f"{where}: `{text}`: {unknown}"


def test_the_docs_show_commands_at_all():
    # The checker above would pass on docs that lost their commands.
    assert len(COMMANDS) >= 10


def test_the_configuration_reference_is_the_one_the_code_generates():
    page = REPO / "docs" / "configuration.md"
    assert page.exists(), "docs/configuration.md: run python -m pipeline.config_reference"
    assert page.read_text() == config_reference.render(), (
        "docs/configuration.md is out of date: python -m pipeline.config_reference >"
        " docs/configuration.md"
    )


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_and_heading_that_exist(path):
    # Code is not a link: a regular expression in backticks may read as one.
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"(?ms)^```.*?^```", "", path.read_text()))
    for target in re.findall(r"\]\(([^)#\s]*)(#[^)\s]*)?\)", text):
        file, anchor = target
        if re.match(r"^[a-z]+://", file) or not file and not anchor:
            continue
        page = (path.parent / file).resolve() if file else path
        assert page.exists(), f"{path.name}: link to {file} (no such file)"
        if anchor and page.suffix == ".md":
            headings = {
                re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"(?m)^#+ (.+)$", page.read_text())
            }
            assert anchor[1:] in headings, f"{path.name}: link to {file}{anchor} (no heading)"
