"""The one typed configuration object for every chatloop process.

Values come from environment variables prefixed ``CHATLOOP_`` (plus the conventional ``REDIS_URL``) and from a
``.env`` file in the working directory; the defaults below are the embedded set-up that ``make run`` uses. Every
field's description is its documentation (a section's is on its field of ``Settings``): the README's configuration
tables are generated from them (``python -m core.config_docs --write``), and a unit test fails when the two differ.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
LOCAL_API_KEY = "sk-chatloop-local"
LOCAL_ADMIN_KEY = "sk-chatloop-admin"


class RewardSettings(BaseModel):
    lora_rank: int = Field(8, ge=1, description="Rank of the reward model's LoRA adapter.")
    top_layers: int = Field(6, ge=1, description="LoRA on this many top layers only: backprop stops below them.")
    epochs: int = Field(2, ge=1, description="Passes over the round's training pairs by a reward model made afresh.")
    warm_epochs: int = Field(
        1, ge=1, description="Passes by one warm-started from the previous round's reward model (`warm_start`)."
    )
    warm_start: bool = Field(True, description="Continue the previous round's reward model rather than start anew.")
    max_pairs: int = Field(
        192, ge=1, description="Pairs it trains on a round: the new ones, then a sample of the earlier ones."
    )
    learning_rate: float = Field(3e-4, gt=0, description="AdamW's learning rate.")
    batch_size: int = Field(8, ge=1, description="Pairs per step, all processes together.")
    max_length: int = Field(384, ge=16, description="Tokens of prompt + answer kept (the start is cut).")
    held_out_share: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of prompts held out of all training, for the reward model's and the gate's evaluation "
        "(by a hash of the prompt: the same prompts every round).",
    )


class FinetuneSettings(BaseModel):
    """What the two fine-tuning stages of the policy's adapter share (``trainer/finetune.py``)."""

    epochs: int = Field(1, ge=0, description="Passes over the stage's examples (0: the stage is off).")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW's learning rate in this stage.")


class SupervisedSettings(FinetuneSettings):
    epochs: int = Field(0, ge=0, description="Epochs of next-token loss on the chosen answers (0: the stage is off).")
    best_of: int = Field(
        0,
        ge=0,
        description="Answers sampled per prompt for best-of-n examples, the one the reward model ranks first kept "
        "(0 or 1: none).",
    )
    best_of_prompts: int = Field(16, ge=1, description="Prompts a round samples best-of-n answers to.")


class PreferenceSettings(FinetuneSettings):
    epochs: int = Field(1, ge=0, description="Epochs of DPO on the round's pairs (0: the stage is off).")
    beta: float = Field(0.1, gt=0, description="DPO's beta: how far the log-ratios to the base may go.")


MOVED_FROM_PPO = {
    "sft_epochs": "CHATLOOP_SUPERVISED__EPOCHS",
    "best_of": "CHATLOOP_SUPERVISED__BEST_OF",
    "best_of_prompts": "CHATLOOP_SUPERVISED__BEST_OF_PROMPTS",
    "dpo_epochs": "CHATLOOP_PREFERENCE__EPOCHS",
    "dpo_beta": "CHATLOOP_PREFERENCE__BETA",
}
"""The fine-tuning stages' settings that PPO's section once held, and the variables that set them now."""

MOVED_FROM_GATE = {"length_band": "CHATLOOP_GATE__MAX_LENGTH_GROWTH and CHATLOOP_GATE__MAX_LENGTH_SHRINK"}
"""The gate's settings that were split, and the variables that replace them."""


def refuse_moved(values: object, moved: dict[str, str]) -> object:
    """A moved setting would otherwise be ignored without a word, and its stage run on the default."""
    if isinstance(values, dict) and (found := [name for name in moved if name in values]):
        message = ", ".join(f"{name.upper()} moved to {moved[name]}" for name in found)
        raise PydanticCustomError("moved_setting", message)
    return values


