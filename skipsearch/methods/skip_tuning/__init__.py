"""Skip-Tuning (Ma et al., ICML 2024): scale a UNet's encoder->decoder skips by rho, training-free.

Files: ``coefficients`` (the schedule families: linear, per_level, time_window), ``spec`` (the ``search``
section), ``space`` (Optuna parameters -> a schedule, and the baseline rho = 1). The hooks that scale the
skips are the model family's (``skipsearch.models``, ``skipsearch.hooks``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from skipsearch.errors import TrialError, UserError
from skipsearch.methods.method import Curve, Fidelity, Method, Profile, Removable
from skipsearch.methods.skip_tuning.schedules import SCHEDULES, _Schedule
from skipsearch.methods.skip_tuning.skip_spec import SkipTuningSpec
from skipsearch.results import HeldOut, Rung


RHO_TOLERANCE = 1e-9  # export writes each rho as computed; YAML, JSON and TOML floats read back exactly


def _sigma_grid(spec: SkipTuningSpec):
    """200 noise levels, log-spaced over the sampler's range."""
    import torch

    return torch.logspace(math.log10(spec.sampler.sigma_min), math.log10(spec.sampler.sigma_max), 200,
                          dtype=torch.float64)


class SkipTuning(Method):
    kind = "skip_tuning"
    title = "Skip-Tuning"
    bench_suites = (*Method.bench_suites, "trajectory_sharing")  # and time-window trials from the baseline
    coefficient_types = SCHEDULES

    @property
    def spec_class(self) -> type[SkipTuningSpec]:
        return SkipTuningSpec

    def suggest(self, trial: Any, spec: SkipTuningSpec, info: Any) -> _Schedule:
        from skipsearch.methods.skip_tuning import skip_space as space

        return space.suggest(trial, spec.search, info.n_levels)

    def baseline(self, spec: SkipTuningSpec, info: Any) -> dict[str, float]:
        from skipsearch.methods.skip_tuning import skip_space as space

        return space.baseline(spec.search, info.n_levels)

    def edges(self, spec: SkipTuningSpec, coefficients: _Schedule) -> tuple[str, ...]:
        from skipsearch.methods.skip_tuning import skip_space as space

        return space.at_edges(coefficients, spec.search)

    def fidelity(self, spec: SkipTuningSpec) -> Fidelity:
        from skipsearch.methods.sampled import sample_fidelity

        return sample_fidelity(spec)

    def trial(self, spec: SkipTuningSpec, coefficients: _Schedule, artifact: Path | None = None,
              progress: bool = False) -> Iterator[Rung]:
        """The ladder of sample counts with the schedule's hooks on; a pruned trial's hooks come off when
        the iterator is closed."""
        from skipsearch.methods.sampled import sampled_ladder

        yield from sampled_ladder(self.apply, spec, coefficients, progress, self._share_for(spec, coefficients))

    def batch_trials(self, spec: SkipTuningSpec) -> int | Literal["auto"]:
        return spec.search.batch_trials

    def trial_batch(self, spec: SkipTuningSpec, coefficients: Sequence[_Schedule], progress: bool = False,
                    artifacts: Sequence[Path | None] | None = None,
                    ) -> Generator[dict[int, Rung | TrialError], set[int] | None, None]:
        """K >= 1 trials in shared batches (a lone trial's hooks are ``apply``'s, several trials' ``apply_batch``)."""
        from skipsearch.methods.sampled import sampled_trials

        return sampled_trials(self.apply, self.apply_batch, spec, coefficients, progress,
                              [self._share_for(spec, c) for c in coefficients])

    def apply_batch(self, model: Any, schedules: Sequence[_Schedule], layout: Any) -> Removable:
        """Hooks scaling each sample of a shared batch by its own trial's schedule (``layout`` says which)."""
        from skipsearch.methods.skip_tuning.batched_rho import batch_rhos

        return _scaling(model, lambda points: batch_rhos(schedules, points, layout))

    def profiles(self, spec: SkipTuningSpec, coefficients: _Schedule, info: Any) -> tuple[Profile, ...]:
        """rho over the skips (0 = outermost, as the paper's rho_top -> rho_bottom); for a time window, also
        each skip's rho over the sampler's sigma range."""
        import torch

        skips = info.skips
        depth = coefficients.depth_profile(skips)
        index = tuple(float(s.index) for s in skips)
        ticks = tuple(f"{s.index} (level {s.level})" for s in skips)
        out = [Profile(title=f"rho over depth: {coefficients.family}", x_label="skip (0 = outermost)",
                       y_label="rho", curves=(Curve(label="rho", x=index, y=tuple(depth)),), x_ticks=ticks)]
        sigmas = _sigma_grid(spec)
        window = coefficients.active(sigmas)
        if window is not None:
            out.append(Profile(
                title="rho over sigma (1 outside the window)", x_label="sigma", y_label="rho", x_log=True,
                curves=tuple(Curve(label=f"skip {s.index}", x=tuple(sigmas.tolist()),
                                   y=tuple(torch.where(window, r, 1.0).tolist())) for s, r in zip(skips, depth))))
        return tuple(out)

    def heldout(self, spec: SkipTuningSpec, coefficients: _Schedule, seed_set: int) -> HeldOut:
        from skipsearch.methods.sampled import sampled_heldout

        return sampled_heldout(self.apply, spec, coefficients, seed_set, self._share_for(spec, coefficients))

    @staticmethod
    def _share_for(spec: SkipTuningSpec, coefficients: _Schedule) -> Callable[..., Any]:
        """The steps a schedule shares with the baseline's trajectory (``shared``), once the model is loaded."""
        from skipsearch.methods.skip_tuning.shared import sharing

        return lambda ev, task: sharing(spec, coefficients, ev, task)

    def apply(self, model: Any, coefficients: _Schedule, provenance: Any) -> Removable:
        """Hooks on the model's skip points (found by its family); a schedule that does not fit the model's
        skips raises before any hook is on."""
        if not isinstance(coefficients, _Schedule):
            raise UserError(f"Skip-Tuning coefficients expected, got {type(coefficients).__name__}")
        return _scaling(model, coefficients.rhos)

    def disagreements(self, coefficients: _Schedule, provenance: Any, skips: Sequence[Any] | None = None) -> list[str]:
        return skip_disagreements(coefficients, provenance, skips)

    def provenance(self, spec: SkipTuningSpec, row: Any, heldout: Any, info: Any) -> dict[str, Any]:
        return {"skips": skip_records(info, self.read_coefficients(row.coefficients_json))}


