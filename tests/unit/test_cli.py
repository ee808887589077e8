"""The ``chatloop`` command as a newcomer meets it: every command's help, the start banner, the shipped preferences
by name, and failures of the surroundings (server down, wrong key, Redis unreachable, bad setting, published keys
beyond loopback) as one line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from client.cli import build_parser, main, start_banner
from client.simulation.preferences import SHIPPED, resolve
from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from tests.helpers import REPO, free_port

CLI_TIMEOUT_S = 60
REFUSAL = "Incorrect API key provided."


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and nested command of ``parser``, with the words that name it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield (*path, name), command
                yield from commands(command, (*path, name))


ALL = dict(commands(build_parser()))


def options(command: argparse.ArgumentParser) -> set[str]:
    return {option for action in command._actions for option in action.option_strings}


def chatloop(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command as a person would, with the settings of a clean environment plus ``env``."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CHATLOOP_") and key != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def assert_one_line_failure(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for text in expected:
        assert text in done.stderr


@pytest.mark.parametrize("path", list(ALL), ids=" ".join)
def test_every_command_says_what_it_does_and_shows_an_example(path: tuple[str, ...]) -> None:
    command = ALL[path]
    assert command.description and command.description.strip()
    assert command.epilog.startswith("examples:\n")
    assert " ".join(path) in command.epilog, "an example must type the command itself"
    assert command.epilog.splitlines()[1] in command.format_help()


def test_options_are_offered_only_where_they_mean_something() -> None:
    listening = {path for path, command in ALL.items() if {"--host", "--port"} & options(command)}
    assert listening == {("up",), ("serve",)}
    with_reason = {path for path, command in ALL.items() if "--reason" in options(command)}
    changes = ("promote", "rollback", "retire", "pinnable", "unpinnable")
    assert with_reason == {("policy", action) for action in changes}
    contacting = {path for path, command in ALL.items() if "--url" in options(command)}
    admin_actions = {
        *(("policy", action) for action in ("list", "show", *changes)),
        *(("users", action) for action in ("add", "link", "approve", "remove", "forget", "teach", "mute", "list")),
        *(("keys", action) for action in ("create", "revoke", "list")),
    }
    assert contacting == {("chat",), ("simulate",)} | admin_actions


def test_train_without_once_prints_its_help() -> None:
    done = chatloop("train")
    assert done.returncode == 2 and done.stderr == ""
    assert done.stdout.startswith("usage: chatloop train") and "--once" in done.stdout and "examples:" in done.stdout


def test_shipped_preferences_resolve_by_name() -> None:
    assert set(SHIPPED) == {
        "concise",
        "bulleted",
        "short_sentences",
        "follow_up_question",
        "polite_greeting",
        "complete_answer",
        "bold_key_terms",
    }
    for name, preference in SHIPPED.items():
        assert resolve(name) is preference
        assert build_parser().parse_args(["simulate", "--preference", name]).preference == name
    spec = "client.simulation.preferences:concise"
    assert build_parser().parse_args(["simulate", "--preference", spec]).preference == spec


def test_an_unknown_preference_is_one_line_listing_the_shipped_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["simulate", "--preference", "consise"])
    assert exit_.value.code != 0
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "'consise'" in error
    assert all(name in error for name in SHIPPED)


def test_the_banner_shows_the_published_local_keys_and_the_first_admin_link() -> None:
    settings = Settings(api_keys=LOCAL_API_KEY, admin_key=LOCAL_ADMIN_KEY)
    banner = start_banner(settings, "http://127.0.0.1:8000", Path("data/models/m"), 42, signin_token="tok-1")
    assert "http://127.0.0.1:8000/#signin=tok-1 " in banner and LOCAL_API_KEY in banner
    assert "http://127.0.0.1:8000/admin" in banner and LOCAL_ADMIN_KEY in banner


def test_the_banner_without_a_link_says_how_people_get_in() -> None:
    banner = start_banner(Settings(), "http://127.0.0.1:8000", Path("data/models/m"), 42, signin_token=None)
    assert "http://127.0.0.1:8000/ " in banner and "#signin" not in banner and "chatloop users add" in banner


def test_the_banner_names_configured_keys_without_printing_them() -> None:
    settings = Settings(api_keys="sk-user-secret-1,sk-user-secret-2", admin_key="sk-admin-secret")
    banner = start_banner(settings, "http://127.0.0.1:8000", Path("data/models/m"), 42, signin_token=None)
    assert "secret" not in banner
    assert "CHATLOOP_API_KEYS" in banner and "CHATLOOP_ADMIN_KEY" in banner


def test_a_server_that_is_not_there_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_one_line_failure(chatloop("policy", "list", "--url", url), url, "cannot reach the server")


class Refusing(BaseHTTPRequestHandler):
    """A server that turns every key away, as chatloop does a wrong one."""

    def do_GET(self) -> None:
        body = json.dumps({"error": {"message": REFUSAL, "type": "invalid_request_error"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_wrong_key_is_one_line(refusing_server: str) -> None:
    done = chatloop("policy", "show", "v1", "--url", refusing_server, "--key", "sk-wrong")
    assert_one_line_failure(done, REFUSAL, "HTTP 401", "check the key")
    assert "sk-wrong" not in done.stderr


def test_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    done = chatloop(
        "feedback", "export", "--out", str(tmp_path / "pairs.jsonl"), REDIS_URL=f"redis://127.0.0.1:{free_port()}"
    )
    assert_one_line_failure(done, "cannot reach Redis", "REDIS_URL")


def test_a_bad_setting_is_one_line() -> None:
    assert_one_line_failure(chatloop("policy", "list", CHATLOOP_PORT="eighty"), "CHATLOOP_PORT")


@pytest.mark.parametrize("command", ["serve", "up"])
def test_published_keys_beyond_loopback_stop_the_server_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Run in this process, with the first thing each command would start replaced by a failure: a refusal that
    came too late (or not at all) fails here at once instead of starting Redis, the trainer or the engine."""

    def started(*_: object) -> None:
        raise AssertionError(f"chatloop {command} started before refusing the keys")

    local_keys = Settings(_env_file=None, api_keys=LOCAL_API_KEY, admin_key=LOCAL_ADMIN_KEY)
    monkeypatch.setattr("client.cli.get_settings", lambda: local_keys)
    monkeypatch.setattr("client.cli.configure_logging", lambda _level: None)
    monkeypatch.setattr("client.cli._model_folder", started)  # up's first step
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # serve's: importing it raises
    with pytest.raises(SystemExit) as exit_:
        main([command, "--host", "0.0.0.0"])
    assert exit_.value.code == (
        f"chatloop {command}: will not listen on 0.0.0.0 (beyond loopback) with a published or missing key: "
        "set CHATLOOP_API_KEYS and CHATLOOP_ADMIN_KEY and CHATLOOP_SECRET_KEY to your own, or listen on 127.0.0.1"
    )
