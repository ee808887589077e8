"""The gate a new policy passes before it is offered: not worse than its parent, a bounded step from it, not too far
from the base, sane.

Evaluation samples answers to held-out prompts (with a fixed seed, as users are served) from the parent, before
training, and from the candidate, after; and it ranks the two answers of held-out pairs under both. Held out means
by prompt, from everything any round trains on (``trainer/data.py: is_held_out``). The verdict is a pure function
of these measurements. Under ``accelerate launch`` each process answers its share of the prompts and the
measurements are gathered, so every process reaches the same verdict.

Both tests are paired and allow for noise: the candidate fails one only when it is clearly worse.

- Reward: with ``d_i`` the candidate's reward minus the parent's on prompt ``i`` of ``n`` (normalized scores,
  ``trainer/reward.py: ScoreScale``), ``mean(d)`` the gain and ``se = std(d) / sqrt(n)`` its standard error, it
  fails when ``mean(d) <= min_reward_gain - reward_tolerance_se * se``. It counts only while the reward model ranks
  the held-out pairs better than chance (or there are too few of them to tell): a reward model that does not is no
  evidence either way.
- Held-out pairs: the policy's implicit reward (DPO's: ``log pi(y_w) - log pi(y_l)``), the candidate's less the
  parent's, per pair; it fails when the mean is more than ``reward_tolerance_se`` standard errors below zero, with
  at least ``min_held_out_pairs`` pairs.

A shortfall within the evaluation's own noise is no evidence that the candidate is worse, and every false rejection
throws a round's training away (docs/benchmarks.md, "Closed loop"). At two standard errors a candidate as good as
its parent fails one test about one time in forty-four. A canary's live test (server/versions/autopilot.py) still
rolls back a version that users find worse.

The length band is lopsided. Growth is a reward model's best-known exploit (longer answers score higher whatever
they say), so a round may lengthen answers by half at most; shortening is often what users ask for (a concise
preference halved the mean length in one round of a documented run, docs/benchmarks.md), so a round may cut them
to a quarter before the gate calls it a collapse.

The KL budget is split in two: one round's step from its parent (``kl_round_budget``), and the whole lineage's
distance from the base (``kl_budget``), a cap an operator raises on purpose.
"""

from __future__ import annotations

import statistics

import torch
from pydantic import BaseModel, computed_field

from core.config import GateSettings
from feedback.pairs import Pair
from trainer.chat_text import Prompt
from trainer.distributed import gather_real, process_seed, process_share
from trainer.dpo import pair_tensors
from trainer.finetune import answer_logprobs
from trainer.losses import kl_k3
from trainer.ppo import AdapterWeights, PPOTrainer
from trainer.reward import ScoreScale


class PolicyEval(BaseModel):
    rewards: list[float]
    """The reward model's score of each answer, in the order of the prompts."""
    kl_to_base: float
    """Mean over answers of the summed per-token KL estimate (k3) to the base model (nats)."""
    kl_to_parent: float = 0.0
    """The same to the round's parent (0 for the parent itself)."""
    mean_length: float
    """Answer tokens."""
    repetition: float
    """Mean share of an answer's word 3-grams that repeat an earlier one."""

    @computed_field
    @property
    def mean_reward(self) -> float:
        return statistics.fmean(self.rewards)

    def rescaled(self, scale: ScoreScale) -> PolicyEval:
        """The same answers' rewards on another scale (the parent is scored before the round's scale is fitted)."""
        rewards = scale.apply(torch.tensor(self.rewards, dtype=torch.float64)).tolist()
        return self.model_copy(update={"rewards": rewards})


class PairEval(BaseModel):
    """Held-out pairs ranked by a policy: per pair, log pi(chosen) - log pi(rejected) (its implicit reward's margin,
    up to DPO's beta)."""

    margins: list[float]


class Evidence(BaseModel):
    """What the verdict weighs besides the two policies' answers."""

    parent_pairs: PairEval = PairEval(margins=[])
    candidate_pairs: PairEval = PairEval(margins=[])
    reward_accuracy: float | None = None
    """The reward model's accuracy on the held-out pairs it was evaluated on."""
    reward_held_out: int = 0


class GateResult(BaseModel):
    passed: bool
    reasons: list[str]
    parent: PolicyEval
    candidate: PolicyEval
    reward_gain: float = 0.0
    reward_gain_se: float = 0.0
    reward_test_counted: bool = True
    pair_gain: float | None = None
    """Mean over held-out pairs of the candidate's margin less the parent's; None with too few pairs."""
    pair_gain_se: float | None = None
    pair_accuracy: float | None = None
    """Share of held-out pairs whose chosen answer the candidate prefers more than the parent did."""


