"""The configuration reference (docs/configuration.md), generated from pipeline/config.py.

Every key of the typed config with its type, default and the comment written above it in
config.py, section by section. `python -m pipeline.config_reference > docs/configuration.md`
writes it; a test fails when the page and the code disagree, so the reference cannot drift.
"""

from __future__ import annotations

import ast
import inspect
import io
import sys
import tokenize
import types
import typing
from typing import Any

from pydantic import BaseModel

HEADER = """# Configuration reference

Generated from `pipeline/config.py` by `python -m pipeline.config_reference`; do not edit by
hand. A config is a YAML file (`configs/*.yaml`) holding any of these keys; `--set KEY=VALUE`
overrides one of them on the command line. Unknown keys and out-of-range values are refused
before anything runs, naming the key and the file.
"""


def _field_comments(module: Any) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment block above the field (and its inline one)."""
    source = inspect.getsource(module)
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
                continue
            lines, line = [], item.lineno - 1
            while line in comments:
                lines.insert(0, comments[line])
                line -= 1
            if item.lineno in comments:
                lines.append(comments[item.lineno])
            found[(node.name, item.target.id)] = " ".join(lines)
    return found


def _type_text(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = text.replace("typing.", "").replace("NoneType", "None").replace("pipeline.config.", "")
    return text.replace("|", "\\|")


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="))


def _constraints(field: Any) -> str:
    """The field's range and pattern, as `>= 1, <= 100`."""
    found = []
    for item in field.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{sign} {value}")
        if getattr(item, "pattern", None):
            found.append("matches `" + item.pattern.replace("|", "\\|") + "`")
    return ", ".join(found)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The section's model for a field that holds one (also when it may be None, as
    `vertex`), else None."""
    candidates = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        candidates = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(candidates) == 1:
        model = candidates[0]
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model
    return None


def _default_text(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _rows(model: type[BaseModel], prefix: str, comments, sections: list) -> list[str]:
    rows, previous = [], None
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        annotation = field.annotation
        if (section := _section(annotation)) is not None:
            sections.append((key, section))
            continue
        default = "(required)" if field.is_required() else _default_text(field.default)
        if field.default_factory is not None:
            default = _default_text(field.default_factory())
        comment = comments.get((model.__name__, name), "").replace("|", "\\|")
        if not comment and previous is not None:
            comment = f"See `{previous}`."  # one comment above a group of fields
        elif comment:
            previous = key
        if limits := _constraints(field):
            comment = f"{comment} ({limits})" if comment else f"({limits})"
        rows.append(f"| `{key}` | {_type_text(annotation)} | `{default}` | {comment} |")
    return rows


def render() -> str:
    """The reference page, as markdown."""
    from pipeline import config

    comments = _field_comments(config)
    lines = [HEADER]
    pending: list[tuple[str, type[BaseModel]]] = [("", config.Config)]
    while pending:
        prefix, model = pending.pop(0)
        sections: list[tuple[str, type[BaseModel]]] = []
        rows = _rows(model, prefix + "." if prefix else "", comments, sections)
        title = prefix or "top level"
        doc = (inspect.getdoc(model) or "").split("\n\n")[0].replace("\n", " ")
        lines += [f"## `{title}`", ""]
        if doc:
            lines += [doc, ""]
        if rows:
            lines += ["| key | type | default | what it does |", "|---|---|---|---|", *rows, ""]
        pending = sections + pending
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    """Prints the reference."""
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