class PPOSettings(BaseModel):
    lora_rank: int = Field(
        16,
        ge=1,
        description="Rank of a fresh policy adapter; the engine makes room for twice it (a version's "
        "difference to the active one).",
    )
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha of a fresh policy adapter.")
    rollouts: int = Field(
        0,
        ge=0,
        description="Rollout batches per round; 0, the default, turns PPO off (on a CPU the preference stage alone "
        'teaches as much in shorter rounds: README, "What each stage adds"); 2 or more where rollouts are cheap.',
    )
    batch_prompts: int = Field(8, ge=1, description="Prompts per rollout batch, all processes together.")
    samples_per_prompt: int = Field(
        4, ge=1, description="Answers sampled to each prompt of a batch: the group of the `group` advantage."
    )
    advantage: Literal["group", "critic"] = Field(
        "group",
        description="`group`: each answer against the others to its prompt (RLOO); `critic`: a value head and GAE "
        "(`trainer/losses.py`).",
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="Longest answer sampled in a rollout, best-of-n or the gate (unset: as recent answers were "
        "served, `trainer/sampling.py`).",
    )
    token_cap: int = Field(128, ge=1, description="The most tokens such an answer gets when taken from serving.")
    temperature: float | None = Field(
        None, gt=0, description="Sampling temperature of those answers (unset: as recent answers were served)."
    )
    engine_rollouts: bool = Field(
        False,
        description="Sample those answers with the serving engine (`engine_url`, the admin key) when it answers; the "
        "trainer samples them itself when it does not, or when this is off (on a CPU, its own are twice as fast).",
    )
    engine_url: str | None = Field(
        None, description="The server whose engine samples them (unset: `CHATLOOP_HOST`:`CHATLOOP_PORT`)."
    )
    kl_coef: float = Field(0.05, ge=0, description="Per-token KL penalty to the base model.")
    gamma: float = Field(1.0, gt=0, le=1, description="Discount of GAE (`critic`).")
    lam: float = Field(0.95, ge=0, le=1, description="Lambda of GAE (`critic`).")
    clip_range: float = Field(0.2, gt=0, description="Clip range of the policy's probability ratio.")
    clip_range_value: float = Field(0.2, gt=0, description="Clip range of the value head's change (`critic`).")
    value_coef: float = Field(0.5, ge=0, description="Weight of the value loss beside the policy loss (`critic`).")
    epochs: int = Field(2, ge=1, description="Passes over each rollout batch.")
    minibatch_size: int = Field(
        4, ge=1, description="Answers per update, all processes together; the fine-tuning stages' examples too."
    )
    learning_rate: float = Field(1e-4, gt=0, description="AdamW's learning rate for the adapter and value head.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping, in PPO and the fine-tuning stages.")
    target_kl: float = Field(0.1, gt=0, description="Stop a batch's epochs once approximate KL exceeds it.")

    @model_validator(mode="before")
    @classmethod
    def _refuse_moved(cls, values: object) -> object:
        return refuse_moved(values, MOVED_FROM_PPO)


class GateSettings(BaseModel):
    eval_prompts: int = Field(16, ge=1, description="Held-out prompts both policies answer.")
    min_reward_gain: float = Field(0.0, description="The mean per-prompt reward gain over the parent must beat this...")
    reward_tolerance_se: float = Field(
        2.0,
        ge=0,
        description="...less this many of its standard errors (trainer/gate.py: within the noise); the held-out "
        "pairs' test allows as many.",
    )
    held_out_pairs: int = Field(64, ge=0, description="Held-out pairs, newest first, that parent and candidate rank.")
    min_held_out_pairs: int = Field(
        8, ge=1, description="Held-out pairs needed before their test, or the reward model's accuracy, counts."
    )
    kl_round_budget: float = Field(
        8.0, gt=0, description="Largest mean KL of the candidate to its parent per answer (nats): one round's step."
    )
    kl_budget: float = Field(48.0, gt=0, description="Largest mean KL to the base model per answer (nats): the cap.")
    max_length_growth: float = Field(
        0.5, ge=0, description="The candidate's mean answer length may exceed its parent's by at most this share..."
    )
    max_length_shrink: float = Field(
        0.75,
        ge=0,
        lt=1,
        description="...and fall short of it by at most this share: shorter answers may be what users asked for, "
        "longer ones are a reward model's known exploit (`trainer/gate.py`).",
    )
    max_repetition: float = Field(0.5, gt=0, le=1, description="Largest share of repeated 3-grams in an answer.")

    @model_validator(mode="before")
    @classmethod
    def _refuse_moved(cls, values: object) -> object:
        return refuse_moved(values, MOVED_FROM_GATE)