def repetition(text: str, n: int = 3) -> float:
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def evaluate_policy(
    trainer: PPOTrainer, prompts: list[Prompt], seed: int, desc: str = "gate", parent: AdapterWeights | None = None
) -> PolicyEval:
    """The policy's answers to the prompts, scored, and their KL to the base (and to the ``parent`` adapter)."""
    torch.manual_seed(process_seed(seed))
    share = process_share(prompts)
    rollout = trainer.rollout(share.items, desc)
    repetitions = torch.tensor([repetition(a) for a in rollout.answers], dtype=torch.float64)
    kl_to_parent = torch.zeros(len(rollout.answers))
    if parent is not None:
        kl_to_parent = kl_k3(rollout.logprobs, trainer.logprobs_under(parent, rollout), rollout.mask)
    columns = [rollout.scores, trainer.kl_to_base(rollout), kl_to_parent, rollout.mask.sum(dim=1), repetitions]
    per_answer = torch.stack([column.double().to(trainer.device) for column in columns], dim=1)
    gathered = gather_real(per_answer, share)
    _, kl_to_base, kl_parent, mean_length, mean_repetition = gathered.mean(dim=0).tolist()
    return PolicyEval(
        rewards=gathered[:, 0].tolist(),
        kl_to_base=kl_to_base,
        kl_to_parent=kl_parent,
        mean_length=mean_length,
        repetition=mean_repetition,
    )


@torch.no_grad()
def rank_pairs(trainer: PPOTrainer, pairs: list[Pair]) -> PairEval:
    """The policy's margin, log pi(chosen) - log pi(rejected), on each held-out pair."""
    if not pairs:
        return PairEval(margins=[])
    trainer.policy.eval()
    share = process_share(pairs)
    margins = []
    for pair in share.items:
        chosen, rejected = answer_logprobs(trainer.policy, *pair_tensors(trainer.tokenizer, pair))
        margins.append((chosen - rejected).double())
    return PairEval(margins=gather_real(torch.stack(margins).to(trainer.device), share).tolist())


def paired_gain(before: list[float], after: list[float]) -> tuple[float, float]:
    """The mean of ``after - before`` item by item, and its standard error (0 with a single item)."""
    gains = [a - b for b, a in zip(before, after, strict=True)]
    se = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else 0.0
    return statistics.fmean(gains), se


def reward_gain(parent: PolicyEval, candidate: PolicyEval) -> tuple[float, float]:
    """The mean per-prompt gain of the candidate's reward over the parent's, and its standard error."""
    return paired_gain(parent.rewards, candidate.rewards)


def judge(
    parent: PolicyEval, candidate: PolicyEval, settings: GateSettings, evidence: Evidence | None = None
) -> GateResult:
    evidence = evidence or Evidence()
    reasons = []
    tolerance = settings.reward_tolerance_se
    gain, se = reward_gain(parent, candidate)
    threshold = settings.min_reward_gain - tolerance * se
    reward_counts = not (
        evidence.reward_held_out >= settings.min_held_out_pairs
        and evidence.reward_accuracy is not None
        and evidence.reward_accuracy <= 0.5
    )
    if reward_counts and gain <= threshold:
        reasons.append(
            f"mean reward {candidate.mean_reward:.3f} against the parent's {parent.mean_reward:.3f}: the gain "
            f"{gain:.3f} (standard error {se:.3f}) does not exceed {threshold:.3f}"
        )
    pairs = {}
    if len(evidence.parent_pairs.margins) >= settings.min_held_out_pairs:
        pair_gain, pair_se = paired_gain(evidence.parent_pairs.margins, evidence.candidate_pairs.margins)
        better = [c > p for p, c in zip(evidence.parent_pairs.margins, evidence.candidate_pairs.margins, strict=True)]
        pairs = {"pair_gain": pair_gain, "pair_gain_se": pair_se, "pair_accuracy": statistics.fmean(better)}
        if pair_gain < -tolerance * pair_se:
            reasons.append(
                f"on {len(better)} held-out pairs the candidate prefers the chosen answers less than its parent: "
                f"margin change {pair_gain:.3f} (standard error {pair_se:.3f})"
            )
    if candidate.kl_to_parent > settings.kl_round_budget:
        reasons.append(
            f"KL to the parent {candidate.kl_to_parent:.2f} exceeds a round's budget {settings.kl_round_budget}"
        )
    if candidate.kl_to_base > settings.kl_budget:
        reasons.append(f"KL to the base {candidate.kl_to_base:.2f} exceeds the cap {settings.kl_budget}")
    low = parent.mean_length * (1 - settings.max_length_shrink)
    high = parent.mean_length * (1 + settings.max_length_growth)
    if not low <= candidate.mean_length <= high:
        reasons.append(f"mean length {candidate.mean_length:.1f} tokens is outside [{low:.1f}, {high:.1f}]")
    if candidate.repetition > settings.max_repetition:
        reasons.append(f"repetition {candidate.repetition:.2f} exceeds {settings.max_repetition}")
    return GateResult(
        passed=not reasons,
        reasons=reasons,
        parent=parent,
        candidate=candidate,
        reward_gain=gain,
        reward_gain_se=se,
        reward_test_counted=reward_counts,
        **pairs,
    )
