"""Print pyproject.toml's pinned requirements, with the extras named on the command line, one a line.

The images install this list before they copy the code, so that a code change rebuilds only the last layers instead
of reinstalling several GB of wheels. pyproject.toml stays the one place where versions are pinned.
Usage: python requirements.py [EXTRA ...] > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *(req for extra in extras for req in project["optional-dependencies"][extra])]


if __name__ == "__main__":
    print("\n".join(requirements(Path("pyproject.toml"), sys.argv[1:])))