class TrainerLoopSettings(BaseModel):
    min_new_pairs: int = Field(32, ge=1, description="A round starts once this many unread pairs wait...")
    max_wait_minutes: float = Field(60.0, gt=0, description="...or this long after the last round, with any.")
    poll_seconds: float = Field(10.0, gt=0, description="How often the loop looks for unread pairs.")
    lock_lease_s: float = Field(
        120.0, gt=0, description="The trainer lock expires this long after its holder last renewed it."
    )
    seed: int = Field(0, description="Seed of every random choice and sample a round makes.")
    round_pairs: int = Field(
        128, ge=1, description="Pairs one round trains on: the new ones first, then a sample of earlier ones."
    )
    max_principal_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Largest share of a round's pairs from one API key or account, once the pairs at hand come from "
        "at least 1/share principals (ten at 0.1); with fewer, no cap (`trainer/data.py`).",
    )
    niceness: int = Field(
        0, ge=0, le=19, description="CPU priority of the trainer `chatloop up` starts: higher yields more to serving."
    )


class RolloutSettings(BaseModel):
    reconcile_seconds: float = Field(5.0, gt=0, description="Re-read the routing this often, messages or not.")
    max_adapters: int = Field(2, ge=1, description="Versions served as adapters in one engine step.")
    auto_canary: bool = Field(False, description="Make each new candidate the canary without an operator.")
    auto_canary_percent: float = Field(20.0, gt=0, lt=100, description="The share of users such a canary gets.")
    auto_promote: bool = Field(False, description="Make a canary active once it has enough answers and is not worse.")
    promote_min_answers: int = Field(40, ge=1, description="Answers a canary serves before it can be promoted.")
    rollback_confidence: float = Field(0.95, gt=0.5, lt=1, description="Of the test that a canary is worse.")
    rollback_min_answers: int = Field(20, ge=1, description="Answers each side serves before that test runs.")
    min_canary_users: int = Field(
        5, ge=1, description="Distinct users each side must have answered before the autopilot decides anything."
    )


class LimitSettings(BaseModel):
    """What one principal may ask of the engine: an API key (for all its ``user``s together) or an account (its
    sessions and personal keys together). A managed key may carry its own values (``/v1/admin/keys``)."""

    enabled: bool = Field(
        True,
        description="Enforce the per-principal chat limits below (off: only `MAX_QUEUED` applies, e.g. behind a "
        "gateway that limits).",
    )
    key_chat_per_minute: int = Field(600, ge=1, description="Chat requests per minute of an API key.")
    key_max_concurrent: int = Field(32, ge=1, description="Chat requests of an API key in flight at once.")
    account_chat_per_minute: int = Field(30, ge=1, description="Chat requests per minute of an account.")
    account_max_concurrent: int = Field(4, ge=1, description="Chat requests of an account in flight at once.")
    key_pairs_per_hour: int = Field(
        2000, ge=1, description="Preference pairs an API key may contribute per hour, across all its `user`s."
    )
    account_pairs_per_hour: int = Field(200, ge=1, description="Preference pairs an account may contribute per hour.")
    max_queued: int = Field(
        256,
        ge=0,
        description="Chat requests waiting beyond the engine's batch (`MAX_NUM_SEQS`); past it a request gets a 503 "
        "at once.",
    )


