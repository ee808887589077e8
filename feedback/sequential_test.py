"""Whether a canary's thumbs-down rate is higher than the active version's, by a test that stays valid however
often it is read.

The autopilot reads the counts every reconcile period and acts the first time the test says "worse". A
fixed-sample test (a z-test at 95%) read that way rolls back a canary that is no worse far more often than one
time in twenty: each look is another chance for noise to cross the line (``tests/unit/test_sequential_test.py``
measures it). The mixture sequential probability ratio test (mSPRT; Johari, Pekelis and Walsh, "Always Valid
Inference: Continuous Monitoring of A/B Tests", 2022) gives a statistic whose chance of *ever* reaching 1/α, over
any number of looks, is at most α when the two rates are equal. For the difference θ = p_canary − p_active,
estimated as θ̂ with variance V, and a normal mixture N(0, τ²) over θ:

    Λ = sqrt(V / (V + τ²)) · exp(τ² θ̂² / (2 V (V + τ²)))

V is estimated from the counts (the normal approximation, as the z-test before), with half an answer added each
way (Jeffreys) so that all answers down against none down still has a spread. The test is one-sided: only θ̂ > 0
is evidence, a subset of the two-sided rejections, so the bound holds. τ is the difference the test finds
quickest: 0.3, a canary rated down in three more answers of ten, the kind of regression worth rolling back at
once; smaller differences take more answers, none is missed for good. No maintained package offers the
two-proportion mSPRT as a function (statsmodels' tests are fixed-sample), and it is the formula above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIXTURE_SD = 0.3
"""τ: the size of the difference in thumbs-down rates that the test detects fastest."""


@dataclass(frozen=True)
class Evidence:
    difference: float
    """θ̂, the canary's rate minus the active version's."""
    likelihood_ratio: float
    """Λ; at least 1/α is a rejection at level α."""

    @property
    def p_value(self) -> float:
        """1/Λ (at most 1): the level at which this look rejects, valid as any look's."""
        return min(1.0, 1.0 / self.likelihood_ratio)


def _variance(successes: int, trials: int) -> float:
    rate = (successes + 0.5) / (trials + 1)
    return rate * (1 - rate) / max(trials, 1)


def worse_rate(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> Evidence:
    """The evidence that ``a``'s rate (successes per trial) is higher than ``b``'s."""
    difference = successes_a / max(trials_a, 1) - successes_b / max(trials_b, 1)
    if difference <= 0:
        return Evidence(difference, 1.0)
    variance, prior = _variance(successes_a, trials_a) + _variance(successes_b, trials_b), MIXTURE_SD**2
    log_ratio = 0.5 * math.log(variance / (variance + prior)) + prior * difference**2 / (
        2 * variance * (variance + prior)
    )
    return Evidence(difference, math.exp(min(log_ratio, 700.0)))
