"""Read the library's docstrings as the plain text they are written in.

jaxprune's docstrings write math in plain text: ``|w_kj|`` for an absolute value and
``(N, *input_shape)`` for a shape. reStructuredText reads the first as a substitution
reference and the second as unfinished emphasis; both are warnings, which ``-W`` makes
errors. This hook escapes exactly those two forms outside literal blocks, doctest lines and
``inline literals``, and drops the docstring a data object inherits from its builtin type
(``dict``, ``tuple``: the autosummary page of a constant shows its value, not how ``dict()``
is called).
"""

from __future__ import annotations

import re

_PIPES = re.compile(r"(?<![\\|])\|(?=[^\s|])([^|`\n]*?[^\s\\|])\|(?!\|)")
_LONE_STAR = re.compile(r"(?<=[(\s,\[])\*(?=[A-Za-z_])")
_CLOSING_STAR = re.compile(r"[\w)]\*(?:\W|$)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _escape_text(text: str) -> str:
    text = _PIPES.sub(lambda m: rf"\|{m.group(1)}\|", text)
    if "**" not in text and not _CLOSING_STAR.search(text):
        text = _LONE_STAR.sub(r"\\*", text)
    return text


def escape(lines: list[str]) -> list[str]:
    """``lines`` of a docstring with plain-text pipes and lone stars escaped."""
    out, literal = [], None
    for line in lines:
        stripped = line.strip()
        if literal is not None and stripped and _indent(line) <= literal:
            literal = None
        if (
            literal is not None
            or stripped.startswith((">>>", "..."))
            or stripped.startswith(("+-", "+="))
            or (stripped.startswith("|") and stripped.endswith("|") and stripped.count("|") > 2)
        ):
            out.append(line)
            continue
        parts = line.split("``")
        for i in range(0, len(parts), 2):  # outside ``inline literals``
            parts[i] = _escape_text(parts[i])
        out.append("``".join(parts))
        if stripped.endswith("::"):
            literal = _indent(line)
    return out


def process(app, what, name, obj, options, lines):
    if (
        what in ("data", "attribute")
        and type(obj).__module__ == "builtins"
        and type(obj).__doc__
        and lines
        and lines[0].strip() == type(obj).__doc__.strip().splitlines()[0].strip()
    ):
        lines[:] = []
        return
    lines[:] = escape(lines)


def setup(app):
    app.connect("autodoc-process-docstring", process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
