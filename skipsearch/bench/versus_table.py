"""What ``skipsearch bench --versus-plain`` prints and records: its header, one line per side as it ends, the
table per repeat, and the records with their targets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from skipsearch.bench.measurements import Record
from skipsearch.spec import Spec

from skipsearch.bench.versus_results import TARGET_RATIO, Side, VersusRepeat, median_match, median_or_miss

if TYPE_CHECKING:
    from skipsearch.bench.versus_judge import Match

RATIO_TARGET = f">= {TARGET_RATIO:g}"


def header(spec: Spec, repeats: range, rungs: tuple[int, ...], trials: int | None = None,
           plain_budget: float = 1.0) -> str:
    s, m, c = spec.sampler, spec.metric, spec.confirm
    if spec.metric.rungs:
        ladder = f"the spec's rungs {list(rungs)} below N={m.n}"
    elif rungs:
        ladder = f"rungs {list(rungs)} below N={m.n} ADDED (the spec has none)"
    else:
        ladder = f"no rungs (the spec has none, and N={m.n} has no whole n/2 rung >= kid_subset_size)"
    return (f"versus plain: {spec.name}, model {spec.model.model_id}, {s.name} {s.steps} steps = {s.config().nfe} NFE, "
            f"FID in the {m.extractor} feature space, {len(repeats)} repeat(s) (sampler seeds "
            f"{repeats.start}..{repeats.stop - 1})\n"
            f"  skipsearch: {spec.search.sampler} sampler, {trials or spec.search.trials} trials at N={m.n}, {ladder}, "
            f"confirmation of baseline + top {c.top_k} at N={c.n} on {c.seed_sets} held-out seed set(s)\n"
            f"  plain: TPE, N={c.n} fresh seeds per trial, torch-fidelity FID, no rungs or baseline, as many "
            f"trials as fit in skipsearch's network evaluations (its equal-budget winner), run on to "
            f"{plain_budget:g}x them to find when its winner is first as good as skipsearch's on the held-out sets\n"
            f"  network evaluations = samples x NFE; to the winner: plain, through its best trial; skipsearch, "
            f"through its winner's search trial plus the whole confirmation\n"
            f"  both winners judged on {c.seed_sets} seed set(s) of N={c.n} that neither side saw (not the "
            f"confirmation's, where skipsearch chose its winner)")


def side_line(repeat: int, side: Side) -> str:
    which = "baseline kept" if side.trial is None else f"trial {side.trial} ({side.winner})"
    return (f"repeat {repeat} {side.name:10s} done in {side.wall_s:6.1f} s: {side.trials} trials, winner {which}, "
            f"held-out dFID {side.delta_fid:+.4f}, network evaluations {side.evals_to_winner:,} to the winner, "
            f"{side.total_evals:,} in all")


def second_line(repeat: int, space: str, ours: Side, theirs: Side) -> str:
    return (f"repeat {repeat} second space {space}: skipsearch's winner dFID {ours.second_delta_fid:+.4f}, "
            f"plain's {theirs.second_delta_fid:+.4f} (debiased, paired with the baseline)")


NO_WINNER = "n/a: skipsearch confirmed no winner (it kept the baseline), so it reached none at any cost"


def match_text(match: Match, skipsearch: Side) -> str:
    if skipsearch.trial is None:
        return NO_WINNER
    if match.evals is None:
        return (f"no plain winner in {match.run_evals:,} evaluations was as good as skipsearch's on the held-out "
                f"sets (running bests judged: {len(match.judged)}): more than "
                f"{match.run_evals / max(skipsearch.evals_to_winner, 1):.2f}x skipsearch's evaluations to its winner")
    return (f"plain's winner was first as good as skipsearch's at trial {match.trial} (held-out dFID "
            f"{match.delta_fid:+.4f}), after {match.evals:,} evaluations: "
            f"{match.evals / max(skipsearch.evals_to_winner, 1):.2f}x skipsearch's to its winner")


def match_line(repeat: int, match: Match, run_trials: int, skipsearch: Side) -> str:
    return f"repeat {repeat} plain run of {run_trials} trials: {match_text(match, skipsearch)}"


def table(results: list[VersusRepeat]) -> str:
    """Per repeat and side: held-out FID and ΔFID, evaluations to the winner and in all; then the ratio."""
    lines = [f"{'repeat':>6s}  {'side':10s} {'trials':>6s} {'held-out FID':>12s} {'dFID':>9s} "
             f"{'evals to winner':>16s} {'evals in all':>13s}  winner"]
    for r in results:
        for side in (r.skipsearch, r.plain):
            which = "baseline" if side.trial is None else f"trial {side.trial}: {side.winner}"
            lines.append(f"{r.repeat:6d}  {side.name:10s} {side.trials:6d} {side.heldout_fid:12.4f} "
                         f"{side.delta_fid:+9.4f} {side.evals_to_winner:16,d} {side.total_evals:13,d}  {which}")
        ratio = (f"{r.ratio:6.2f} (target {RATIO_TARGET}: {'met' if r.ratio >= TARGET_RATIO else 'MISSED'})"
                 if r.found else f"n/a (target {RATIO_TARGET}: MISSED, no skipsearch winner)")
        lines.append(f"{'':6s}  evals to winner plain/skipsearch {ratio}; skipsearch dFID <= plain's: "
                     f"{'met' if r.as_good else 'MISSED'}; baseline held-out FID {r.baseline_heldout_fid:.4f}; "
                     f"skipsearch's winner on its own confirmation sets: dFID {r.skipsearch_confirmation_dfid:+.4f}")
        lines.append(f"{'':6s}  (the ratio is at most {r.ratio_ceiling:.2f} at this budget: the confirmation alone is "
                     f"{r.confirmation_evals / r.skipsearch.total_evals:.0%} of skipsearch's evaluations)")
        if r.second_space is not None:
            lines.append(f"{'':6s}  second space {r.second_space}: dFID skipsearch "
                         f"{r.skipsearch.second_delta_fid:+.4f}, plain {r.plain.second_delta_fid:+.4f}; "
                         f"skipsearch's <= plain's: "
                         f"{'met' if r.second_as_good else 'MISSED'}")
        verdict = {True: "met", False: "MISSED", None: "unknown: run longer with --plain-budget"}[r.match_met]
        lines.append(f"{'':6s}  to match: {match_text(r.match, r.skipsearch)} (target "
                     f"{RATIO_TARGET}: {verdict})")
    return "\n".join(lines)


def records(results: list[VersusRepeat], device: str) -> list[Record]:
    """Per repeat and side, then the summary over repeats."""
    out = []
    for r in results:
        head = f"versus plain, repeat {r.repeat}"
        for side in (r.skipsearch, r.plain):
            out += [Record.judged(f"{head}: {side.name} held-out dFID", side.delta_fid, None, device),
                    Record.judged(f"{head}: {side.name} network evaluations to its winner", side.evals_to_winner,
                                  None, device),
                    Record.judged(f"{head}: {side.name} network evaluations in all", side.total_evals, None, device)]
        out += [ratio_record(f"{head}: evaluations to winner, plain / skipsearch", r, r.ratio,
                             r.ratio >= TARGET_RATIO, device),
                Record.judged(f"{head}: skipsearch held-out dFID - plain's", r.skipsearch.delta_fid - r.plain.delta_fid,
                              "<= 0", device),
                Record.judged(f"{head}: skipsearch's winner dFID on its own confirmation sets",
                              r.skipsearch_confirmation_dfid, None, device),
                Record.judged(f"{head}: largest ratio this budget allows (plain's total / skipsearch's confirmation)",
                              r.ratio_ceiling, None, device),
                *second_records(r, head, device),
                ratio_record(f"{head}: plain evaluations to a held-out winner as good as skipsearch's / skipsearch's "
                             f"to its winner", r, r.match_ratio, r.match_met, device,
                             note="" if r.match.evals is not None else " (lower bound: none matched)")]
    k = len(results)
    if any(r.second_space is not None for r in results):
        out.append(Record.judged("versus plain: repeats where skipsearch's dFID in the second space <= plain's",
                                 sum(r.second_as_good is True for r in results), f">= {k}", device))
    out += [Record.judged("versus plain: repeats where skipsearch confirmed a winner (the others count as 0 in the "
                          "medians of ratios below)", sum(r.found for r in results), None, device),
            Record.judged("versus plain: median evaluations to winner, plain / skipsearch",
                          median_or_miss([r.ratio for r in results]), RATIO_TARGET, device),
            Record.judged("versus plain: repeats where skipsearch's held-out dFID <= plain's",
                          sum(r.as_good for r in results), f">= {k}", device),
            Record.judged(f"versus plain: repeats meeting the target (dFID <= plain's, ratio {RATIO_TARGET})",
                          sum(r.met for r in results), f">= {k}", device),
            median_match_record(results, device),
            Record.judged(f"versus plain: repeats where plain needed {RATIO_TARGET} skipsearch's evaluations to "
                          f"match its held-out winner", sum(r.match_met is True for r in results), f">= {k}", device)]
    return out


def median_match_record(results: list[VersusRepeat], device: str) -> Record:
    """The median "to match" ratio over repeats, judged as a bound where a repeat's plain loop never matched
    (``median_match``): an unknown verdict says so in the name, as the per-repeat line does."""
    value, met = median_match(results)
    name = ("versus plain: median plain evaluations to match skipsearch's held-out winner / skipsearch's to its "
            "winner (a repeat none matched counts at its lower bound)")
    if met is None:
        name += " (unknown: a lower bound below the target; run longer with --plain-budget)"
    return Record(name=name, value=float(value), target=RATIO_TARGET, met=met, device=str(device))


def ratio_record(name: str, r: VersusRepeat, value: float, met: bool | None, device: str,
                 note: str = "") -> Record:
    """A per-repeat cost ratio (``note`` qualifies its value). Without a skipsearch winner there is none: the
    record says so and counts 0, as the medians do, missed."""
    if not r.found:
        return Record(name=f"{name} (n/a: skipsearch kept the baseline; counted as 0)", value=0.0,
                      target=RATIO_TARGET, met=False, device=str(device))
    return Record(name=name + note, value=float(value), target=RATIO_TARGET, met=met, device=str(device))


def second_records(r: VersusRepeat, head: str, device: str) -> list[Record]:
    """Both winners' dFID in the second space, and whether skipsearch's is at most the plain one's there."""
    if r.second_space is None:
        return []
    return [Record.judged(f"{head}: {side.name} dFID in the second space ({r.second_space}, debiased)",
                          side.second_delta_fid, None, device) for side in (r.skipsearch, r.plain)] + [
        Record.judged(f"{head}: skipsearch dFID in the second space - plain's",
                      r.skipsearch.second_delta_fid - r.plain.second_delta_fid, "<= 0", device)]
