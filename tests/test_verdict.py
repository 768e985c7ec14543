"""The one verdict: a 95% paired t interval on held-out dFID, no win claimed without one; FID-infinity."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from skipsearch.methods.skip_tuning.schedules import LinearSkip
from skipsearch.metrics.extrapolate import fid_infinity
from skipsearch.search.verdict import paired_interval, verdict


COEFFS = LinearSkip(rho_top=1.1, rho_bottom=0.9).model_dump_json()


@pytest.mark.parametrize("deltas", [[-0.3, -0.1, -0.2], [0.5, -0.4], [-1.0, -1.2, -0.9, -1.4, -0.7]])
def test_the_interval_is_scipys_one_sample_t_interval(deltas):
    ci = paired_interval(deltas)
    want = stats.ttest_1samp(deltas, 0.0).confidence_interval(0.95)
    assert (ci.low, ci.high) == pytest.approx((want.low, want.high), rel=1e-12)
    assert ci.k == len(deltas)


def _table(deltas_by_trial: dict[int, list[float]], base_fid: float = 10.0) -> pd.DataFrame:
    """A heldout_summary-shaped table built from per-seed-set dFIDs."""
    sets = len(next(iter(deltas_by_trial.values())))
    rows = [dict(trial_number=0, role="baseline", heldout_fid=base_fid, heldout_fid_std=0.1, delta_fid=0.0,
                 delta_fid_low=None, delta_fid_high=None, lower_on=0, seed_sets=sets, coefficients=COEFFS,
                 heldout_source_fid=None)]
    for num, deltas in deltas_by_trial.items():
        ci = paired_interval(deltas)
        rows.append(dict(trial_number=num, role="search", heldout_fid=base_fid + ci.mean, heldout_fid_std=0.1,
                         delta_fid=ci.mean, delta_fid_low=ci.low, delta_fid_high=ci.high,
                         lower_on=sum(d < 0 for d in deltas), seed_sets=len(deltas), coefficients=COEFFS,
                         heldout_source_fid=None))
    return pd.DataFrame(rows)


def test_a_win_needs_the_whole_interval_below_zero():
    won = verdict(_table({3: [-0.30, -0.25, -0.35]}))
    assert won.win and "rho_top=1.1" in won.text and won.text.startswith("Winner: trial 3 ")
    unsure = verdict(_table({3: [-0.5, 0.1, -0.2]}))  # lower on average, but the interval reaches above 0
    assert not unsure.win and "contains 0" in unsure.text
    worse = verdict(_table({3: [0.3, 0.4, 0.35]}))
    assert not worse.win and "NOT an improvement" in worse.text
    for judged in (unsure, worse):  # the head says it before anything else is read
        assert judged.text.startswith("Best confirmed candidate, no win claimed: trial 3 ")
        assert "Winner" not in judged.text


def test_one_seed_set_claims_no_win_and_says_why():
    one = verdict(_table({3: [-5.0]}))
    assert not one.win and one.interval.low is None
    assert "no win is claimed" in one.text and "at least two" in one.text
    assert one.text.startswith("Best confirmed candidate, no win claimed: trial 3 ")


def _raced(status: str, race_text: str) -> pd.DataFrame:
    """A raced summary: the baseline and trial 4, whose race ended with ``status``."""
    table = _table({4: [0.2, 0.3, 0.25, 0.3]})
    table["race_status"] = [None, status]
    table["race_delta_fid"], table["race_low"], table["race_high"] = [None, 0.26], [None, 0.1], [None, 0.4]
    table["race_rounds"], table["race_text"] = [None, 4], [None, race_text]
    return table


@pytest.mark.parametrize(("status", "race_text", "win"), [
    ("won", "Trial 4 beats the baseline after 4 held-out seed sets.", True),
    ("left: clearly worse than the baseline", "No candidate is left (trial 4 left: clearly worse than the "
     "baseline).", False),
])
def test_a_race_names_a_winner_only_when_it_won(status, race_text, win):
    judged = verdict(_raced(status, race_text))
    assert judged.trial == 4 and judged.win is win
    head = "Winner: trial 4 " if win else "Best confirmed candidate, no win claimed: trial 4 "
    assert judged.text.startswith(head) and race_text in judged.text


def test_an_exported_file_claims_a_win_only_for_the_trial_the_verdict_won_with():
    from skipsearch.exchange.export import _verdict

    won, unsure = _table({3: [-0.30, -0.25, -0.35]}), _table({3: [-0.5, 0.1, -0.2]})
    assert _verdict(won, None, 3) == {"claimed_win": True, "text": verdict(won).text}
    assert _verdict(won, None, 0)["claimed_win"] is False  # the baseline, exported with --trial 0
    assert _verdict(unsure, None, 3) == {"claimed_win": False, "text": verdict(unsure).text}
    assert _verdict(won.iloc[0:0], None, 3) is None  # nothing confirmed: nothing to say


def test_the_winner_is_the_lowest_mean_heldout_fid():
    judged = verdict(_table({3: [-0.1, -0.1, -0.12], 5: [-0.3, -0.28, -0.33]}))
    assert judged.trial == 5 and judged.win


def test_fid_infinity_recovers_a_line_in_one_over_n():
    ns = [250, 500, 1000, 4000]
    fit = fid_infinity(ns, [3.0 + 400.0 / n for n in ns])
    assert fit.fid_inf == pytest.approx(3.0) and fit.slope == pytest.approx(400.0)
    assert fid_infinity([500, 500], [4.0, 4.1]) is None  # one N: no line


def test_a_claimed_winner_at_an_end_of_its_range_is_named_and_a_candidate_without_a_win_is_not():
    from skipsearch.search.verdict import edge_note, winner_edges
    from skipsearch.specfile import parse_spec

    spec = parse_spec({"name": "edges", "search": {"rho_range": [0.5, 1.5]}})
    at_floor = LinearSkip(rho_top=0.8138, rho_bottom=0.5029).model_dump_json()  # the README demo's winner
    won = _table({3: [-0.30, -0.25, -0.35]}).assign(coefficients=at_floor)
    said = winner_edges(spec, won)
    assert said == ("rho_bottom = 0.5029 at the lower end of search.rho_range [0.5, 1.5]",)
    assert edge_note(said).startswith("note: rho_bottom = 0.5029 at the lower end") and edge_note(()) is None
    assert winner_edges(spec, _table({3: [-0.5, 0.1, -0.2]}).assign(coefficients=at_floor)) == ()  # no win
    assert winner_edges(spec, _table({3: [-0.30, -0.25, -0.35]})) == ()  # a win well inside the range