class ToolSettings(BaseModel):
    parser: str = Field(
        "hermes",
        description="The vLLM tool parser that reads calls out of an answer when `tool_choice` is `auto` (its names: "
        "`vllm serve --help=tool-call-parser`); it must match the chat template's format.",
    )
    chat_template: Path | None = Field(
        None,
        description="The chat template for requests with tools; empty: ChatML with Hermes-format calls, shipped "
        "for the default model's family (`core/templates/chatml_tools.jinja`). Point it at a model's own "
        "template where that renders tools.",
    )


class AccountSettings(BaseModel):
    joining: Literal["closed", "approval", "open"] = Field(
        "closed",
        description="Who may make an account on the chat page: `closed` (an admin adds people), `approval` (anyone "
        "asks, an admin approves) or `open`.",
    )
    session_days: float = Field(30.0, gt=0, description="A sign-in lasts this long (sessions are revocable).")
    link_hours: float = Field(24.0, gt=0, description="A one-time sign-in link works once, within this many hours.")
    signin_per_minute_account: int = Field(10, ge=1, description="Sign-in attempts per minute for one account.")
    signin_per_minute_address: int = Field(30, ge=1, description="Sign-in attempts per minute from one address.")
    max_conversations: int = Field(200, ge=1, description="Conversations one account keeps on the server.")
    conversation_kb: int = Field(256, ge=1, description="Largest stored conversation, in KB of 1,024 bytes.")
    max_personal_keys: int = Field(10, ge=0, description="API keys one person may make on the chat page.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHATLOOP_", env_file=".env", extra="ignore", env_nested_delimiter="__"
    )

    data_dir: Path = Field(Path("data"), description="Models, Redis data and artifacts.")
    model: Path | None = Field(
        None, description="A Hugging Face causal LM folder; empty means the converted default model."
    )
    model_alias: str = Field("chatloop", description="The name clients put in `model`.")
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, description="Port to listen on.")
    keep_alive_s: int = Field(
        75,
        gt=0,
        description="An idle client connection stays open this long: longer than clients and load balancers keep "
        "one (httpx and the OpenAI SDK 5 s, cloud load balancers 60 s), so that the server never closes a "
        "connection just as a client reuses it.",
    )
    stream_ping_s: float = Field(
        15.0,
        ge=0,
        description="A streamed answer sends an SSE comment this often, so that proxies keep a connection open "
        "while it waits for its first token; 0 sends none (vLLM's server sends none, and vLLM's benchmark client "
        "loses the event after one, so `bench/serve.py` turns them off).",
    )
    log_level: str = Field("INFO", description="Log level.")
    loop_stall_s: float = Field(
        2.0,
        gt=0,
        description="When the server's event loop stands still this long (every request waits meanwhile), a warning "
        "logs where it is stuck (`server/loop_watchdog.py`).",
    )
    max_body_mb: float = Field(
        8,
        gt=0,
        description="Largest request body, in MB of 2^20 bytes: a larger one is refused (413) as it arrives, "
        "before it is parsed or its key checked.",
    )

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr(LOCAL_API_KEY)],
        description="Comma-separated user keys (`Authorization: Bearer`).",
    )
    admin_key: SecretStr = Field(SecretStr(LOCAL_ADMIN_KEY), description="The admin key.")
    secret_key: SecretStr | None = Field(
        None,
        description="Keys the hashes that name users in records, events and pairs, and the canary split "
        "(HMAC-SHA256); every process of a deployment needs the same. Empty: the first process makes one in the data "
        "folder (`secret`).",
    )

    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "CHATLOOP_REDIS_URL"),
        description="An external Redis; empty starts a local `redis-server` in the data folder.",
    )
    local_redis_maxmemory_mb: int = Field(
        2048,
        ge=16,
        description="The local Redis's memory cap, past which it refuses writes (`noeviction`: chat goes on, feedback "
        "is a 503, a round does not start); about a million pairs with their events (`docs/scaling.md`).",
    )
    record_retention_days: float = Field(
        30.0,
        gt=0,
        description="How long completion records, conversations' feedback state and preference pairs (which copy "
        "the answers' text) are kept.",
    )
    event_retention_days: float = Field(90.0, gt=0, description="How long feedback events stay in their stream.")
    feedback_per_minute: int = Field(120, ge=1, description="Feedback gestures one user may send per minute.")
    pairs_per_hour: int = Field(200, ge=1, description="Preference pairs one user may contribute per hour.")

    max_model_len: int = Field(2048, ge=64, description="Context window (prompt + answer tokens).")
    dtype: str = Field(
        "auto",
        description="Engine dtype; `auto` is float32 on x86 CPUs without AVX-512 (which emulate bfloat16, at a "
        "third of the speed), else bfloat16.",
    )
    kv_cache_gib: int = Field(2, ge=1, description="KV cache size on the CPU backend (`VLLM_CPU_KVCACHE_SPACE`).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory for vLLM on CUDA.")
    enforce_eager: bool = Field(True, description="Skip graph compilation (faster start; see docs/benchmarks.md).")
    max_num_seqs: int = Field(64, ge=1, description="Most sequences the engine batches at once.")
    max_n: int = Field(8, ge=1, description="Largest `n` a request may ask for.")
    max_top_logprobs: int = Field(20, ge=0, description="Largest `top_logprobs` a request may ask for.")

    tools: ToolSettings = Field(
        default_factory=ToolSettings, description="Tool calling on chat completions (`server/chat_api/tools.py`)."
    )

    reward: RewardSettings = Field(
        default_factory=RewardSettings, description="The reward model (`trainer/reward.py`), trained first."
    )
    supervised: SupervisedSettings = Field(
        default_factory=SupervisedSettings,
        description="The supervised stage (`trainer/sft.py`, off by default): imitation of the chosen answers and, "
        "with best-of-n, of the policy's own best answers (`trainer/best_of.py`).",
    )
    preference: PreferenceSettings = Field(
        default_factory=PreferenceSettings,
        description="The preference stage (`trainer/dpo.py`): DPO on the round's pairs, the base model as the "
        "reference.",
    )
    ppo: PPOSettings = Field(
        default_factory=PPOSettings,
        description="PPO on the policy's LoRA adapter (`trainer/ppo.py`); its minibatch size and gradient clipping "
        "serve the two stages before it too.",
    )
    gate: GateSettings = Field(
        default_factory=GateSettings,
        description="What a new policy must show against its parent, on held-out prompts, to become a candidate "
        "(`trainer/gate.py`).",
    )
    trainer: TrainerLoopSettings = Field(
        default_factory=TrainerLoopSettings, description="When the trainer loop runs a round (`trainer/loop.py`)."
    )
    limits: LimitSettings = Field(
        default_factory=LimitSettings,
        description="How much each principal may ask of the engine, and how long its queue may grow "
        "(`server/limits.py`).",
    )
    accounts: AccountSettings = Field(
        default_factory=AccountSettings,
        description="The chat page's accounts: who may join, sessions, sign-in attempts, stored conversations "
        "(`server/identity/`).",
    )
    rollout: RolloutSettings = Field(
        default_factory=RolloutSettings,
        description="How servers follow the registry, and the automatic steps of a rollout "
        "(`server/versions/autopilot.py`).",
    )

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
    def max_rollout_answers(self) -> int:
        """The most answers one request for a trainer's rollouts gets (``server/rollouts_api/``): half the engine's
        batch, so that users keep the other half."""
        return max(1, self.max_num_seqs // 2)

    @property
    def server_url(self) -> str:
        """Where this deployment's server listens, for its own clients: the CLI and the trainer."""
        return f"http://{self.host}:{self.port}"

    @property
    def versions_dir(self) -> Path:
        """One folder per policy version: adapter, reward model, metrics, lineage."""
        return self.data_dir / "versions"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
