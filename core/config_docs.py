"""The README's configuration tables, rendered from the settings' fields (``core/config.py``), so that what the README
says and what the code reads cannot drift apart (``tests/unit/test_config_docs.py`` fails when they do).

    python -m core.config_docs            # print the tables
    python -m core.config_docs --write    # put them in README.md, between the marker comments
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo

from core.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- configuration tables: generated from core/config.py by `python -m core.config_docs --write` -->"
END = "<!-- end of the generated configuration tables -->"
HEADER = ["| variable | default | meaning |", "| --- | --- | --- |"]


def _value(value: object) -> str:
    """As it would be written in the environment."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return ",".join(_value(item) for item in value)
    return str(value)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    return "empty" if value is None else f"`{_value(value)}`"


def _variable(prefix: str, name: str, field: FieldInfo) -> str:
    """The environment variable that sets the field: its alias where it has one (``REDIS_URL``)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        alias = alias.choices[0]
    return alias if isinstance(alias, str) else (prefix + name).upper()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _is_section(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    rows = [
        f"| `{_variable(prefix, name, field)}` | {_cell(_default(field))} | {_cell(field.description or '')} |"
        for name, field in model.model_fields.items()
        if not _is_section(field)
    ]
    return [*HEADER, *rows]


def render() -> str:
    """The tables: the top-level settings, then each section's, each section introduced by its description."""
    prefix = Settings.model_config["env_prefix"]
    delimiter = Settings.model_config["env_nested_delimiter"]
    lines = _table(Settings, prefix)
    for name, field in Settings.model_fields.items():
        if _is_section(field):
            section = f"{prefix}{name}{delimiter}"
            lines += ["", str(field.description), "", *_table(field.annotation, section)]
    return "\n".join(lines)


def readme_tables(text: str) -> str:
    """What the README holds between the markers."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n")


def with_tables(text: str, tables: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return f"{text[:start]}\n{tables}\n{text[end:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite README.md's tables instead of printing them")
    if parser.parse_args().write:
        README.write_text(with_tables(README.read_text(), render()))
    else:
        print(render())


if __name__ == "__main__":
    main()
