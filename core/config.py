"""The one typed configuration object for every chatloop process.

Values come from environment variables prefixed ``CHATLOOP_`` (plus the conventional ``REDIS_URL``) and from a
``.env`` file in the working directory; the defaults below are the embedded set-up that ``make run`` uses. The
README's configuration table lists every field: keep the two in step.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
LOCAL_API_KEY = "sk-chatloop-local"
LOCAL_ADMIN_KEY = "sk-chatloop-admin"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATLOOP_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Models, Redis data and artifacts live here.")
    model: Path | None = Field(
        None, description="Hugging Face causal LM folder; empty means the converted default model."
    )
    model_alias: str = Field("chatloop", description="The name clients put in `model`.")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr(LOCAL_API_KEY)],
        description="Comma-separated user API keys (Authorization: Bearer).",
    )
    admin_key: SecretStr = Field(SecretStr(LOCAL_ADMIN_KEY), description="Key for the admin endpoints.")

    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "CHATLOOP_REDIS_URL"),
        description="External Redis; empty starts a local redis-server in the data folder.",
    )
    record_retention_days: float = Field(
        30.0, gt=0, description="How long completion records and conversations' feedback state are kept."
    )
    event_retention_days: float = Field(
        90.0, gt=0, description="How long feedback events and preference pairs stay in their streams."
    )
    feedback_per_minute: int = Field(120, ge=1, description="Feedback gestures one user may send per minute.")
    pairs_per_hour: int = Field(200, ge=1, description="Preference pairs one user may contribute per hour.")

    max_model_len: int = Field(2048, ge=64, description="Context window (prompt + answer tokens).")
    dtype: str = "bfloat16"
    kv_cache_gib: int = Field(2, ge=1, description="KV cache size for the CPU backend (VLLM_CPU_KVCACHE_SPACE).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory for vLLM (CUDA).")
    enforce_eager: bool = Field(True, description="Skip graph compilation: faster start, see docs/benchmarks.md.")
    max_num_seqs: int = Field(64, ge=1, description="Most sequences the engine batches at once.")
    max_n: int = Field(8, ge=1, description="Largest `n` a request may ask for.")
    max_top_logprobs: int = Field(20, ge=0, description="Largest `top_logprobs` a request may ask for.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @property
    def model_path(self) -> Path:
        return self.model or self.data_dir / "models" / DEFAULT_MODEL_DIRNAME

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def uses_default_keys(self) -> bool:
        user_keys = {key.get_secret_value() for key in self.api_keys}
        return LOCAL_API_KEY in user_keys or self.admin_key.get_secret_value() == LOCAL_ADMIN_KEY


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
