"""From a coefficient file back to its FID: a fresh model, ``apply()`` of the file, the recorded seeds."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skipsearch.errors import UserError
from skipsearch.evaluate import EvalTask, build_evaluator
from skipsearch.exchange import coeffile
from skipsearch.exchange.apply_file import apply
from skipsearch.exchange.provenance import Provenance
from skipsearch.methods import method_of
from skipsearch.models import ModelSection, family_for, model_info
from skipsearch.spec_checks import check_registered

DEFAULT_TOLERANCE = 1e-4  # relative: a reproduction on the same kind of device agrees to ~1e-7


@dataclass(frozen=True, kw_only=True)
class Verification:
    """A coefficient file's recorded search FID against the one reproduced from it now; or, for a file that
    disagrees with itself, the disagreements (nothing is sampled then: which of its values would be the file's?)."""

    recorded_fid: float
    reproduced_fid: float | None  # None: not sampled (see ``disagreements``)
    recorded_kid: float
    reproduced_kid: float | None
    reference_hash_match: bool | None  # None: not sampled
    tolerance: float  # relative to max(1, |recorded FID|)
    disagreements: tuple[str, ...] = ()  # one line each, naming the field

    @property
    def difference(self) -> float:
        return math.inf if self.reproduced_fid is None else abs(self.reproduced_fid - self.recorded_fid)

    @property
    def allowed(self) -> float:
        return self.tolerance * max(1.0, abs(self.recorded_fid))

    @property
    def ok(self) -> bool:
        return not self.disagreements and self.difference <= self.allowed


@contextmanager
def _trust_said(path: Path, p: Provenance, trust_pickles: bool) -> Iterator[None]:
    """A model refused for want of trust says how the user gives it: a file's own flag is never honoured, so
    the family's "set model.trust_pickles" would send them to edit a field that changes nothing."""
    try:
        yield
    except UserError as err:
        if trust_pickles or "trust_pickles" not in str(err):
            raise
        said = (" (its provenance.model.trust_pickles says the study trusted it, which is not a reason for you to)"
                if p.model.asks_trust else "")
        raise UserError(f"{err}\n  a coefficient file never gives trust{said}; if you trust that model file, give "
                        f"it yourself: skipsearch verify {path} --trust-pickles (Python: verify(..., "
                        f"trust_pickles=True))") from None


def _names(p: Provenance, path: Path, section: ModelSection) -> None:
    """What the provenance names exists here: model, extractor, reference data set."""
    check_registered(str(path), "provenance", ("provenance.model", section),
                     ("provenance.metric.extractor", p.metric.extractor),
                     [("provenance.metric.reference", p.metric.reference)])


def _network_here(path: Path, section: ModelSection) -> None:
    """A model handed over in memory (``skipsearch.run(spec, model=pipe)``) lives only in the user's process; a
    file of its study is re-sampled only where it is handed over again, which the CLI cannot do. Said plainly,
    before the family's own lookup would word it as a spec's mistake."""
    name = family_for(section).missing_network(section)
    if name is not None:
        raise UserError(f"model {section.model_id!r} was handed over in memory; verify it from Python: "
                        f"skipsearch.verify({str(path)!r}, model={name})")


def check(path: str | Path, model: Any = None,
          trust_pickles: bool = False) -> tuple[coeffile.CoefficientFile, Provenance]:
    """Everything ``verify`` checks before sampling: the file, its schema and the names it holds. ``model``:
    the network the study was handed (``skipsearch.run(spec, model=...)``), handed over again here.
    ``trust_pickles``: the user's own trust in the pickled model file the provenance names; the file's
    ``trust_pickles`` is switched off before the model is looked up (``ModelRef.section``)."""
    path = Path(path)
    cf = coeffile.read(path)
    if cf.provenance is None:
        raise UserError(f"{path}: invalid coefficient file\n  provenance: missing; verify needs the provenance that "
                        f"`skipsearch export` writes")
    section = cf.provenance.model.section(trust_pickles)
    if model is not None:
        family_for(section).hand_over(section, model)
    _network_here(path, section)
    with _trust_said(path, cf.provenance, trust_pickles):
        _names(cf.provenance, path, section)
    return cf, cf.provenance


def verify(path: str | Path, device: str = "cpu", tolerance: float = DEFAULT_TOLERANCE,
           model: Any = None, trust_pickles: bool = False) -> Verification:
    """Reproduce a file's recorded search FID: fresh model (or the handed-over ``model`` a study was run on),
    ``apply()`` of the file, the recorded seeds. A file that disagrees with itself (its coefficients against
    what its provenance records of them) is not sampled: ``disagreements`` says where. ``trust_pickles``: as
    in ``check``; only the caller gives trust."""
    if not 0 <= tolerance < 1:
        raise UserError(f"tolerance must be in [0, 1), got {tolerance}")
    path = Path(path)
    cf, p = check(path, model, trust_pickles)
    section = p.model.section(trust_pickles)
    m, s = p.metric, p.search
    task = EvalTask(model=section, sampler=p.sampler.config(), extractor=m.extractor, dataset=m.reference,
                    n=s.n, seed_start=s.seed_start, batch_size=m.batch_size, kid_subset_size=m.kid_subset_size,
                    device=device, rungs=tuple(m.rungs),
                    classes=tuple(p.sampling_classes.target) if p.sampling_classes else ())
    if task.kid_subset_size > min(task.ladder):
        raise UserError(f"{path}: invalid provenance\n  provenance.metric.kid_subset_size: "
                        f"{task.kid_subset_size} exceeds the smallest N ({min(task.ladder)})")
    with _trust_said(path, p, trust_pickles):
        skips = model_info(section).skips if p.skips is not None else None  # the model's facts, not its network
    disagree = method_of(cf.coefficients).disagreements(cf.coefficients, p, skips)
    if disagree:
        return Verification(recorded_fid=s.fid, reproduced_fid=None, recorded_kid=s.kid, reproduced_kid=None,
                            reference_hash_match=None, tolerance=tolerance, disagreements=tuple(disagree))
    with _trust_said(path, p, trust_pickles):
        ev = build_evaluator(task.model, task.extractor, task.dataset, device)
    if ev.loaded.info.weights_hash != p.model.hash:  # the pre-trained weights, for Diff-Tuning
        raise UserError(f"{path}: model {p.model.id} has weights {ev.loaded.info.weights_hash}, "
                        f"the file was recorded with {p.model.hash}")
    with apply(ev.loaded.denoiser, path):
        *_, result = ev.ladder(task, progress=True)
    return Verification(recorded_fid=s.fid, reproduced_fid=result.fid, recorded_kid=s.kid, reproduced_kid=result.kid,
                        reference_hash_match=result.ref_hash == m.reference_hash, tolerance=tolerance)
