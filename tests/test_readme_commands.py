"""The README's command summary is what the commands' own --help says (regenerate: python docs/commands.py --write)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands_module():
    spec = importlib.util.spec_from_file_location("lamina_docs_commands", ROOT / "docs" / "commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_command_summary_matches_help() -> None:
    commands = _commands_module()
    block = commands.readme_block()
    assert block == commands.summary(), "README command summary is stale: run python docs/commands.py --write"
    for name in ("lamina decompose", "lamina furrygan segment", "--device", "--preview/--no-preview"):
        assert name in block
