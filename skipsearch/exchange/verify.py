"""From a coefficient file back to its FID: a fresh model, ``apply()`` of the file, the recorded seeds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skipsearch.errors import UserError
from skipsearch.evaluate import EvalTask, build_evaluator
from skipsearch.exchange import coeffile
from skipsearch.exchange.apply import apply
from skipsearch.exchange.provenance import Provenance
from skipsearch.models import family_for
from skipsearch.resolve import check_registered

DEFAULT_TOLERANCE = 1e-4  # relative: a reproduction on the same kind of device agrees to ~1e-7


@dataclass(frozen=True, kw_only=True)
class Verification:
    """A coefficient file's recorded search FID against the one reproduced from it now."""

    recorded_fid: float
    reproduced_fid: float
    recorded_kid: float
    reproduced_kid: float
    reference_hash_match: bool
    tolerance: float  # relative to max(1, |recorded FID|)

    @property
    def difference(self) -> float:
        return abs(self.reproduced_fid - self.recorded_fid)

    @property
    def allowed(self) -> float:
        return self.tolerance * max(1.0, abs(self.recorded_fid))

    @property
    def ok(self) -> bool:
        return self.difference <= self.allowed


def _names(p: Provenance, path: Path) -> None:
    """What the provenance names exists here: model, extractor, reference data set."""
    check_registered(str(path), "provenance", ("provenance.model", p.model.section()),
                     ("provenance.metric.extractor", p.metric.extractor),
                     [("provenance.metric.reference", p.metric.reference)])


def check(path: str | Path, model: Any = None) -> tuple[coeffile.CoefficientFile, Provenance]:
    """Everything ``verify`` checks before sampling: the file, its schema and the names it holds. ``model``:
    the network the study was handed (``skipsearch.run(spec, model=...)``), handed over again here."""
    path = Path(path)
    cf = coeffile.read(path)
    if cf.provenance is None:
        raise UserError(f"{path}: invalid coefficient file\n  provenance: missing; verify needs the provenance that "
                        f"`skipsearch export` writes")
    if model is not None:
        section = cf.provenance.model.section()
        family_for(section).hand_over(section, model)
    _names(cf.provenance, path)
    return cf, cf.provenance


def verify(path: str | Path, device: str = "cpu", tolerance: float = DEFAULT_TOLERANCE,
           model: Any = None) -> Verification:
    """Reproduce a file's recorded search FID: fresh model (or the handed-over ``model`` a study was run on),
    ``apply()`` of the file, the recorded seeds."""
    if not 0 <= tolerance < 1:
        raise UserError(f"tolerance must be in [0, 1), got {tolerance}")
    _, p = check(path, model)
    m, s = p.metric, p.search
    task = EvalTask(model=p.model.section(), sampler=p.sampler.config(), extractor=m.extractor, dataset=m.reference,
                    n=s.n, seed_start=s.seed_start, batch_size=m.batch_size, kid_subset_size=m.kid_subset_size,
                    device=device, rungs=tuple(m.rungs),
                    classes=tuple(p.sampling_classes.target) if p.sampling_classes else ())
    if task.kid_subset_size > min(task.ladder):
        raise UserError(f"{path}: invalid provenance\n  provenance.metric.kid_subset_size: "
                        f"{task.kid_subset_size} exceeds the smallest N ({min(task.ladder)})")
    ev = build_evaluator(task.model, task.extractor, task.dataset, device)
    if ev.loaded.info.weights_hash != p.model.hash:  # the pre-trained weights, for Diff-Tuning
        raise UserError(f"{path}: model {p.model.id} has weights {ev.loaded.info.weights_hash}, "
                        f"the file was recorded with {p.model.hash}")
    with apply(ev.loaded.denoiser, path):
        *_, result = ev.ladder(task, progress=True)
    return Verification(recorded_fid=s.fid, reproduced_fid=result.fid, recorded_kid=s.kid, reproduced_kid=result.kid,
                        reference_hash_match=result.ref_hash == m.reference_hash, tolerance=tolerance)
