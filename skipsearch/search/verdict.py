"""The one verdict on a held-out confirmation, used by the end-of-run table, ``best`` and the report.

A win is claimed only when the 95% paired interval on ΔFID (candidate minus baseline, paired by seed set,
t-based over the seed sets) lies wholly below zero, and the second feature space (``second_opinion``) does not
call the winner worse. With fewer than two seed sets there is no interval, so
no win is claimed, and the verdict says why instead of reading a single draw as evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pandas as pd

from skipsearch.methods import describe, method_for, parse_coefficients

if TYPE_CHECKING:
    from skipsearch.spec import Spec

LEVEL = 0.95


@dataclass(frozen=True, kw_only=True)
class PairedInterval:
    """Mean ΔFID over k seed sets and its t interval (None where k < 2: one draw has no spread)."""

    mean: float
    k: int
    low: float | None = None
    high: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else (self.high - self.low) / 2

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.mean:+.4f} (no interval: {self.k} seed set)"
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_interval(deltas: Sequence[float], level: float = LEVEL) -> PairedInterval:
    """Student-t interval on the mean of paired differences; scipy only where there is one to compute, and its
    t quantile from ``scipy.special`` (``stdtrit``, what ``scipy.stats.t.ppf`` computes), which ``best`` and
    ``export`` import in a fraction of the time ``scipy.stats`` takes."""
    values = [float(d) for d in deltas if not math.isnan(float(d))]
    k = len(values)
    mean = sum(values) / k if k else math.nan
    if k < 2:
        return PairedInterval(mean=mean, k=k)
    from scipy.special import stdtrit

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    half = float(stdtrit(k - 1, (1 + level) / 2)) * sd / math.sqrt(k)
    return PairedInterval(mean=mean, k=k, low=mean - half, high=mean + half)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """Whether the confirmed winner beats the baseline on held-out seeds, and the sentence that says so."""

    trial: int | None
    win: bool
    interval: PairedInterval | None
    text: str
    # the second feature space's word on the winner (``search.second_opinion``): "agrees" (lower there too),
    # "disagrees" (higher there: a win becomes no win), "cannot tell" (its interval contains 0), or "none"
    opinion: str = "none"
    opinion_interval: PairedInterval | None = None


def raced(table: pd.DataFrame) -> bool:
    """Whether a confirmation summary is a race's: its race columns are there and hold something (the public
    frame, ``skipsearch.confirmations``, has them for a fixed confirmation too, empty)."""
    return "race_status" in table.columns and bool(table.race_status.notna().any())


def winner(table: pd.DataFrame) -> int | None:
    """The confirmed search trial with the lowest mean held-out FID (None before any is confirmed); in a raced
    confirmation, the race's: its claimed winner, else the one with the lowest debiased dFID still in it."""
    rest = table[table.role != "baseline"] if not table.empty else table
    if rest.empty:
        return None
    if raced(table):
        won = rest[rest.race_status == "won"]
        if not won.empty:
            return int(won.trial_number.iloc[0])
        inside = rest[~rest.race_status.str.startswith("left")]
        pool = inside if not inside.empty else rest
        return int(pool.sort_values("race_delta_fid", na_position="last").trial_number.iloc[0])
    return int(rest.sort_values("heldout_fid").trial_number.iloc[0])


def interval_of(row) -> PairedInterval:
    """The interval stored in a ``heldout_summary`` row."""
    low, high = row.delta_fid_low, row.delta_fid_high
    return PairedInterval(mean=float(row.delta_fid), k=int(row.seed_sets),
                          low=None if pd.isna(low) else float(low), high=None if pd.isna(high) else float(high))


def verdict(table: pd.DataFrame, references: Mapping[str, str] | None = None) -> Verdict:
    """Judge the winner of a ``heldout_summary`` table. ``references``: the method's further references (domain ->
    what its FID measures, ``Method.references``); the sentence adds the winner's held-out FID against each,
    beside the baseline's (they inform, and never decide the verdict)."""
    best = winner(table)
    base = table[table.role == "baseline"] if not table.empty else table
    if base.empty or best is None:
        return Verdict(trial=None, win=False, interval=None,
                       text="No confirmed search trial to compare with the baseline.")
    w, b = table[table.trial_number == best].iloc[0], base.iloc[0]
    further = "".join(_against(domain, measures, w, b) for domain, measures in (references or {}).items())
    if raced(table):
        return _raced(best, w, b, further)
    ci = interval_of(w)
    head = (f"trial {best} ({describe(w.coefficients)}). Held-out FID {w.heldout_fid:.4f} vs baseline "
            f"{b.heldout_fid:.4f}, dFID {ci.mean:+.4f}")
    if ci.low is None:
        return titled(Verdict(trial=best, win=False, interval=ci, text=(
            f"{head} on {ci.k} held-out seed set: no win is claimed, because a paired interval needs at least two "
            f"seed sets (set confirm.seed_sets to 2 or more).")))
    spread = (f"95% paired interval [{ci.low:+.4f}, {ci.high:+.4f}] over {ci.k} seed sets, lower on "
              f"{int(w.lower_on)} of them")
    if ci.high < 0:
        word, win = "lower than the baseline", True
    elif ci.low > 0:
        word, win = "higher than the baseline: NOT an improvement", False
    else:
        word, win = "not distinguishable from the baseline (the interval contains 0): no win is claimed", False
    return titled(with_opinion(Verdict(trial=best, win=win, interval=ci,
                                       text=f"{head} ({spread}) is {word}.{further}"), w))


