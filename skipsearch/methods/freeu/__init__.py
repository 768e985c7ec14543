"""FreeU (Si et al., CVPR 2024), training-free: re-weight the first two up stages of a diffusers UNet.

In each of those stages (``up_blocks.0`` and ``up_blocks.1``, the deepest first) diffusers' ``apply_freeu``
multiplies the first half of the backbone feature channels by ``b1`` (``b2``), and multiplies the low-frequency
part of each skip feature, in Fourier space, by ``s1`` (``s2``). It is not a uniform rho on a skip, as
Skip-Tuning's is: the skip's high frequencies pass unchanged, and the backbone is scaled too. skipsearch switches
it with diffusers' own ``enable_freeu``/``disable_freeu``, so only models whose UNet has them qualify (diffusers'
``UNet2DConditionModel``, ``ModelInfo.freeu``).

The baseline is FreeU off. b = s = 1 is not the identity bit for bit in diffusers (the FFT round trip of the skip
features changes their last bits), so coefficients with all four factors exactly 1 mean "off": applying them
switches nothing on (``coefficients.FreeU.off``). With ``search.combine_skip`` a Skip-Tuning schedule is searched
too and applied together with FreeU (``SkipFreeU``), all or nothing.

Files: ``coefficients`` (``FreeU``, ``SkipFreeU``), ``spec`` (the ``search`` section), ``space`` (Optuna
parameters -> coefficients, and the baseline).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from skipsearch.errors import UserError
from skipsearch.methods.method import Curve, Fidelity, Method, Profile, Removable
from skipsearch.methods.freeu.factors import FREEU_TYPES, KEYS, FreeU, SkipFreeU
from skipsearch.methods.freeu.freeu_spec import FreeUSpec
from skipsearch.methods.skip_tuning import SkipTuning, skip_disagreements, skip_records
from skipsearch.results import HeldOut, Rung

STAGES = ("up_blocks.0", "up_blocks.1")  # where diffusers applies FreeU (resolution_idx 0 and 1)
_ACTIVE: weakref.WeakKeyDictionary[Any, FreeUSwitch] = weakref.WeakKeyDictionary()


def active_on(target: Any) -> FreeUSwitch | None:
    """The FreeU switch skipsearch holds on a UNet, if any."""
    return _ACTIVE.get(target)


class FreeUSwitch:
    """FreeU on one UNet (the family's ``freeu_target``); a context manager and a ``remove()``. One per UNet at
    a time, and never over a FreeU the user switched on. ``FreeU.off()`` holds the UNet without switching
    anything on. Removing disables FreeU and takes away the attributes ``enable_freeu`` added."""

    def __init__(self, target: Any, coefficients: FreeU):
        if target in _ACTIVE:
            raise UserError("FreeU coefficients are already applied to this model; remove them first")
        blocks = list(getattr(target, "up_blocks", ()))
        if any(getattr(b, k, None) is not None for b in blocks for k in KEYS):
            raise UserError(f"FreeU is already enabled on this {type(target).__name__} (enable_freeu was called on "
                            f"it); call its disable_freeu() first, so that the searched values are the only ones")
        self.target, self.on = target, not coefficients.is_identity()
        self._added = [(b, k) for b in blocks for k in KEYS if not hasattr(b, k)]
        if self.on:
            try:
                target.enable_freeu(**coefficients.factors())
            except BaseException:
                self._switch_off()
                raise
        _ACTIVE[target] = self

    def _switch_off(self) -> None:
        try:
            self.target.disable_freeu()
        finally:
            for block, key in self._added:
                if getattr(block, key, None) is None and key in vars(block):
                    delattr(block, key)

    def remove(self) -> None:
        if self.target is None:
            return
        try:
            if self.on:
                self._switch_off()
        finally:
            _ACTIVE.pop(self.target, None)
            self.target = None

    def __enter__(self) -> FreeUSwitch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class Together:
    """Several handles as one: removed last first, each even if another's removal fails."""

    def __init__(self, parts: Sequence[Removable]):
        self.parts = list(parts)

    def remove(self) -> None:
        parts, self.parts, error = self.parts, [], None
        for part in reversed(parts):
            try:
                part.remove()
            except BaseException as err:  # the others still come off; the first error is raised after
                error = error or err
        if error is not None:
            raise error

    def __enter__(self) -> Together:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class FreeUMethod(Method):
    kind = "freeu"
    title = "FreeU"
    coefficient_types = FREEU_TYPES

    @property
    def spec_class(self) -> type[FreeUSpec]:
        return FreeUSpec

    def check(self, spec: FreeUSpec, info: Any, source: str) -> list[str]:
        """The model must have diffusers' FreeU switch (a UNet2DConditionModel)."""
        if not info.freeu:
            raise UserError(f"{source}: invalid spec\n  model: FreeU needs a diffusers UNet2DConditionModel "
                            f"(model.family: diffusers); {spec.model.model_id} has no enable_freeu")
        return []

    def suggest(self, trial: Any, spec: FreeUSpec, info: Any) -> FreeU | SkipFreeU:
        from skipsearch.methods.freeu import freeu_space as space

        return space.suggest(trial, spec.search, info.n_levels)

    def baseline(self, spec: FreeUSpec, info: Any) -> dict[str, float]:
        from skipsearch.methods.freeu import freeu_space as space

        return space.baseline(spec.search, info.n_levels)

    def fidelity(self, spec: FreeUSpec) -> Fidelity:
        from skipsearch.methods.sampled import sample_fidelity

        return sample_fidelity(spec)

    def trial(self, spec: FreeUSpec, coefficients: FreeU | SkipFreeU, artifact: Path | None = None,
              progress: bool = False) -> Iterator[Rung]:
        """The ladder of sample counts with FreeU on (and the skip hooks, combined); a pruned trial's FreeU is
        switched off when the iterator is closed."""
        from skipsearch.methods.sampled import sampled_ladder

        yield from sampled_ladder(self.apply, spec, coefficients, progress)

    def heldout(self, spec: FreeUSpec, coefficients: FreeU | SkipFreeU, seed_set: int) -> HeldOut:
        from skipsearch.methods.sampled import sampled_heldout

        return sampled_heldout(self.apply, spec, coefficients, seed_set)

    def apply(self, model: Any, coefficients: FreeU | SkipFreeU, provenance: Any) -> Removable:
        """FreeU through diffusers' ``enable_freeu`` on the model's UNet (a model without it raises before
        anything changes); combined, the Skip-Tuning hooks first, taken off again if FreeU then fails."""
        from skipsearch.models import family_of

        if not isinstance(coefficients, FREEU_TYPES):
            raise UserError(f"FreeU coefficients expected, got {type(coefficients).__name__}")
        target = family_of(model).freeu_target(model)  # a UserError for models without FreeU
        if isinstance(coefficients, FreeU):
            return FreeUSwitch(target, coefficients)
        skip = SkipTuning().apply(model, coefficients.skip, provenance)
        try:
            freeu = FreeUSwitch(target, coefficients.freeu)
        except BaseException:
            skip.remove()
            raise
        return Together((skip, freeu))

    def profiles(self, spec: FreeUSpec, coefficients: FreeU | SkipFreeU, info: Any) -> tuple[Profile, ...]:
        """b and s over the two up stages (1 where FreeU is off); combined, Skip-Tuning's rho profiles too."""
        freeu = coefficients.freeu if isinstance(coefficients, SkipFreeU) else coefficients
        stages = (0.0, 1.0)
        title = "FreeU factors per up stage" + (" (FreeU off)" if freeu.is_identity() else "")
        out = [Profile(title=title, x_label="up stage (1 = deepest)", y_label="factor",
                       curves=(Curve(label="b (backbone channels)", x=stages, y=(freeu.b1, freeu.b2)),
                               Curve(label="s (skip, low frequencies)", x=stages, y=(freeu.s1, freeu.s2))),
                       x_ticks=tuple(f"stage {i + 1} ({s})" for i, s in enumerate(STAGES)))]
        if isinstance(coefficients, SkipFreeU):
            out += SkipTuning().profiles(spec, coefficients.skip, info)  # its sampler's sigma range
        return tuple(out)

    def display_name(self, spec: FreeUSpec) -> str:
        """Combined, the study searches Skip-Tuning's rho too, and is named for both."""
        return f"{self.title} + {SkipTuning.title}" if spec.search.combine_skip else self.title

    def header(self, spec: FreeUSpec) -> str:
        s = spec.search
        line = (f"{self.display_name(spec)}: b1, b2 in [{s.b_range[0]:g}, {s.b_range[1]:g}], s1, s2 in "
                f"[{s.s_range[0]:g}, {s.s_range[1]:g}]; the baseline is FreeU off (b = s = 1 taken as off)")
        if s.combine_skip:
            line += f", with a Skip-Tuning {s.skip.family} schedule (rho in {list(s.skip.rho_range)}, baseline 1)"
        return line

    def disagreements(self, coefficients: FreeU | SkipFreeU, provenance: Any,
                      skips: Sequence[Any] | None = None) -> list[str]:
        """Combined: the Skip-Tuning half against ``provenance.skips``, as Skip-Tuning's files are checked."""
        return skip_disagreements(coefficients.skip, provenance, skips) if isinstance(coefficients, SkipFreeU) else []

    def provenance(self, spec: FreeUSpec, row: Any, heldout: Any, info: Any) -> dict[str, Any]:
        """Combined: every skip point with its rho, as Skip-Tuning's files have them. FreeU's four factors are
        the coefficients themselves; the provenance schema has no field of its own for them."""
        coefficients = self.read_coefficients(row.coefficients_json)
        return {"skips": skip_records(info, coefficients.skip)} if isinstance(coefficients, SkipFreeU) else {}
