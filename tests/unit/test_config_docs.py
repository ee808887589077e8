"""The README's configuration tables are the settings' own descriptions (core/config_docs.py)."""

from __future__ import annotations

from pydantic import BaseModel

from core.config import Settings
from core.config_docs import README, readme_tables, render


def test_every_setting_has_a_description() -> None:
    sections: list[type[BaseModel]] = [Settings]
    for model in sections:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                sections.append(field.annotation)
    assert len(sections) > 1


def test_the_readme_tables_are_generated_from_the_settings() -> None:
    assert readme_tables(README.read_text()) == render(), (
        "README.md's configuration tables differ from core/config.py: run `.venv/bin/python -m core.config_docs "
        "--write` and commit README.md"
    )
