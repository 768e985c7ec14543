"""`skipsearch bench --versus-plain` end to end on a tiny study: both sides spend the same network evaluations
(within one plain trial), the plain side's seeds are fresh, and the records hold together."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import yaml
from conftest import tiny_spec_dict
from test_spec import cli

from skipsearch.bench.plain_loop import plain_search
from skipsearch.bench.versus_judge import Match, heldout_fids, judging_spec
from skipsearch.bench.versus_plain import default_rungs, versus_plain
from skipsearch.bench.versus_results import Side, VersusRepeat
from skipsearch.bench.versus_table import median_match_record
from skipsearch.evaluate import evaluator_for
from skipsearch.methods.sampled import eval_task
from skipsearch.specfile import load_spec, parse_spec

NFE = 5  # heun, 3 steps
CONFIRM_N = 96


def _spec_file(tmp_path, name: str = "vp", **overrides):
    raw = tiny_spec_dict(name, confirm={"top_k": 1, "n": CONFIRM_N, "seed_sets": 1, "seed": 10_000}, **overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_both_sides_spend_the_same_budget_on_fresh_seeds(tmp_path, capsys):
    (r,) = versus_plain(_spec_file(tmp_path), repeats=1, plain_budget=2.0)
    out = capsys.readouterr().out
    assert "rungs [32] below N=64 ADDED" in out  # the tiny spec has no rungs: the bench says it added them
    assert out.count("repeat 0 skipsearch") == 1 and out.count("repeat 0 plain      done") == 1
    assert out.count("repeat 0 plain run of") == 1
    per_trial = CONFIRM_N * NFE
    assert r.nfe == NFE and r.plain.total_evals == r.plain.trials * per_trial
    assert 0 <= r.skipsearch.total_evals - r.plain.total_evals < per_trial
    # the plain loop ran on to twice skipsearch's evaluations, in whole trials, where there is a winner to match;
    # where skipsearch kept the baseline it stopped at the equal budget (this tiny spec keeps it at seed 0)
    run = len(r.plain_run.values)
    extended = 2 * r.skipsearch.total_evals // per_trial
    assert r.match.run_evals == run * per_trial and run == (extended if r.found else r.plain.trials)
    # the samples x NFE arithmetic is what the network's forward calls saw
    assert r.counted_at_network == (r.skipsearch.total_evals, r.match.run_evals)
    for side in (r.skipsearch, r.plain):
        assert 0 < side.evals_to_winner <= side.total_evals
        assert math.isfinite(side.delta_fid) and math.isfinite(side.heldout_fid)
    # skipsearch keeps the baseline when its confirmation measured the best candidate worse than it
    assert r.skipsearch_confirmation_dfid <= 0
    if r.skipsearch.trial is None:
        assert r.skipsearch.delta_fid == 0 and r.skipsearch_confirmation_dfid == 0
        # and the study's own verdict says why it stays, as `skipsearch best` would
        assert "repeat 0 study's verdict: Best confirmed candidate, no win claimed: trial" in out
    # skipsearch's winner needs the whole confirmation: at least the baseline's and one candidate's held-out N
    assert r.skipsearch.evals_to_winner >= 2 * per_trial
    seeds = [set(range(*span)) for span in r.plain_seeds]
    assert len(seeds) == run and all(len(s) == CONFIRM_N for s in seeds)
    assert len(set().union(*seeds)) == sum(map(len, seeds))  # never reused across trials
    # both winners are judged on a set neither side saw: above the search seeds and the confirmation's set
    judging = set().union(*(range(*span) for span in r.heldout_seeds))
    confirmation = set(range(10_000, 10_000 + CONFIRM_N))
    assert r.heldout_seeds == ((10_000 + CONFIRM_N, 10_000 + 2 * CONFIRM_N),)
    for used in (confirmation, set(range(0, 64))):
        assert not used & set().union(*seeds) and not used & judging
    assert not judging & set().union(*seeds)
    assert abs(r.plain.heldout_fid - r.plain.delta_fid - r.baseline_heldout_fid) < 1e-9  # one baseline for both


def test_the_plain_run_is_judged_until_its_winner_matches_skipsearch(tmp_path):
    spec_path = _spec_file(tmp_path)
    # repeat 0 keeps the baseline on this tiny spec (nothing to match: the next test); repeat 1 finds a winner
    runs = versus_plain(spec_path, repeats=2, plain_budget=3.0)
    assert all(r.match.judged == () for r in runs if not r.found)
    r = next((r for r in runs if r.found), None)
    assert r is not None, "neither repeat confirmed a winner: this test needs a spec where one does"
    per_trial, values = CONFIRM_N * NFE, r.plain_run.values
    # with a winner to match, the plain loop ran on to 3x skipsearch's evaluations; without one, only to 1x
    assert len(values) == 3 * r.skipsearch.total_evals // per_trial
    assert all(len(k.plain_run.values) == k.plain.trials for k in runs if not k.found)
    # the equal-budget winner is the lowest FID of the trials that fit in skipsearch's budget
    equal = values[:r.plain.trials]
    assert r.plain.trial == min(range(len(equal)), key=lambda t: (equal[t], t))
    assert r.plain.evals_to_winner == (r.plain.trial + 1) * per_trial
    # the judged trials are the running bests in order, each beating every FID before it, and all but the
    # matching one were worse than skipsearch on the held-out sets
    judged = [t for t, _ in r.match.judged]
    assert judged == sorted(judged) and judged
    for t in judged:
        assert all(values[t] < v for v in values[:t])
    deltas = [d for _, d in r.match.judged]
    if r.match.evals is None:
        assert all(d > r.skipsearch.delta_fid for d in deltas)
        assert judged[-1] == min(range(len(values)), key=lambda t: (values[t], t))  # it judged them all
        assert r.match_ratio == pytest.approx(r.match.run_evals / r.skipsearch.evals_to_winner)
    else:
        assert all(d > r.skipsearch.delta_fid for d in deltas[:-1]) and deltas[-1] <= r.skipsearch.delta_fid
        assert r.match.trial == judged[-1] and r.match.evals == (r.match.trial + 1) * per_trial
        assert r.match_ratio == pytest.approx(r.match.evals / r.skipsearch.evals_to_winner)
        # the matching winner judged again, from its coefficients, on the spec's held-out sets
        spec = judging_spec(load_spec(spec_path))
        again = heldout_fids(spec, r.plain_run.coefficients[r.match.trial])
        baseline = r.baseline_heldout_fid
        assert statistics.fmean(again.values()) - baseline == pytest.approx(r.match.delta_fid, abs=1e-9)
    # the equal-budget winner's held-out dFID is the same whether judged for the table or for the match
    if r.plain.trial in judged:
        assert dict(r.match.judged)[r.plain.trial] == pytest.approx(r.plain.delta_fid, abs=1e-12)
    # each repeat's plain trials draw from a block of fresh seeds of its own, so a repeat run alone
    # (--first-repeat) gives the figures it gave inside the longer run
    first, second = ({s for span in k.plain_seeds for s in range(*span)} for k in runs)
    assert first and second and not first & second
    (alone,) = versus_plain(spec_path, repeats=1, plain_budget=3.0, first_repeat=runs[1].repeat)
    late = runs[1]
    assert alone.repeat == late.repeat == 1 and alone.plain_seeds == late.plain_seeds
    assert alone.skipsearch.trial == late.skipsearch.trial and alone.plain.trial == late.plain.trial
    assert alone.plain_run.values == pytest.approx(late.plain_run.values, abs=1e-9)
    assert alone.skipsearch.delta_fid == pytest.approx(late.skipsearch.delta_fid, abs=1e-9)
    assert [t for t, _ in alone.match.judged] == [t for t, _ in late.match.judged]
    assert [d for _, d in alone.match.judged] == pytest.approx([d for _, d in late.match.judged], abs=1e-9)


def test_a_kept_baseline_has_no_cost_ratio_and_misses_the_targets(tmp_path):
    """One trial is the baseline alone: skipsearch confirms no winner. Any plain trial no worse than the baseline
    would "match" it, so neither cost ratio has a skipsearch side: no plain trial is judged for a match, and each
    ratio is n/a, counted as 0 and missed."""
    from skipsearch.bench.versus_table import records, table

    (r,) = versus_plain(_spec_file(tmp_path), repeats=1, trials=1, plain_budget=1.5)
    assert r.skipsearch.trial is None and not r.found and r.skipsearch.delta_fid == 0
    assert r.match.judged == () and r.match.evals is None
    # nor is the plain loop run on past the equal budget for a match it would never be judged for
    assert len(r.plain_seeds) == r.plain.trials and r.counted_at_network[1] == r.plain.total_evals
    assert math.isnan(r.ratio) and math.isnan(r.match_ratio) and r.match_met is False and r.met is False
    text = table([r])
    assert "evals to winner plain/skipsearch n/a" in text and "to match: n/a: skipsearch confirmed no winner" in text
    by_name = {rec.name: rec for rec in records([r], "cpu")}
    ratios = [rec for name, rec in by_name.items() if name.startswith("versus plain, repeat 0:") and "n/a" in name]
    assert len(ratios) == 2 and all(rec.value == 0 and rec.met is False for rec in ratios)
    assert by_name["versus plain: median evaluations to winner, plain / skipsearch"].met is False
    assert by_name["versus plain: repeats where skipsearch confirmed a winner (the others count as 0 in the "
                   "medians of ratios below)"].value == 0


def test_a_tpe_run_begins_as_the_shorter_run_does(tmp_path):
    """The equal-budget side is the longer run cut short: TPE's first trials do not depend on how many follow."""
    spec = load_spec(_spec_file(tmp_path))
    ev = evaluator_for(eval_task(spec, n=spec.confirm.n, seed_start=spec.confirm.seed))
    # TPE proposes at random for its first 10 trials: 12 of them reach its model-based proposals too
    short, long = (plain_search(spec, ev, 1, k, 50_000) for k in (12, 14))
    assert long.values[:12] == short.values and long.coefficients[:12] == short.coefficients
    assert len(long.ended_s) == 14 and list(long.ended_s) == sorted(long.ended_s)
    assert long.best_within(12) == short.best_within(12)


