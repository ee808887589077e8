"""No module of the tests or the benchmarks imports a test module or a conftest.py: pytest loads those itself, and
what they would share lives in tests/helpers.py (or tests/factories.py for synthetic data)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

SCANNED = sorted(path for folder in ("tests", "bench") for path in (REPO / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def imported_modules(source: str, module: str) -> list[str]:
    """Every module that the import statements of ``source`` (the code of ``module``) name, relative imports
    resolved; ``from a import b`` counts as both ``a`` and ``a.b``, since ``b`` may be a module."""
    package = module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            imported = ".".join([*base, *filter(None, [node.module])])
            found.extend([imported, *(f"{imported}.{alias.name}" for alias in node.names)])
    return found


def is_test_module(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last.startswith("test_") or last == "conftest"


def forbidden_imports(source: str, module: str) -> list[str]:
    return sorted({imported for imported in imported_modules(source, module) if is_test_module(imported)})


@pytest.mark.parametrize(
    "statement, forbidden",
    [
        ("from tests.conftest import ServerHandle", "tests.conftest"),
        ("from tests.integration.test_trainer import SMALL", "tests.integration.test_trainer"),
        ("from tests.integration import test_trainer", "tests.integration.test_trainer"),
        ("import tests.integration.test_chat_api", "tests.integration.test_chat_api"),
        ("from .test_core import Settings", "tests.unit.test_core"),
        ("from .. import conftest", "tests.conftest"),
        ("from ..helpers import REPO", None),
        ("from tests.factories import seed_pairs", None),
    ],
)
def test_the_rule_sees_every_form_of_import(statement: str, forbidden: str | None) -> None:
    assert forbidden_imports(statement, "tests.unit.probe") == ([forbidden] if forbidden else [])


@pytest.mark.parametrize("path", SCANNED, ids=lambda path: str(path.relative_to(REPO)))
def test_no_module_imports_a_test_module_or_a_conftest(path: Path) -> None:
    forbidden = forbidden_imports(path.read_text(), module_name(path))
    assert forbidden == [], f"{path.relative_to(REPO)} imports {forbidden}: what it needs belongs in tests/helpers.py"
