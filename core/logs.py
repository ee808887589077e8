"""Logging set-up shared by every chatloop process: one line per record, with its structured fields.

Modules log with ``extra={...}``; this formatter appends those fields as ``key=value`` so that logs stay
greppable without a JSON pipeline. Secrets are never passed as fields (keys appear only as ``key_id``).
"""

from __future__ import annotations

import logging

_STANDARD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class FieldsFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD_FIELDS}
        if fields:
            line += " " + " ".join(f"{key}={value!r}" for key, value in sorted(fields.items()))
        return line


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
