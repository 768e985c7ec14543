"""The racing confirmation's statistics: honest under repeated looks, and measured on synthetic races.

The rates are measured, not assumed: thousands of seeded races in one numpy batch each (``simulate``), so a
rule that inflated false wins or lost coverage would fail here, and the uncorrected rule is run beside the
corrected ones to show that it does fail.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, stats

from skipsearch.errors import FieldError
from skipsearch.search.race import RacePlan, RaceState, decide
from skipsearch.search.race_simulation import clopper_pearson, run_races, simulate
from skipsearch.search.sequential import PROCEDURES, sequence_tau2

NULL = (0.0, 0.0, 0.0, 0.0)
HONEST = ("bonferroni", "confidence-sequence")


@pytest.fixture(scope="module")
def null_races():
    """Null races (4 candidates no better than the baseline, 8 planned looks), under every procedure."""
    return {p: simulate(RacePlan(max_rounds=8, candidates=4, procedure=p), NULL, races=4000, seed=11)
            for p in PROCEDURES}


@pytest.fixture(scope="module")
def effect_races():
    """One candidate 2 sd better than the baseline, three no better, 12 planned looks."""
    return {p: simulate(RacePlan(max_rounds=12, candidates=4, procedure=p), (-2.0, 0.0, 0.0, 0.0), races=4000,
                        seed=12) for p in PROCEDURES}


# --- (1) the null: claimed wins at most 5% under looking every round; the uncorrected rule exceeds it ---

@pytest.mark.parametrize("procedure", HONEST)
def test_on_the_null_claimed_wins_stay_below_five_percent(null_races, procedure):
    sim = null_races[procedure]
    low, high = sim.win_rate_interval
    assert sim.races >= 2000
    assert low <= sim.win_rate <= high  # the exact interval is about the measured rate
    assert (low, high) == pytest.approx(stats.binomtest(sim.wins, sim.races).proportion_ci(0.95, "exact"))
    assert sim.false_wins == sim.wins  # every win on the null is false
    assert high < 0.05, str(sim)  # not only the estimate: its whole 95% interval is below 5%


def test_on_the_null_the_uncorrected_rule_claims_far_more_than_five_percent(null_races):
    sim = null_races["uncorrected"]
    low, _ = sim.win_rate_interval
    assert low > 0.05, str(sim)  # why the correction matters: a plain 95% t interval at every look


# --- (2) a clear effect: a win, well before the planned maximum ---

def test_a_clear_effect_wins_well_before_the_last_round():
    sim = simulate(RacePlan(max_rounds=8, candidates=4), (-3.0, 0.0, 0.0, 0.0), races=2000, seed=13)
    assert sim.win_rate > 0.95, str(sim)
    assert sim.wins_by(6) > 0.75, str(sim)  # three quarters of all races won by round 6 of 8
    assert sim.median_rounds <= 6
    assert sim.evaluations < 0.7 * sim.fixed_evaluations  # the point of racing: cheaper than the fixed design


@pytest.mark.parametrize("procedure", HONEST)
def test_a_clear_effect_wins_most_races(effect_races, procedure):
    sim = effect_races[procedure]
    assert sim.win_rate > 0.9, str(sim)
    assert sim.median_rounds < sim.plan.max_rounds
    assert sim.false_wins / sim.races < 0.05


# --- (3) elimination ---

def test_a_clearly_worse_candidate_leaves_early():
    sim = simulate(RacePlan(max_rounds=8, candidates=4), (-2.0, 2.0, 0.0, 0.0), races=2000, seed=14)
    assert sim.left_early[1] > 0.95, str(sim)  # the worse one is out before the race ends
    assert sim.left_early[0] < 0.05  # the better one is almost never dropped


def test_a_candidate_worse_than_the_best_paired_seed_set_by_seed_set_leaves():
    good = [-1.0, -1.4, -0.6, -1.2, -0.8]
    worse = [g + 0.5 + e for g, e in zip(good, [0.01, -0.02, 0.02, 0.0, -0.01])]  # worse by 0.5 on every set
    plan = RacePlan(max_rounds=8, candidates=3)
    state = RaceState.start([7, 3, 12])
    for g, w, z in zip(good, worse, [0.3, -0.4, 0.5, -0.2, 0.1]):
        state = state.add_round({7: g, 3: w, 12: z})
    d = decide(plan, state)
    assert {leave.candidate: leave.why for leave in d.leaving}[3].startswith("clearly worse than trial 7")
    # alone, trial 3's interval against the baseline contains 0: only the paired comparison shows it worse
    assert d.intervals[3].low < 0 < d.intervals[3].high
    assert 3 not in d.racing and 7 in d.racing
    assert state.after(d).racing == tuple(c for c in (7, 3, 12) if c in d.racing)


def test_a_candidate_whose_evaluation_failed_leaves():
    state = RaceState.start([1, 2]).add_round({1: -0.1, 2: math.nan}).add_round({1: -0.2, 2: 0.1})
    d = decide(RacePlan(max_rounds=6, candidates=2), state)
    assert [(g.candidate, g.why) for g in d.leaving][0] == (2, "its held-out evaluation failed")
    assert 2 not in d.intervals


# --- (4) coverage of the claimed interval ---

@pytest.mark.parametrize("procedure", HONEST)
def test_claimed_intervals_cover_the_true_effect(effect_races, procedure):
    sim = effect_races[procedure]
    assert sim.wins > 1000
    assert sim.coverage >= 0.95, str(sim)


@pytest.mark.parametrize("procedure", HONEST)
def test_a_weak_effect_keeps_the_guarantee_over_all_races(procedure):
    """What is guaranteed is the share of all races that claim a missing interval (at most 5%), not the
    coverage among the few claims a weak effect gets: that one is reported, not promised."""
    sim = simulate(RacePlan(max_rounds=8, candidates=4, procedure=procedure), (-1.0, 0.0, 0.0, 0.0), races=4000,
                   seed=15)
    assert sim.win_rate < 0.5  # weak for 8 looks: most races end without a win
    assert sim.miss_rate_interval[1] < 0.05, str(sim)


def test_the_uncorrected_rules_claimed_intervals_undercover(effect_races):
    sim = effect_races["uncorrected"]
    assert sim.coverage_interval[1] < 0.95, str(sim)


# --- the intervals themselves, against independent computations ---

def test_one_look_one_candidate_is_scipys_t_interval():
    deltas = [-0.3, -0.1, -0.25, 0.05]
    state = RaceState.start([5])
    for v in deltas[:2]:
        state = state.add_round({5: v})
    d = decide(RacePlan(max_rounds=2, candidates=1), state)
    want = stats.ttest_1samp(deltas[:2], 0.0).confidence_interval(0.95)
    assert (d.intervals[5].low, d.intervals[5].high) == pytest.approx((want.low, want.high), rel=1e-10)


def test_bonferroni_splits_the_error_over_candidates_and_looks():
    plan = RacePlan(max_rounds=8, candidates=4)
    for k in (2, 5, 8):
        want = stats.t.ppf(1 - 0.05 / (2 * 4 * 7), k - 1) / math.sqrt(k)
        assert plan.factor(k) == pytest.approx(want, rel=1e-10)
    with pytest.raises(ValueError, match="past the planned"):
        plan.factor(9)  # no error left to spend after the plan


def _mixture_ratio(y: np.ndarray, tau2: float) -> float:
    """Lai's statistic by numerical integration, independent of the closed form: the likelihood ratio of the
    scale-free shape of ``y`` (Haar measure dσ/σ on the scale), N(θσ, σ²) with θ ~ N(0, tau2) against θ = 0."""
    values = [float(v) for v in y]

    def density(u: float, theta: float) -> float:  # u = log σ; the k normal densities, times σ for dσ/σ
        s = math.exp(u)
        return math.exp(-sum((v / s - theta) ** 2 for v in values) / 2 - len(values) * u)

    prior = 1 / math.sqrt(2 * math.pi * tau2)
    top = integrate.dblquad(lambda theta, u: density(u, theta) * prior * math.exp(-theta ** 2 / (2 * tau2)),
                            -8, 8, -12, 12, epsabs=0, epsrel=1e-9)[0]
    bottom = integrate.quad(lambda u: density(u, 0.0), -8, 8, epsabs=0, epsrel=1e-11)[0]
    return top / bottom


def test_the_confidence_sequence_is_the_level_set_of_its_martingale():
    x = np.array([-0.42, 0.13, -0.95, -0.31, 0.27, -0.61])
    plan = RacePlan(max_rounds=10, candidates=2, procedure="confidence-sequence")
    share = 0.05 / 2
    half = plan.factor(len(x)) * x.std(ddof=1)
    tau2 = sequence_tau2(10, share)
    for mu in (x.mean() + half, x.mean() - half):  # on the boundary the statistic is exactly 1 / share
        assert _mixture_ratio(x - mu, tau2) == pytest.approx(1 / share, rel=1e-5)
    assert _mixture_ratio(x - x.mean(), tau2) < 1 / share  # inside: not rejected


@pytest.mark.parametrize("procedure, plan_rounds", [("confidence-sequence", 40), ("bonferroni", 40)])
def test_one_interval_covers_at_every_look_at_once(procedure, plan_rounds):
    """A single sequence of 40 normal draws: the share of sequences whose interval misses the true mean at any
    look is at most alpha for the honest procedures; the uncorrected t misses far more often."""
    rng = np.random.default_rng(3)
    x = rng.normal(0.3, 2.0, (4000, plan_rounds))
    k = np.arange(1, plan_rounds + 1)
    mean = x.cumsum(1) / k
    sd = np.sqrt(np.maximum((x ** 2).cumsum(1) - k * mean ** 2, 0) / np.maximum(k - 1, 1))

    def misses(name: str) -> float:
        f = np.array([PROCEDURES[name].factor(int(j), plan_rounds, plan_rounds - 1, 0.05, 1) for j in k])
        with np.errstate(invalid="ignore"):
            miss = np.abs(mean - 0.3) > np.where(np.isinf(f), np.inf, f * sd)
        return miss[:, 1:].any(1).mean()

    assert misses(procedure) <= 0.05
    assert misses("uncorrected") > 0.2


def test_clopper_pearson_is_the_exact_binomial_interval():
    for s, n in [(0, 50), (3, 2000), (37, 40), (40, 40)]:
        want = stats.binomtest(s, n).proportion_ci(0.95, method="exact")
        assert clopper_pearson(s, n) == pytest.approx((want.low, want.high), abs=1e-12)


# --- the state machine: a race driven round by round ends as the batch rule says ---

@pytest.mark.parametrize("procedure", HONEST)
def test_a_race_driven_by_decide_ends_as_the_batch_says(procedure):
    plan = RacePlan(max_rounds=8, candidates=3, procedure=procedure)
    rng = np.random.default_rng(5)
    d = np.array([-1.5, 0.0, 1.0])[None, :, None] + rng.normal(0, 1, (40, 3, 8))
    batch = run_races(plan, d)
    names = (21, 4, 9)
    reasons = set()
    for r in range(len(d)):
        state = RaceState.start(names)
        for k in range(8):
            state = state.add_round({c: d[r, names.index(c), k] for c in state.racing})
            dec = decide(plan, state)
            state = state.after(dec)
            if dec.done:
                break
        reasons.add(dec.reason)
        assert (dec.round, dec.win) == (batch.ended[r], batch.win[r])
        if dec.win:
            assert names.index(dec.winner) == batch.winner[r]
            assert (dec.interval.low, dec.interval.high) == pytest.approx((batch.low[r], batch.high[r]))
            assert dec.text.startswith(f"Trial {dec.winner} beats the baseline after {dec.round} held-out")
    assert "win" in reasons and len(reasons) > 1  # both kinds of ending occur


def test_the_sentences_say_what_happened():
    plan = RacePlan(max_rounds=3, candidates=2)
    state = RaceState.start([1, 2]).add_round({1: 0.1, 2: -0.2})
    first = decide(plan, state)
    assert not first.done and "no interval yet" in first.text and first.racing == (1, 2)
    state = state.add_round({1: 0.2, 2: 0.3}).add_round({1: 0.15, 2: -0.1})
    last = decide(plan, state)
    assert last.done and not last.win
    assert last.reason in ("max-rounds", "no-better")
    assert "without a win" in last.text


# --- the plan: a mistake names its field ---

@pytest.mark.parametrize("kwargs, name", [
    (dict(max_rounds=1, candidates=2), "max_rounds"),
    (dict(max_rounds=4, candidates=0), "candidates"),
    (dict(max_rounds=4, candidates=2, level=1.0), "level"),
    (dict(max_rounds=4, candidates=2, procedure="sprt"), "procedure"),
])
def test_a_bad_plan_names_the_field(kwargs, name):
    with pytest.raises(FieldError) as err:
        RacePlan(**kwargs)
    assert err.value.field == name and name in str(err.value)


def test_the_module_imports_no_torch_optuna_pandas_or_store():
    code = ("import sys, skipsearch.search.race; heavy = [m for m in ('torch', 'optuna', 'pandas', 'sqlalchemy', "
            "'scipy.stats', 'skipsearch.storage') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_coefficients_that_change_nothing_end_the_race_at_once():
    """The calibration's null space: identical samples give ΔFID exactly 0 on every seed set; no win, and no
    seed sets spent after the first interval."""
    state = RaceState.start([1, 2]).add_round({1: 0.0, 2: 0.0}).add_round({1: 0.0, 2: 0.0})
    d = decide(RacePlan(max_rounds=8, candidates=2), state)
    assert (d.done, d.win, d.reason, d.racing) == (True, False, "no-better", ())


def test_looking_every_few_rounds_narrows_the_intervals_and_stays_honest():
    """Judging only every 4th seed set (and the last) splits the error over 6 looks instead of 23: narrower
    intervals at the same seed set, no decision in between, and still at most 5% false wins on a null."""
    every, plan = RacePlan(max_rounds=24, candidates=3, every=4), RacePlan(max_rounds=24, candidates=3)
    assert [k for k in range(1, 25) if every.is_look(k)] == [4, 8, 12, 16, 20, 24] and every.looks == 6
    assert plan.looks == 23 and every.factor(24) < plan.factor(24)
    state = RaceState.start([1, 2, 3])
    for j in range(3):
        state = state.add_round({1: -5.0 - j, 2: 0.1 * j, 3: 1.0})
    quiet = decide(every, state)
    assert quiet.reason == "continue" and not quiet.leaving and not quiet.intervals  # round 3 is no look
    null = simulate(every, [0.0, 0.0, 0.0], races=3000, seed=11)
    assert null.false_win_rate_interval[1] <= 0.05, str(null)
    clear = simulate(every, [-1.5, 0.0, 0.0], races=2000, seed=12)
    assert clear.win_rate > simulate(plan, [-1.5, 0.0, 0.0], races=2000, seed=12).win_rate
    with pytest.raises(FieldError, match="every"):
        RacePlan(max_rounds=8, candidates=1, every=9)
