"""``chatloop users`` and ``chatloop keys`` against the real server, as an operator types them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import httpx
import pytest

from tests.helpers import REPO, ServerHandle

pytestmark = pytest.mark.integration


def chatloop(server: ServerHandle, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", *args, "--url", server.base_url, "--key", server.admin_key],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("CHATLOOP_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_added_person_gets_a_link_that_signs_them_in_once(server: ServerHandle) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    printed = chatloop(server, "users", "add", name)
    link = next(line.strip() for line in printed.splitlines() if "#signin=" in line)
    assert link.startswith(server.base_url)
    token = link.split("#signin=")[1]
    origin = {"Origin": server.base_url}
    with httpx.Client(base_url=server.base_url, headers=origin) as browser:
        assert browser.post("/v1/auth/link", json={"token": token}).status_code == 200
        assert browser.get("/v1/models").status_code == 200
        assert browser.post("/v1/auth/link", json={"token": token}).status_code == 401
    assert name in chatloop(server, "users", "list")
    chatloop(server, "users", "remove", name)
    assert name not in chatloop(server, "users", "list")


def test_a_key_made_in_the_terminal_works_until_revoked(server: ServerHandle) -> None:
    name = f"app-{uuid.uuid4().hex[:8]}"
    printed = chatloop(server, "keys", "create", name, "--chat-per-minute", "90")
    secret = printed.split(f"{name}: ")[1].split()[0]
    listing = chatloop(server, "keys", "list")
    assert name in listing and secret not in listing and "90" in listing
    with server.http(secret) as app:
        assert app.get("/v1/models").status_code == 200
        chatloop(server, "keys", "revoke", name)
        assert app.get("/v1/models").status_code == 401
