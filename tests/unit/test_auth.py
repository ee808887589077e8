"""Which keys a server may start with: the published ones (the README's local keys, the deploy files' placeholders)
only where no other machine can reach it, and there only with its own secret for the keyed ids."""

from __future__ import annotations

import pytest

from core.config import LOCAL_ADMIN_KEY, LOCAL_API_KEY, Settings
from core.errors import SetupError
from server.auth import is_loopback, refuse_published_keys

OWN_USER_KEYS = "sk-user-own-1,sk-user-own-2"
OWN_ADMIN_KEY = "sk-admin-own"
OWN_SECRET = "an own secret"


def listening(
    host: str, api_keys: str = OWN_USER_KEYS, admin_key: str = OWN_ADMIN_KEY, secret: str | None = OWN_SECRET
) -> Settings:
    return Settings(_env_file=None, host=host, api_keys=api_keys, admin_key=admin_key, secret_key=secret)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost", "LocalHost"])
def test_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "10.0.0.7", "192.168.1.20", "fe80::1", "example.com", "localhost.lan"]
)
def test_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_the_local_keys_serve_on_loopback(host: str) -> None:
    refuse_published_keys(listening(host, LOCAL_API_KEY, LOCAL_ADMIN_KEY))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "chatloop.example.com"])
def test_own_keys_serve_beyond_loopback(host: str) -> None:
    refuse_published_keys(listening(host))


@pytest.mark.parametrize(
    "api_keys, admin_key, named",
    [
        (LOCAL_API_KEY, LOCAL_ADMIN_KEY, "CHATLOOP_API_KEYS and CHATLOOP_ADMIN_KEY"),
        (f"{OWN_USER_KEYS},{LOCAL_API_KEY}", OWN_ADMIN_KEY, "CHATLOOP_API_KEYS"),
        (OWN_USER_KEYS, LOCAL_ADMIN_KEY, "CHATLOOP_ADMIN_KEY"),
        (LOCAL_ADMIN_KEY, OWN_ADMIN_KEY, "CHATLOOP_API_KEYS"),
        (OWN_USER_KEYS, LOCAL_API_KEY, "CHATLOOP_ADMIN_KEY"),
        ("sk-REPLACE-ME", "sk-admin-REPLACE-ME", "CHATLOOP_API_KEYS and CHATLOOP_ADMIN_KEY"),
        (OWN_USER_KEYS, "my-REPLACE-ME-key", "CHATLOOP_ADMIN_KEY"),
    ],
)
def test_published_keys_are_refused_beyond_loopback(api_keys: str, admin_key: str, named: str) -> None:
    with pytest.raises(SetupError) as refused:
        refuse_published_keys(listening("0.0.0.0", api_keys, admin_key))
    message = str(refused.value)
    assert message == (
        f"will not listen on 0.0.0.0 (beyond loopback) with a published or missing key: set {named} to your own, "
        "or listen on 127.0.0.1"
    )
    assert "sk-" not in message


@pytest.mark.parametrize("secret", [None, "REPLACE-ME"])
def test_beyond_loopback_the_secret_of_the_keyed_ids_must_be_set(secret: str | None) -> None:
    """Replicas beyond loopback need one secret between them; a data folder's own is not shared."""
    refuse_published_keys(listening("127.0.0.1", secret=secret))
    with pytest.raises(SetupError, match="set CHATLOOP_SECRET_KEY to your own"):
        refuse_published_keys(listening("0.0.0.0", secret=secret))


def test_keys_from_the_environment_replace_the_local_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOOP_SECRET_KEY", "k0")
    monkeypatch.setenv("CHATLOOP_API_KEYS", "k1")
    monkeypatch.setenv("CHATLOOP_ADMIN_KEY", "k2")
    monkeypatch.setenv("CHATLOOP_HOST", "0.0.0.0")
    settings = Settings(_env_file=None)
    assert LOCAL_API_KEY not in {key.get_secret_value() for key in settings.api_keys}
    refuse_published_keys(settings)
    monkeypatch.delenv("CHATLOOP_ADMIN_KEY")
    with pytest.raises(SetupError, match="set CHATLOOP_ADMIN_KEY to your own"):
        refuse_published_keys(Settings(_env_file=None))
