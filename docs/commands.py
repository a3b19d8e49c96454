"""The README's command summary, generated from the ``lamina`` commands' own ``--help``.

``python docs/commands.py`` prints it; ``python docs/commands.py --write`` puts it into README.md
between ``<!-- commands -->`` and ``<!-- /commands -->``. ``tests/test_readme_commands.py`` fails
when the README's copy differs from what the commands say.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- commands -->", "<!-- /commands -->"
WIDTH = 110


def _option_text(param: click.Parameter) -> str:
    if not isinstance(param, click.Option) or param.hidden:
        return ""
    names = "/".join(param.opts + param.secondary_opts) if param.secondary_opts else param.opts[-1]
    if param.is_flag:
        return f"[{names}]"
    metavar = param.metavar or (param.type.get_metavar(param, click.get_current_context()) if isinstance(
        param.type, click.Choice) else param.type.name.upper())
    metavar = {"INTEGER RANGE": "N", "INTEGER": "N", "FLOAT RANGE": "X", "FLOAT": "X"}.get(metavar, metavar)
    metavar = metavar.strip("[]")
    return f"{'' if param.required else '['}{names} {metavar}{'' if param.required else ']'}" + (
        "..." if param.multiple else "")


def _usage(path: str, command: click.Command) -> list[str]:
    ctx = click.Context(command, info_name=path)
    with ctx:
        arguments = " ".join(p.make_metavar(ctx) for p in command.params if isinstance(p, click.Argument))
        options = [_option_text(p) for p in command.params]
        options = [o for o in options if o and o not in ("[--help]", "[-h/--help]")]
        head = f"{path} {arguments}".rstrip()
        body = textwrap.wrap(" ".join(options), WIDTH - 6, break_on_hyphens=False, break_long_words=False)
        short = command.get_short_help_str(limit=WIDTH - 6)
    return [head, *(f"      {line}" for line in body), f"      -> {short}"]


def summary() -> str:
    """Every command and subcommand: usage line with its options, and its one-line help."""
    from lamina.cli import main

    lines: list[str] = []
    ctx = click.Context(main, info_name="lamina")
    with ctx:
        for name in main.list_commands(ctx):
            command = main.get_command(ctx, name)
            if isinstance(command, click.Group):
                sub_ctx = click.Context(command, info_name=name, parent=ctx)
                for sub in command.list_commands(sub_ctx):
                    lines += _usage(f"lamina {name} {sub}", command.get_command(sub_ctx, sub))
            else:
                lines += _usage(f"lamina {name}", command)
    return "\n".join(lines)


def readme_block(text: str | None = None) -> str:
    """The README's current block between the markers."""
    text = README.read_text() if text is None else text
    if START not in text or END not in text:
        raise SystemExit(f"{README}: no {START} ... {END} markers")
    return text.split(START, 1)[1].split(END, 1)[0].strip().removeprefix("```").removesuffix("```").strip()


def main() -> None:
    block = summary()
    if "--write" not in sys.argv:
        print(block)
        return
    text = README.read_text()
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    README.write_text(f"{before}{START}\n```\n{block}\n```\n{END}{after}")
    print(f"wrote the command summary into {README}")


if __name__ == "__main__":
    main()