def titled(v: Verdict) -> Verdict:
    """The verdict's sentence headed by what the trial turned out to be, decided last, after the second opinion:
    "Winner" only for a claimed win; otherwise the trial is the best the confirmation found, and the head says
    no win is claimed before anything else is read (a race that ended with every candidate clearly worse than
    the baseline still names its best)."""
    label = "Winner:" if v.win else "Best confirmed candidate, no win claimed:"
    return replace(v, text=f"{label} {v.text}")


def with_opinion(v: Verdict, w: pd.Series) -> Verdict:
    """The verdict with the second feature space's word on the winner ``w`` (a summary row), said after it. A win
    that the second space calls worse is no win: "disagrees"."""
    space = w.get("opinion_extractor")
    if space is None:  # a summary from before second opinions (no column): nothing to add
        return v
    if not space:
        why = w.get("opinion_why") or "not taken yet: `skipsearch run` the study again takes it"
        return replace(v, text=f"{v.text} Second opinion: none ({why}).")
    sets = w.get("opinion_seed_sets", 0)
    if pd.isna(w.get("opinion_delta_fid")) or pd.isna(w.get("opinion_low")):
        return replace(v, opinion="cannot tell", text=(
            f"{v.text} Second opinion in {space}: not enough of it for an interval ({int(sets or 0)} seed "
            f"set(s) of trial {v.trial} and the baseline)."))
    ci = PairedInterval(mean=float(w.opinion_delta_fid), k=int(sets), low=float(w.opinion_low),
                        high=float(w.opinion_high))
    said = (f"Second opinion in {space} (debiased FID, N={int(w.opinion_n)}, {ci.k} held-out seed sets): "
            f"dFID {ci}")
    if ci.high < 0:
        word, text = "agrees", f"{said}, lower there too: it agrees."
    elif ci.low > 0:
        word = "disagrees"
        text = (f"{said}, higher there: it DISAGREES, so no win is claimed (FID in one space can fall without "
                f"better images; look at the samples)." if v.win else f"{said}, higher there too.")
    else:
        word, text = "cannot tell", f"{said} contains 0: it cannot tell."
    return replace(v, win=v.win and word != "disagrees", opinion=word, opinion_interval=ci, text=f"{v.text} {text}")


def _raced(best: int, w: pd.Series, b: pd.Series, further: str) -> Verdict:
    """The verdict of a raced confirmation: the race's own last decision (``search.racing``), after the winner's
    held-out FID beside the baseline's on the seed sets they shared. A win is the race's claim, whose interval
    is corrected for its looks and candidates."""
    low, high = (None if pd.isna(w.race_low) else float(w.race_low)), (
        None if pd.isna(w.race_high) else float(w.race_high))
    ci = PairedInterval(mean=float(w.race_delta_fid), k=int(w.race_rounds), low=low, high=high)
    win = w.race_status == "won"
    head = (f"trial {best} ({describe(w.coefficients)}). Held-out FID {w.heldout_fid:.4f} over "
            f"{int(w.seed_sets)} seed sets vs baseline {b.heldout_fid:.4f} over {int(b.seed_sets)}.")
    return titled(with_opinion(Verdict(trial=best, win=bool(win), interval=ci,
                                       text=f"{head} {w.race_text}{further}"), w))


def _against(domain: str, measures: str, w: pd.Series, b: pd.Series) -> str:
    """The winner's held-out FID against a further reference, beside the baseline's (empty where not measured):
    "Source-domain FID (forgetting): ..."."""
    name = f"{domain}_fid"
    mine = w.get(f"heldout_{name}")
    if mine is None or pd.isna(mine):
        return ""
    return (f" {domain.capitalize()}-domain FID ({measures}): {mine:.4f} vs baseline {b[f'heldout_{name}']:.4f} "
            f"({w[f'delta_{name}']:+.4f}).")


def winner_edges(spec: Spec, table: pd.DataFrame, judged: Verdict | None = None) -> tuple[str, ...]:
    """``Method.edges`` of a claimed winner (``judged``, else the table's verdict), () without a win: a candidate
    no better than the baseline at an end of its range says nothing about what lies beyond it."""
    if table.empty:
        return ()
    judged = judged or verdict(table)
    if not judged.win or judged.trial is None:
        return ()
    row = table[table.trial_number == judged.trial].iloc[0]
    return method_for(spec.kind).edges(spec, parse_coefficients(row.coefficients))


def edge_note(edges: Sequence[str]) -> str | None:
    """What the end of a run, ``best`` and the study's note say when a claimed winner's coefficient sits at an end
    of its range."""
    if not edges:
        return None
    return (f"note: {'; '.join(edges)}. The search could not look beyond, so a better point may lie there: widen "
            f"the range to look.")
