"""``chatloop chat`` driven through a pseudo-terminal against the real server: answers stream in, and /up and
/regen land in Redis as the same gestures a web client would send."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pexpect
import pytest

from feedback.pairs import read_all
from feedback.records import CompletionRecord
from tests.helpers import REPO, ServerHandle

pytestmark = pytest.mark.integration

PROMPT = "you> "


@pytest.fixture
def user() -> str:
    return f"term-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def terminal(server: ServerHandle, user: str) -> Iterator[pexpect.spawn]:
    args = ["-m", "client.cli", "chat", "--url", server.base_url, "--key", server.user_key, "--user", user]
    child = pexpect.spawn(sys.executable, [*args, "--max-tokens", "48"], cwd=str(REPO), encoding="utf-8", timeout=120)
    child.expect_exact(PROMPT)
    yield child
    child.close(force=True)


def completions_of(server: ServerHandle, user: str) -> list[CompletionRecord]:
    """This user's recorded answers, oldest first."""
    client = server.redis.client()
    keys = client.scan_iter("chatloop:completion:*")
    records = [CompletionRecord.model_validate_json(client.get(key)) for key in keys]
    return sorted((r for r in records if r.user == user), key=lambda r: r.finished)  # created: whole seconds


def ask(child: pexpect.spawn, line: str) -> str:
    """Type a message and return what was printed before the next prompt, with the terminal's \\r\\n undone."""
    child.sendline(line)
    child.expect_exact(PROMPT)
    return child.before.replace("\r\n", "\n")


def test_chat_rate_regenerate_and_quit(server: ServerHandle, terminal: pexpect.spawn, user: str) -> None:
    printed = ask(terminal, "Name a fruit.")
    assert "[base]" in printed and "error" not in printed
    (first,) = completions_of(server, user)
    assert first.status == "complete" and first.choices[0].text in printed

    assert "[rated up]" in ask(terminal, "/up")
    assert any(e["answer"] == f"{first.id}:0" and e.get("rating") == "up" for e in server.recent_events())

    terminal.sendline("/regen")
    terminal.expect_exact("Which answer is better? [1/2/s(ame)]")
    regenerated = completions_of(server, user)[-1]
    assert regenerated.metadata == {"regenerate_of": first.id}
    assert regenerated.choices[0].text in terminal.before.replace("\r\n", "\n")
    assert "[answer 2 preferred]" in ask(terminal, "2")
    comparisons = [
        pair
        for _, pair in read_all(server.redis.client())
        if pair.rule == "comparison" and pair.rejected.completion_id == first.id
    ]
    assert [pair.chosen.completion_id for pair in comparisons] == [regenerated.id]

    assert "[base]" in ask(terminal, "And a vegetable?")
    follow_up = completions_of(server, user)[-1]
    assert [m.content for m in follow_up.conversation if m.role == "assistant"] == [regenerated.choices[0].text]

    terminal.sendline("/quit")
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0
