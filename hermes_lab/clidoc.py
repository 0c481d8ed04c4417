"""The CLI reference page (``docs/cli-reference.md``), generated from the typer app itself.

The page is written by ``python -m hermes_lab.clidoc > docs/cli-reference.md`` and a test checks that the
committed page is what this module writes now, so the reference cannot drift from the commands. A second
test (:func:`documented_options`) reads every ``hermes-lab COMMAND ... --option`` written anywhere in the docs
and the README and checks each against :func:`command_options`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer

HEADER = """# CLI reference

Generated from the commands themselves (`python -m hermes_lab.clidoc > docs/cli-reference.md`); a test
fails when this page and the CLI differ. Every command checks its arguments before it loads a model or
writes anything: a mistake is one line, `hermes-lab: error: ...`, with exit status 2.
"""


# typer ships its own copy of click, so commands and parameters are told apart by what they have (a group
# lists commands; a parameter says whether it is an option), not by the classes of an installed click

def root_command() -> Any:
    """The click group behind ``hermes-lab``."""
    from hermes_lab.cli import app

    return typer.main.get_command(app)


def _is_option(p: Any) -> bool:
    return p.param_type_name == "option"


def walk(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf command as (path of names, command), in the order ``--help`` lists them."""
    ctx = group.context_class(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        if hasattr(cmd, "list_commands"):
            yield from walk(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def command_options() -> dict[str, set[str]]:
    """``{"data synth": {"--out", "--overwrite", ...}, ...}``: every spelling each command accepts."""
    out: dict[str, set[str]] = {}
    for path, cmd in walk(root_command()):
        names: set[str] = set()
        for p in cmd.params:
            if _is_option(p):
                names.update(p.opts)
                names.update(p.secondary_opts)
        out[" ".join(path)] = names
    return out


def _default(p: Any) -> str:
    if p.is_flag and p.secondary_opts:
        return f"`{p.opts[0] if p.default else p.secondary_opts[0]}`"
    if p.is_flag:
        return "on" if p.default else "off"
    if p.default is None or p.default == "" or callable(p.default):
        return "–"
    if p.multiple and not p.default:
        return "–"
    return f"`{p.default}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole page, as markdown."""
    parts = [HEADER]
    for path, cmd in walk(root_command()):
        name = " ".join(path)
        parts.append(f"\n## `hermes-lab {name}`\n")
        doc = (cmd.help or "").strip()
        if doc:
            parts.append(_cell(doc.split("\n\n")[0]) + "\n")
            rest = "\n\n".join(" ".join(par.split()) for par in doc.split("\n\n")[1:])
            if rest:
                parts.append("\n" + rest.replace("|", "\\|") + "\n")
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        if args:
            parts.append("\nArguments: " + ", ".join(
                f"`{(a.metavar or a.name).upper()}`" + (f" ({_cell(a.help)})" if getattr(a, "help", None) else "")
                for a in args) + "\n")
        opts = [p for p in cmd.params if _is_option(p) and not p.hidden and p.name != "help"]
        if opts:
            parts.append("\n| option | default | meaning |\n|---|---|---|\n")
            for p in opts:
                spell = " / ".join(f"`{o}`" for o in (*p.opts, *p.secondary_opts))
                parts.append(f"| {spell} | {_cell(_default(p))} | {_cell(p.help or '')} |\n")
    return "".join(parts)


#: ``hermes-lab data synth --out X``: the command words, then the rest of its segment (options are read from it)
_INVOCATION = re.compile(r"^((?:\s+[a-z][a-z0-9-]*)+)(.*)$")
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def documented_options(text: str, commands: dict[str, set[str]]) -> Iterator[tuple[str, str]]:
    """(command, option) for every option written after ``hermes-lab COMMAND`` on a line of ``text``.

    A command line continued with a trailing backslash counts as one line, and a second ``hermes-lab`` on a
    line starts a new invocation. Only the longest run of words that names a command is taken as the
    command (``hermes-lab data synth --out``: ``data synth``)."""
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        for segment in line.split("hermes-lab")[1:]:
            m = _INVOCATION.match(segment)
            if m is None:
                continue
            words = m.group(1).split()
            command = next((" ".join(words[:n]) for n in range(len(words), 0, -1)
                            if " ".join(words[:n]) in commands), None)
            if command is None:
                continue
            tail = " ".join(words[len(command.split()):]) + m.group(2)
            for opt in _OPTION.findall(tail):
                yield command, opt


if __name__ == "__main__":
    print(render(), end="")