def _scaling(model: Any, rhos_for: Callable[[list[Any]], Any]) -> Removable:
    """Hooks on the model's skip points (found by its family), scaled by ``rhos_for(points)``, which raises
    (before any hook is on) where the coefficients do not fit the skips."""
    from skipsearch.hooks import SkipScaling
    from skipsearch.models import family_of

    family = family_of(model)
    points = family.skip_points(model)
    rhos = rhos_for(points)
    return SkipScaling(family.hook_root(model), points, family.sigma_of(model), rhos)


def skip_disagreements(schedule: _Schedule, provenance: Any, skips: Sequence[Any] | None) -> list[str]:
    """``provenance.skips`` against the schedule computed on the model's actual skip points (``skips``, as
    ``model_info`` gives them, the way export listed them): the same points, and the rho each is listed with is
    the one the coefficients give it. A listed rho that was edited (or coefficients edited under it) is named.
    Without the model's skips, or a file that lists none (older files), there is nothing to compare."""
    listed = getattr(provenance, "skips", None)
    if listed is None or skips is None:
        return []
    if len(listed) != len(skips):
        return [f"provenance.skips: lists {len(listed)} skip points, the model has {len(skips)}"]
    out = []
    for i, (record, skip, rho) in enumerate(zip(listed, skips, schedule.depth_profile(skips))):
        out += [f"provenance.skips[{i}].{name}: {getattr(record, name)!r}, the model's skip {i} has "
                f"{getattr(skip, name)!r}" for name in ("index", "level", "path")
                if getattr(record, name) != getattr(skip, name)]
        if not math.isclose(record.rho, rho, rel_tol=RHO_TOLERANCE, abs_tol=RHO_TOLERANCE):
            out.append(f"provenance.skips[{i}].rho: {record.rho!r}, but the coefficients give {rho!r} on that skip "
                       f"({skip.path})")
    return out


def skip_records(info: Any, schedule: _Schedule) -> list[dict[str, Any]]:
    """Every skip point of the model (``info``: its facts as the study stored them) with its module path,
    resolution level and rho (outside a time window, 1), as coefficient files list them."""
    skips = info.skips
    return [{"index": s.index, "level": s.level, "path": s.path, "rho": rho}
            for s, rho in zip(skips, schedule.depth_profile(skips))]
