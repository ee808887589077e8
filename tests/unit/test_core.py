"""Pure helpers of the shared core: model names, settings parsing, log formatting."""

from __future__ import annotations

import logging

import pydantic
import pytest

from client.errors import describe_settings
from core.config import Settings
from core.logs import FieldsFormatter
from core.policy import pinned_name, split_model_name


def test_model_names_round_trip() -> None:
    assert split_model_name(pinned_name("chatloop", "v3")) == ("chatloop", "v3")
    assert split_model_name("chatloop") == ("chatloop", None)
    assert split_model_name("chatloop@") == ("chatloop", "")


def test_api_keys_from_comma_separated_env(monkeypatch) -> None:
    monkeypatch.setenv("CHATLOOP_API_KEYS", " k1, k2 ,,")
    settings = Settings(_env_file=None)
    assert [key.get_secret_value() for key in settings.api_keys] == ["k1", "k2"]
    assert "k1" not in repr(settings)


def test_redis_url_from_conventional_variable(monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/0")
    assert Settings(_env_file=None).redis_url == "redis://example:6379/0"


def test_a_moved_ppo_setting_is_refused_naming_its_new_variable(monkeypatch) -> None:
    monkeypatch.setenv("CHATLOOP_PPO__DPO_EPOCHS", "0")
    monkeypatch.setenv("CHATLOOP_PPO__BEST_OF", "4")
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(_env_file=None)
    assert describe_settings(refused.value) == (
        "invalid setting: CHATLOOP_PPO: BEST_OF moved to CHATLOOP_SUPERVISED__BEST_OF, "
        "DPO_EPOCHS moved to CHATLOOP_PREFERENCE__EPOCHS"
    )
    monkeypatch.delenv("CHATLOOP_PPO__DPO_EPOCHS")
    monkeypatch.delenv("CHATLOOP_PPO__BEST_OF")
    monkeypatch.setenv("CHATLOOP_PREFERENCE__EPOCHS", "0")
    monkeypatch.setenv("CHATLOOP_SUPERVISED__BEST_OF", "4")
    settings = Settings(_env_file=None)
    assert (settings.preference.epochs, settings.supervised.best_of) == (0, 4)


def test_the_split_length_band_is_refused_naming_its_successors(monkeypatch) -> None:
    monkeypatch.setenv("CHATLOOP_GATE__LENGTH_BAND", "0.5")
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(_env_file=None)
    assert "LENGTH_BAND moved to CHATLOOP_GATE__MAX_LENGTH_GROWTH" in describe_settings(refused.value)


def test_log_fields_are_appended() -> None:
    record = logging.makeLogRecord({"msg": "hello", "levelname": "INFO", "name": "x", "completion_id": "c1"})
    assert FieldsFormatter("%(message)s").format(record) == "hello completion_id='c1'"
