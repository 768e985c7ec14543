"""``bench.calibration``: the null is informative (real samples that differ, where the issue's nulls are
identical), the races are the real ``search.race`` rules, the counts add up, and on the null the plain loop's
'best trial beats the baseline' claims far more often than the race.

The rule checks feed the calibration a seeded synthetic measure (a FID per stream and seed set whose
distribution is known: the null streams exchangeable with the baseline, the effect paired with it), so that
a few hundred studies take a second; what is under test there is the rules and the bookkeeping, which are
the real code. The evaluation itself is checked on the real embedded model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skipsearch.bench.calibration import Calibration, CalibrationSetup, Evaluations, Stream, calibrate, race
from skipsearch.bench.calibration_table import records, table
from skipsearch.search.racing import replay
from skipsearch.search.race_simulation import clopper_pearson

EFFECT = -1.5


def synthetic(stream: Stream, start: int) -> tuple[float, float]:
    """(plain FID, debiased FID): the baseline model's value depends only on the seeds (so a shifted stream is
    an independent draw of the same law), the effect's is the baseline's on the same seeds plus EFFECT and a
    little noise of its own; the plain FID carries a 1/N-like bias of +0.5."""
    base = np.random.default_rng([start, 7]).normal(10.0, 1.0)
    value = base + (EFFECT + np.random.default_rng([start, 8]).normal(0.0, 0.3) if stream.effect else 0.0)
    return value + 0.5, value


@pytest.fixture(scope="module")
def synthetic_run() -> Calibration:
    return calibrate(150, 40, CalibrationSetup(truth_sets=32), measure=synthetic)


def test_race_makes_the_decisions_replay_makes():
    """``race`` asks for numbers lazily, but decides with the rules a real confirmation replays: the same
    outcome as ``search.racing.replay`` on the same numbers, on studies that win, drop or run out."""
    setup = CalibrationSetup()
    plan = setup.plan(3)
    outcomes = set()
    for study in range(30):
        rng = np.random.default_rng(study)
        effects = rng.choice([0.0, -0.8, -3.0], size=3)
        deltas = effects[:, None] + rng.normal(0, 1, (3, setup.max_rounds))
        out = race(plan, lambda c, k, d=deltas: float(d[c - 1, k]), 3)
        judged = {(0, k): 0.0 for k in range(setup.max_rounds)}
        judged |= {(c, k): float(deltas[c - 1, k]) for c in (1, 2, 3) for k in range(setup.max_rounds)}
        r = replay(plan, 0, (1, 2, 3), judged)
        assert (out.win, out.winner) == (r.win, r.winner if r.win else None)
        assert out.decisions[-1].round == r.rounds
        if out.win:
            iv = r.last.interval
            assert (out.low, out.high, out.mean) == (iv.low, iv.high, iv.mean)
        outcomes.add((out.win, out.decisions[-1].reason))
    assert len(outcomes) >= 2  # the studies above did not all end the same way


def test_counts_add_up(synthetic_run):
    cal = synthetic_run
    assert {(r.rule, r.space) for r in cal.results} == {(a, b) for a in ("skipsearch", "plain")
                                                         for b in ("null", "effect")}
    for r in cal.results:
        assert 0 <= r.false_claims <= r.claims <= r.studies
        assert len(r.errors) == r.claims
        if r.covered is not None:
            assert 0 <= r.covered <= r.claims
        if r.rule == "skipsearch":  # every claim was made at one of the plan's looks, with a finite interval
            assert len(r.claim_rounds) == len(r.half_widths) == r.claims
            assert all(cal.setup.plan(1).is_look(k) for k in r.claim_rounds)
            assert all(0 < h < math.inf for h in r.half_widths)
    null = cal.result("skipsearch", "null")
    assert null.covered == 0 and null.false_claims == null.claims  # the truth is 0: a claim below 0 misses it
    # the truth estimate is the effect's, from its own fresh sets
    assert abs(cal.truth.mean - EFFECT) < 4 * cal.truth.se + 0.05
    assert cal.truth.sets == 32


def test_plain_rule_claims_the_null_far_more_often(synthetic_run):
    """K exchangeable draws beat one more with probability K / (K + 1): the plain loop's rate on the null
    must sit at 2/3 for K = 2, while the race's false wins stay near or below 5%."""
    plain, race_ = synthetic_run.result("plain", "null"), synthetic_run.result("skipsearch", "null")
    low, high = clopper_pearson(plain.claims, plain.studies)
    assert low <= 2 / 3 <= high
    assert plain.claims > 5 * max(race_.claims, 1)
    assert race_.false_interval[0] <= 0.05
    effect = synthetic_run.result("skipsearch", "effect")
    assert effect.claims >= 0.9 * effect.studies  # a clear effect is found
    assert effect.coverage >= 0.8
    assert all(e < 0 for e in synthetic_run.result("plain", "null").errors)  # a plain claim is a ΔFID below 0


def test_table_and_records(synthetic_run):
    text = table(synthetic_run)
    assert "skipsearch null" in text and "plain      null" in text and "truth of the effect" in text
    recs = {r.name: r for r in records(synthetic_run)}
    plain = recs["calibration null plain false-win rate"]
    assert plain.target == "<= 0.05" and plain.met is False  # the plain loop misses the target
    assert recs["calibration effect skipsearch coverage"].target == ">= 0.95"
    assert recs["calibration null skipsearch false-win rate 95% low"].value <= recs[
        "calibration null skipsearch false-win rate"].value


def test_null_stream_differs_where_the_issues_null_is_identical():
    """On the real model: the baseline drawn again on the same seeds gives the same debiased FID exactly (the
    degenerate null: ΔFID 0 on every set); the shifted stream and the effect schedule do not."""
    setup = CalibrationSetup(n=32, steps=3)
    ev = Evaluations(setup)
    base = ev.debiased(Stream(), 0)
    again = ev._measure(Stream(), ev.seeds(Stream(), 0))[1]  # not from the cache
    assert again == base
    shifted = ev.debiased(Stream(shift=1), 0)
    effect = ev.debiased(Stream(effect=True), 0)
    assert math.isfinite(shifted) and shifted != base
    assert math.isfinite(effect) and effect != base
    assert ev.seeds(Stream(shift=1), 0) != ev.seeds(Stream(), 0)


def test_cli_refuses_too_few_studies():
    """A calibration needs a null study and an effect study: ``--studies 1`` is the user's mistake, exit 2
    naming the option, no traceback."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "skipsearch", "bench", "--calibration", "--studies", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "--studies" in out.stderr and "Traceback" not in out.stderr


def test_effect_raced_beside_nulls():
    """With null candidates beside the effect, a claim of a null is a false win and its truth is 0; the plain
    loop's best of the three is judged against the truth of whichever it picked."""
    cal = calibrate(2, 60, CalibrationSetup(truth_sets=16, effect_nulls=2), measure=synthetic)
    race_, plain = cal.result("skipsearch", "effect"), cal.result("plain", "effect")
    assert race_.claims >= 55 and race_.false_claims <= 3
    assert plain.claims >= 50 and len(plain.errors) == plain.claims
    assert cal.setup.plan(3).candidates == 3
