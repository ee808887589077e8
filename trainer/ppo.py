"""PPO on the policy's LoRA adapter, against a reward model, with a KL penalty to the base model.

Written here because no maintained library ships a PPO trainer for language models that runs on a CPU (TRL removed
its ``PPOTrainer``: 1.16 has none). The losses and the two ways to an advantage (a group baseline over several
answers to each prompt, or a critic) are in ``trainer/losses.py``. The reference policy is the base model itself:
the same weights with the adapter switched off, so no second copy is held. With a critic, the value head is a linear
layer on the policy's last hidden state, trained with the adapter and dropped after the round.

Answers are sampled at the temperature and token limit users are served with (``trainer/sampling.py``), and every
log-probability is taken under that temperature.

Under ``accelerate launch`` each process samples answers to its own share of the prompts and learns from them; the
policy and the value head are one module (``PolicyWithValue``) so that one DDP wrapper averages the gradients of
both, and the figures a step reports are averaged over the processes.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import PreTrainedTokenizerBase

from core.config import PPOSettings
from trainer.chat_text import Prompt, prompt_text
from trainer.distributed import get_accelerator, mean_across_processes
from trainer.engine_rollouts import EngineSampler, EngineUnavailable
from trainer.losses import (
    entropy,
    gae,
    kl_k3,
    leave_one_out,
    masked_whiten,
    policy_loss,
    token_logprobs,
    token_rewards,
    value_loss,
)
from trainer.progress import TokenProgress, progress
from trainer.sampling import Sampling

log = logging.getLogger(__name__)

RewardFn = Callable[[Sequence[Prompt], Sequence[str], Sequence[bool]], torch.Tensor]
"""Scores answers (texts) to prompts; the flags say which answers ended (the others ran into
the token limit)."""

AdapterWeights = dict[str, torch.Tensor]


@dataclass
class Rollout:
    prompts: list[Prompt]
    answers: list[str]
    groups: torch.Tensor  # [B]: which prompt each answer answers
    sequences: torch.Tensor  # [B, Q + T]: left-padded prompt, then the answer
    attention: torch.Tensor  # [B, Q + T]
    mask: torch.Tensor  # [B, T]: the answer's real tokens
    logprobs: torch.Tensor  # [B, T] under the policy that generated
    ref_logprobs: torch.Tensor  # [B, T] under the base model
    values: torch.Tensor  # [B, T]: zeros without a critic
    scores: torch.Tensor  # [B]

    @property
    def prompt_length(self) -> int:
        return self.sequences.shape[1] - self.mask.shape[1]


def answer_mask(answer_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 up to and including the first end-of-sequence token, 0 after it (where generate pads)."""
    is_eos = (answer_ids == eos_id).int()
    after_eos = (torch.cumsum(is_eos, dim=1) - is_eos) > 0
    return (~after_eos).float()


