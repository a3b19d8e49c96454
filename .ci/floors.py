"""Print the declared version floors of pyproject.toml as exact pins (``name==floor``), one a line.

Every dependency of the base install and of the extras ``prompt``, ``train``, ``eval`` and ``dev``
is pinned to its ``>=`` floor, except torch (see .ci/run) and lamina itself.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

#: Not pinned: torch (see .ci/run), lamina's own extras, lint, and the studio's browser driver (its e2e tests
#: are not in the floors subset).
SKIP = {"torch", "lamina", "ruff", "playwright"}


def main() -> int:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in ("prompt", "train", "eval", "dev"):
        requirements += project["optional-dependencies"][extra]
    for requirement in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)\s*(,\s*<[^,;]+)?", requirement)
        name = re.split(r"[\[<>=!~; ]", requirement.strip())[0]
        if name.lower() in SKIP:
            continue
        if match is None:
            print(f"no single >= floor in {requirement!r}", file=sys.stderr)
            return 1
        print(f"{match.group(1)}=={match.group(3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
