"""Every subcommand says what it does in its --help, and every flag has one line of help."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_the_history_commands_are_there():
    assert {"run", "runs", "report", "infer-schema", "compile", "submit", "serve"} <= set(
        _subcommands()
    )


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_and_flag_is_described(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    commands = _subcommands()
    parser = commands[name]
    assert parser.description
    # Its own: not a module docstring shared with another command.
    assert [n for n, p in commands.items() if p.description == parser.description] == [name]
    assert parser.description.split(".")[0] in " ".join(text.split())
    for action in parser._actions:
        if action.option_strings == ["-h", "--help"]:
            continue
        positional = action.metavar or action.dest
        label = action.option_strings[0] if action.option_strings else positional
        assert action.help and action.help != argparse.SUPPRESS, f"{name} {label}"
        assert label in text