class PolicyWithValue(torch.nn.Module):
    """The policy and, with a critic, its value head, whose forward pass gives what a PPO loss needs about an answer."""

    def __init__(self, policy: PeftModel, device: torch.device, critic: bool, temperature: float):
        super().__init__()
        self.policy = policy
        self.temperature = temperature
        self.value_head: torch.nn.Linear | None = None
        if critic:
            self.value_head = torch.nn.Linear(policy.config.hidden_size, 1, device=device)
            torch.nn.init.zeros_(self.value_head.weight)

    def forward(
        self, sequences: torch.Tensor, attention: torch.Tensor, prompt_length: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Answer tokens' log-probabilities at the sampling temperature, values (zeros without a critic) and
        logits."""
        out = self.policy(
            input_ids=sequences, attention_mask=attention, output_hidden_states=self.value_head is not None
        )
        logits = out.logits[:, prompt_length - 1 : -1].float()
        answer = sequences[:, prompt_length:]
        logprobs = token_logprobs(logits, answer, self.temperature)
        if self.value_head is None:
            return logprobs, torch.zeros_like(logprobs), logits
        values = self.value_head(out.hidden_states[-1][:, prompt_length - 1 : -1].float()).squeeze(-1)
        return logprobs, values, logits


class PPOTrainer:
    def __init__(
        self,
        policy: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: RewardFn,
        settings: PPOSettings,
        seed: int,
        sampling: Sampling | None = None,
        engine: EngineSampler | None = None,
    ):
        self.accelerator = get_accelerator()
        self.engine = engine
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.settings = settings
        self.sampling = sampling or Sampling.of(settings)
        self.rng = random.Random(seed)
        critic = settings.advantage == "critic"
        if not critic and settings.samples_per_prompt == 1:
            log.warning("one answer per prompt: each is measured against the batch's mean, not its prompt's")
        model = PolicyWithValue(policy, self.accelerator.device, critic, self.sampling.temperature)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.trainable, lr=settings.learning_rate)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)

    @property
    def unwrapped(self) -> PolicyWithValue:
        """The module outside any DDP wrapper: for generation, for passes that compute no gradient (a DDP forward
        pass broadcasts the module's buffers, one more collective call for every process) and for saving."""
        return self.accelerator.unwrap_model(self.model)

    @property
    def policy(self) -> PeftModel:
        return self.unwrapped.policy

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    # ---- the adapter's weights --------------------------------------------------------------------------

    def adapter_weights(self) -> AdapterWeights:
        """A copy of the adapter as it is now: the parent, kept to measure how far the round moved from it."""
        return {name: value.detach().clone() for name, value in get_peft_model_state_dict(self.policy).items()}

    @contextmanager
    def adapter(self, weights: AdapterWeights) -> Iterator[None]:
        """The policy with these adapter weights for the block's length, then its own again."""
        own = self.adapter_weights()
        set_peft_model_state_dict(self.policy, weights)
        try:
            yield
        finally:
            set_peft_model_state_dict(self.policy, own)

    # ---- rollouts ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], desc: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Answers to the prompts, sampled as users are served, by the serving engine when there is one; ``desc``
        names the progress bar."""
        texts = [prompt_text(self.tokenizer, p) for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        answers = self._from_engine(batch.input_ids, batch.attention_mask) if self.engine else None
        if answers is None:
            answers = self._own_answers(batch.input_ids, batch.attention_mask, desc)
        tokens, mask = answers
        sequences = torch.cat([batch.input_ids, tokens], dim=1)
        return sequences, torch.cat([batch.attention_mask, mask.long()], dim=1), batch.input_ids.shape[1]

    def _own_answers(
        self, input_ids: torch.Tensor, attention: torch.Tensor, desc: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The answers' token ids, and which are real, sampled in this process."""
        self.policy.eval()
        sequences = self.policy.generate(
            input_ids=input_ids,
            attention_mask=attention,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=self.sampling.temperature,
            max_new_tokens=self.sampling.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            streamer=TokenProgress.shown(desc, self.sampling.max_new_tokens),
        )
        tokens = sequences[:, input_ids.shape[1] :]
        return tokens, answer_mask(tokens, self.tokenizer.eos_token_id)

    def _from_engine(
        self, input_ids: torch.Tensor, attention: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The same from the serving engine, seeded from torch's generator as ``generate`` is; None, and the
        trainer's own sampling for the rest of the round, when the engine cannot."""
        assert self.engine is not None
        prompts = [row[real.bool()].tolist() for row, real in zip(input_ids, attention, strict=True)]
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        try:
            answers = self.engine.sample(self.policy, prompts, self.sampling, seed)
        except EngineUnavailable as exc:
            log.warning("the serving engine cannot sample; the trainer samples itself", extra={"reason": str(exc)})
            self.engine = None
            return None
        eos = self.tokenizer.eos_token_id
        rows = [a.token_ids + [eos] if a.ended and a.token_ids[-1:] != [eos] else a.token_ids for a in answers]
        tokens = torch.full((len(rows), max(map(len, rows))), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(tokens.shape)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1.0
        return tokens.to(self.device), mask.to(self.device)

    def decode(self, sequences: torch.Tensor, prompt_length: int) -> list[str]:
        return self.tokenizer.batch_decode(sequences[:, prompt_length:], skip_special_tokens=True)

    def ended(self, sequences: torch.Tensor, prompt_length: int) -> list[bool]:
        """Which answers ended with the end-of-sequence token rather than at the token limit."""
        return (sequences[:, prompt_length:] == self.tokenizer.eos_token_id).any(dim=1).tolist()

    def score(
        self, prompts: Sequence[Prompt], sequences: torch.Tensor, prompt_length: int
    ) -> tuple[list[str], torch.Tensor]:
        """The generated answers' texts and rewards."""
        answers = self.decode(sequences, prompt_length)
        rewards = self.reward_fn(prompts, answers, self.ended(sequences, prompt_length))
        return answers, rewards.float().to(self.device)

    @torch.no_grad()
    def rollout(self, prompts: Sequence[Prompt], desc: str = "ppo rollout", samples: int = 1) -> Rollout:
        """``samples`` answers to each of these prompts (this process's share under ``accelerate launch``),
        scored."""
        repeated = [prompt for prompt in prompts for _ in range(samples)]
        sequences, attention, prompt_length = self.generate(repeated, desc)
        mask = attention[:, prompt_length:].float()
        logprobs, values, _ = self.unwrapped(sequences, attention, prompt_length)
        with self.policy.disable_adapter():
            ref_logprobs, _, _ = self.unwrapped(sequences, attention, prompt_length)
        answers, scores = self.score(repeated, sequences, prompt_length)
        return Rollout(
            prompts=repeated,
            answers=answers,
            groups=torch.arange(len(prompts), device=self.device).repeat_interleave(samples),
            sequences=sequences,
            attention=attention,
            mask=mask,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            values=values,
            scores=scores,
        )

    @torch.no_grad()
    def logprobs_under(self, weights: AdapterWeights, rollout: Rollout) -> torch.Tensor:
        """The rollout's answer tokens' log-probabilities under another adapter (the parent's)."""
        with self.adapter(weights):
            logprobs, _, _ = self.unwrapped(rollout.sequences, rollout.attention, rollout.prompt_length)
        return logprobs

    # ---- optimisation -----------------------------------------------------------------------------------

    def _minibatch_size(self) -> int:
        """This process's share of ``minibatch_size``, which counts the answers of a step on all processes."""
        return math.ceil(self.settings.minibatch_size / self.accelerator.num_processes)

    def _deviation(self, values: torch.Tensor) -> float:
        """The standard deviation of ``values`` over the rows of every process, so that each process scales its
        gradient alike and the step is the one a single process would take on the whole batch."""
        local = torch.stack([values.sum(), (values**2).sum(), torch.tensor(float(len(values)), device=values.device)])
        total, squares, count = self.accelerator.reduce(local.double(), reduction="sum").tolist()
        return max(squares / count - (total / count) ** 2, 0.0) ** 0.5

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per token: advantages, returns (for the critic) and the KL penalty's log-ratio."""
        s = self.settings
        rewards, kl = token_rewards(rollout.scores, rollout.logprobs, rollout.ref_logprobs, rollout.mask, s.kl_coef)
        if s.advantage == "group":
            advantages = leave_one_out(rewards.sum(dim=1), rollout.groups)
            advantages = advantages / (self._deviation(advantages) + 1e-8)
            return advantages[:, None] * rollout.mask, torch.zeros_like(rewards), kl
        advantages, returns = gae(rewards, rollout.values, rollout.mask, s.gamma, s.lam)
        return masked_whiten(advantages, rollout.mask), returns, kl

    def step(self, rollout: Rollout) -> dict[str, float]:
        """Several epochs of clipped updates over one rollout batch; stops early once the policy moved too far.

        Every process must run as many updates (each one all-reduces the gradients): rollouts have the same size on
        every process, and the early stop looks at the approximate KL averaged over the processes. The figures
        returned are averaged over the processes too.
        """
        s = self.settings
        advantages, returns, kl = self.advantages(rollout)
        stats: dict[str, float] = {
            "reward": rollout.scores.mean().item(),
            "kl": kl_k3(rollout.logprobs, rollout.ref_logprobs, rollout.mask).mean().item(),
            "answer_tokens": rollout.mask.sum(dim=1).mean().item(),
        }
        indices = list(range(len(rollout.answers)))
        minibatch_size = self._minibatch_size()
        self.model.train()
        for epoch in range(s.epochs):
            self.rng.shuffle(indices)
            epoch_kl = []
            for start in progress(range(0, len(indices), minibatch_size), f"ppo update epoch {epoch + 1}/{s.epochs}"):
                rows = torch.tensor(indices[start : start + minibatch_size], device=self.device)
                mask = rollout.mask[rows]
                logprobs, values, logits = self.model(
                    rollout.sequences[rows], rollout.attention[rows], rollout.prompt_length
                )
                pg = policy_loss(logprobs, rollout.logprobs[rows], advantages[rows], mask, s.clip_range)
                loss = pg.loss
                if self.unwrapped.value_head is not None:
                    vf = value_loss(values, rollout.values[rows], returns[rows], mask, s.clip_range_value)
                    loss = loss + s.value_coef * vf
                    stats["value_loss"] = vf.item()
                self.optimizer.zero_grad()
                self.accelerator.backward(loss)
                self.accelerator.clip_grad_norm_(self.trainable, s.max_grad_norm)
                self.optimizer.step()
                epoch_kl.append(pg.approx_kl.item())
                stats.update(
                    policy_loss=pg.loss.item(),
                    clip_fraction=pg.clip_fraction.item(),
                    entropy=entropy(logits.detach() / self.sampling.temperature, mask).item(),
                    approx_kl=pg.approx_kl.item(),
                )
            stats["epochs"] = epoch + 1
            approx_kl = mean_across_processes({"approx_kl": sum(epoch_kl) / len(epoch_kl)})["approx_kl"]
            if approx_kl > s.target_kl:
                log.info("ppo early stop", extra={"epoch": epoch, "approx_kl": round(approx_kl, 4)})
                break
        return mean_across_processes(stats)

    @torch.no_grad()
    def kl_to_base(self, rollout: Rollout) -> torch.Tensor:
        """Per answer, the k3 estimate of KL(policy || base), summed over its tokens: never negative."""
        return kl_k3(rollout.logprobs, rollout.ref_logprobs, rollout.mask)