def test_cli_writes_the_records(tmp_path):
    spec = _spec_file(tmp_path)
    proc = cli("bench", "--versus-plain", "--spec", str(spec), "--repeats", "1", "--trials", "3", "--json",
               "vp.json", "--plain-budget", "1.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "evals to winner plain/skipsearch" in proc.stdout
    assert "3 trials at N=64" in proc.stdout  # the header says the budget that --trials set
    assert not list(tmp_path.glob("*.db"))  # the studies live in a temporary directory
    records = {r["name"]: r for r in json.loads((tmp_path / "vp.json").read_text())}
    assert all(set(r) == {"name", "value", "target", "met", "device"} for r in records.values())
    head = "versus plain, repeat 0"
    totals = [records[f"{head}: {side} network evaluations in all"]["value"] for side in ("skipsearch", "plain")]
    assert 0 <= totals[0] - totals[1] < CONFIRM_N * NFE
    (name, ratio), = [(n, r) for n, r in records.items() if n.startswith(f"{head}: evaluations to winner, plain /")]
    to_winner = [records[f"{head}: {side} network evaluations to its winner"]["value"] for side in ("plain",
                                                                                                      "skipsearch")]
    found = records["versus plain: repeats where skipsearch confirmed a winner (the others count as 0 in the "
                    "medians of ratios below)"]["value"]
    assert ratio["target"] == ">= 3"
    if found:
        assert ratio["value"] == pytest.approx(to_winner[0] / to_winner[1]) and ratio["met"] == (ratio["value"] >= 3)
    else:  # the kept baseline's ratio is n/a, counted as 0 (test_a_kept_baseline_has_no_cost_ratio...)
        assert "n/a: skipsearch kept the baseline" in name and ratio["value"] == 0 and ratio["met"] is False
    better = records[f"{head}: skipsearch held-out dFID - plain's"]
    assert better["met"] == (better["value"] <= 0)
    assert records["versus plain: repeats where skipsearch's held-out dFID <= plain's"]["value"] == int(better["met"])
    (match,) = [r for name, r in records.items() if name.startswith(f"{head}: plain evaluations to a held-out winner")]
    assert match["target"] == ">= 3" and (match["value"] > 0) == bool(found)
    if not found:
        assert match["met"] is False
    elif "lower bound" in next(n for n in records if n.startswith(f"{head}: plain evaluations to a held-out")):
        assert match["met"] is (True if match["value"] >= 3 else None)  # none matched: known only above 3
    else:
        assert match["met"] == (match["value"] >= 3)
    assert "run on to 1.5x" in proc.stdout and "to match:" in proc.stdout
    # long parts say how far they are when the output goes to a file: the plain loop, and its held-out judging
    assert "plain loop, repeat 0: 1/" in proc.stderr and "held-out, plain trial" in proc.stderr


def test_a_training_method_is_refused_with_a_message(tmp_path):
    from conftest import tiny_dt_spec_dict

    spec = tmp_path / "dt.yaml"
    spec.write_text(yaml.safe_dump(tiny_dt_spec_dict("dt")))
    proc = cli("bench", "--versus-plain", "--spec", str(spec), cwd=tmp_path)
    assert proc.returncode == 2 and "training-free" in proc.stderr and "Traceback" not in proc.stderr
    for budget in ("0.5", "11", "lots"):
        proc = cli("bench", "--versus-plain", "--spec", str(spec), "--plain-budget", budget, cwd=tmp_path)
        assert proc.returncode == 2 and "--plain-budget" in proc.stderr and "Traceback" not in proc.stderr
    # repeats share 100 blocks of seeds: a first repeat past them is named, before any spec is read
    proc = cli("bench", "--versus-plain", "--spec", str(spec), "--first-repeat", "98", "--repeats", "3", cwd=tmp_path)
    assert proc.returncode != 0 and "--first-repeat must be between 0 and 97" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_default_rungs_halve_down_to_the_kid_subset():
    def rungs(n: int, kid: int) -> tuple[int, ...]:
        return default_rungs(parse_spec(tiny_spec_dict(metric={"n": n, "kid_subset_size": kid},
                                                       confirm={"n": 2000})))

    assert rungs(500, 100) == (125, 250)
    assert rungs(64, 32) == (32,)  # 16 would be below the KID subset size
    assert rungs(66, 32) == (33,)  # n/4 is not whole
    assert rungs(63, 32) == ()


def test_both_winners_are_judged_in_the_second_space_too(tmp_path, capsys):
    """A win that lives in one feature space counts for neither side: both winners are also scored where the
    spec's second opinion would look, on the judging sets' seeds (checked against an independent recomputation)."""
    from test_second_opinion import SPACE, _independent_debiased

    from skipsearch.bench.versus_judge import second_space_fids
    from skipsearch.bench.versus_table import records, table
    from skipsearch.methods import parse_coefficients

    raw = tiny_spec_dict("vp2", confirm={"top_k": 1, "n": CONFIRM_N, "seed_sets": 2, "seed": 10_000,
                                         "second_opinion": {"extractor": SPACE, "n": 48, "seed_sets": 2}})
    path = tmp_path / "vp2.yaml"
    path.write_text(yaml.safe_dump(raw))
    (r,) = versus_plain(path, repeats=1, plain_budget=1.0)
    out = capsys.readouterr().out
    assert f"second space: {SPACE}" in out and f"repeat 0 second space {SPACE}:" in out
    assert r.second_space == SPACE
    # the study's opinion samples through a model copy of its own (one per extractor): the check counts it too
    opinion = 2 * 2 * 48 * NFE  # the candidate and the baseline on 2 seed sets of 48
    assert r.confirmation_evals == 2 * 2 * CONFIRM_N * NFE + opinion
    assert r.counted_at_network == (r.skipsearch.total_evals, r.match.run_evals) and "counted at the network" not in out
    assert math.isfinite(r.plain.second_delta_fid) and math.isfinite(r.skipsearch.second_delta_fid)
    if r.skipsearch.trial is None:
        assert r.skipsearch.second_delta_fid == 0  # the baseline against itself
    assert f"second space {SPACE}: dFID skipsearch" in table([r])
    names = [rec.name for rec in records([r], "cpu")]
    assert any("dFID in the second space - plain's" in n for n in names)
    # the baseline's number there, on the first judging set's first 48 seeds, recomputed from scratch
    spec = judging_spec(load_spec(path))
    baseline = parse_coefficients('{"family": "linear", "rho_top": 1.0, "rho_bottom": 1.0}')
    fids = second_space_fids(spec, SPACE, baseline, "check")
    assert fids[0] == pytest.approx(_independent_debiased(spec, r.heldout_seeds[0][0], 48), rel=1e-6)


def _judged_repeat(repeat: int, plain_evals_to_match: int | None, plain_run_evals: int = 1_500) -> VersusRepeat:
    """A repeat as the benchmark records it, skipsearch reaching its winner after 1,000 evaluations; the plain
    loop matched it after ``plain_evals_to_match`` (None: never, within ``plain_run_evals``)."""
    def side(name: str, trial: int) -> Side:
        return Side(name=name, winner="linear", trial=trial, heldout_fid=1.0, delta_fid=-0.1, evals_to_winner=1_000,
                    total_evals=2_000, trials=4, wall_s=1.0)

    match = Match(trial=None if plain_evals_to_match is None else 7, delta_fid=math.nan,
                  evals=plain_evals_to_match, run_evals=plain_run_evals, judged=())
    return VersusRepeat(repeat=repeat, nfe=NFE, skipsearch=side("skipsearch", 3), plain=side("plain", 2),
                        skipsearch_confirmation_dfid=-0.1, baseline_heldout_fid=1.0, heldout_seeds=(),
                        plain_seeds=(), counted_at_network=(0, 0), confirmation_evals=500, match=match,
                        plain_run=None)


@pytest.mark.parametrize(("to_match", "verdict"), [
    ((None, 4_000, 5_000), True),   # ratios >= 1.5 (a bound), 4, 5: median 4 whatever the bound's truth
    ((None, None, 1_000), None),    # >= 1.5, >= 1.5, 1: the median is 1.5 or up to unlimited
    ((None, 1_000, 2_000), False),  # >= 1.5, 1, 2: at most 2 even if the bound were unlimited
])
def test_the_median_to_match_is_judged_as_a_bound_where_none_matched(to_match, verdict):
    record = median_match_record([_judged_repeat(i, e) for i, e in enumerate(to_match)], "cpu")
    assert record.met is verdict
    assert ("unknown" in record.name) is (verdict is None)


@pytest.mark.parametrize(("sampler", "nfe"), [({"name": "ddim", "steps": 3}, 3), ({"name": "heun", "steps": 2}, 3)])
def test_the_network_count_sees_a_diffusers_model_under_its_schedulers_and_edms(sampler, nfe):
    """diffusers' schedulers call the UNet, never the denoiser wrapper's forward: counted at the wrapper, a DDIM
    study's check read 0 network evaluations. Counted at ``network_of``, it sees samples x NFE under both kinds of
    sampler, on the shipped DDPM pipeline."""
    from pathlib import Path

    from skipsearch.bench.network_count import NetworkCounter
    from skipsearch.diffusion.family_sampling import network_of
    from skipsearch.timing import Stopwatch

    shipped = load_spec(Path(__file__).parent.parent / "studies" / "demo-diffusers.yaml")
    spec = shipped.model_copy(update={"device": "cpu", "sampler": type(shipped.sampler).model_validate(sampler)})
    assert spec.sampler.config().nfe == nfe
    task = eval_task(spec, n=6, seed_start=0)
    ev = evaluator_for(task)
    counter = NetworkCounter(network_of(ev.loaded.denoiser))
    try:
        ev.sample(task, range(6), Stopwatch())
    finally:
        counter.close()
    assert counter.count == 6 * nfe
