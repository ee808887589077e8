"""Where a request body holds something that is not Unicode text (server/unicode_body.py), found from its bytes."""

from __future__ import annotations

import json

import pytest

from server.unicode_body import not_text_at


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"messages": [{"role": "user", "content": "a\\ud800"}]}', ["messages", "0", "content"]),
        (b'{"messages": [{"role": "user", "content": "a\\uDFFF b"}]}', ["messages", "0", "content"]),
        (b'{"reason": "\\udc00\\ud800"}', ["reason"]),
        (b'{"stop": ["ok", "\\ud83d"]}', ["stop", "1"]),
        (b'{"metadata": {"a": "b", "\\ud800": "x"}}', ["metadata"]),
        (b'{"\\ud800": 1}', []),
        (b'{"user": "caf\xe9"}', ["user"]),
        (b'{"user": "\xed\xa0\x80"}', ["user"]),
        (b'{"user": "x"}\xff', []),
    ],
)
def test_a_lone_surrogate_or_bytes_not_utf8_are_found_where_they_are(body: bytes, path: list[str]) -> None:
    assert not_text_at(body) == path


@pytest.mark.parametrize(
    "body",
    [
        b"",
        json.dumps({"content": "caf\u00e9 \U0001f600", "user": "\u00b2"}, ensure_ascii=True).encode(),
        json.dumps({"content": "caf\u00e9 \U0001f600"}, ensure_ascii=False).encode(),
        b'{"content": "a backslash then u: \\\\ud800"}',
        b'{"content": "\\ud800',
        b"[" * 100_000,
    ],
)
def test_text_passes_and_json_that_does_not_parse_is_left_to_fastapi(body: bytes) -> None:
    assert not_text_at(body) is None
