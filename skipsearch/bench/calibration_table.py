"""What ``skipsearch bench --calibration`` prints and records: the rates of each rule on each space with their
exact 95% intervals, when the race claimed, and the records with the issue's targets (``bench.calibration``
measures them)."""

from __future__ import annotations

import math
import statistics

from skipsearch.bench.calibration_results import Calibration
from skipsearch.bench.measurements import Record


def _rate(x: float, iv: tuple[float, float]) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f} [{iv[0]:.3f}, {iv[1]:.3f}]"


def table(cal: Calibration) -> str:
    """The measured rates as a small table, each with its exact 95% interval."""
    lines = [f"{'rule':10s} {'space':6s} {'studies':>7s}  {'claimed wins':24s} {'false wins':24s} "
             f"{'coverage of claims':24s} {'claim - truth':>13s} {'evals/study':>11s}"]
    for r in cal.results:
        lines.append(f"{r.rule:10s} {r.space:6s} {r.studies:7d}  {_rate(r.claim_rate, r.claim_interval):24s} "
                     f"{_rate(r.false_rate, r.false_interval):24s} {_rate(r.coverage, r.coverage_interval):24s} "
                     f"{r.error_mean:+13.4f} {r.evaluations:11.1f}")
    for r in cal.results:
        if r.claim_rounds:
            when = ", ".join(f"{k}: {r.claim_rounds.count(k)}" for k in sorted(set(r.claim_rounds)))
            lines.append(f"{r.rule} {r.space}: claims by seed sets read ({when}); mean claimed half-width "
                         f"{statistics.fmean(r.half_widths):.4f}")
    t = cal.truth
    lines.append(f"truth of the effect: ΔFID {t.mean:+.4f} (s.e. {t.se:.4f}, {t.sets} fresh seed sets); "
                 f"{cal.evaluations} evaluations of N={cal.setup.n} in {cal.wall_s:.0f} s")
    return "\n".join(lines)


def records(cal: Calibration, device: str = "cpu") -> list[Record]:
    """The records ``--json`` writes: the targets are the issue's (false wins on the null <= 5%, coverage of
    the claimed intervals >= 95%), for both rules; the Clopper-Pearson bounds are recorded beside each rate."""
    out: list[Record] = []
    for r in cal.results:
        name = f"calibration {r.space} {r.rule}"
        lo, hi = r.false_interval
        out += [Record.judged(f"{name} false-win rate", r.false_rate, "<= 0.05", device),
                Record.judged(f"{name} false-win rate 95% low", lo, None, device),
                Record.judged(f"{name} false-win rate 95% high", hi, None, device),
                Record.judged(f"{name} claim rate", r.claim_rate, None, device)]
        if r.space == "effect" and r.covered is not None and r.claims:
            lo, hi = r.coverage_interval
            out += [Record.judged(f"{name} coverage", r.coverage, ">= 0.95", device),
                    Record.judged(f"{name} coverage 95% low", lo, None, device),
                    Record.judged(f"{name} coverage 95% high", hi, None, device)]
        if r.errors:
            out.append(Record.judged(f"{name} mean claim - truth", r.error_mean, None, device))
    out.append(Record.judged("calibration effect truth dFID", cal.truth.mean, None, device))
    out.append(Record.judged("calibration effect truth s.e.", cal.truth.se, None, device))
    out.append(Record.judged("calibration wall s", cal.wall_s, None, device))
    return out
