"""Diff-Tuning (Zhong et al., NeurIPS 2024): fine-tune a pre-trained model on a new domain, searching the
weights of reconsolidation (new data, high noise), retention (a knowledge bank, low noise), the bank's
share of a batch and the retention loss's weight.

Files: ``diff_spec`` (the ``search`` and ``finetune`` sections), ``recipe`` (the searched recipe),
``recipe_space``, ``noise`` (noise-level sampling and the loss), ``bank``, ``training`` (the loop),
``finetune_trial`` and ``finetune_task`` (a trial and its scores), ``source_domain`` (the reference its trials
are also scored against), ``tuned_weights`` (loading the fine-tuned weights). ``skipsearch bench`` times it in
``bench/finetuning.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skipsearch.errors import UserError
from skipsearch.methods.method import Curve, Fidelity, Method, Profile, Removable
from skipsearch.methods.diff_tuning.diff_spec import DiffTuningSpec
from skipsearch.methods.diff_tuning.recipe import DiffTuningWeights
from skipsearch.methods.diff_tuning.source_domain import MEASURES, SOURCE
from skipsearch.results import HeldOut, Rung

if TYPE_CHECKING:
    from torch import nn

PRUNE_AFTER = 5  # finished trials before the median rule stops any
# the spec's ``search.objectives`` -> the trials frame's columns, and how a reader names them
OBJECTIVES = {"target_fid": ("fid", "target FID"), "source_fid": (f"{SOURCE}_fid", "source FID")}


class DiffTuning(Method):
    kind = "diff_tuning"
    title = "Diff-Tuning"
    bench_suites = ("finetuning",)  # training steps/s against a bare loop; its trials run in-process only
    coefficient_types = (DiffTuningWeights,)
    # its reference's numbers (the source domain's) and its extras, as the public frames show them
    columns = {"trials": {f"{SOURCE}_fid": "float64", f"{SOURCE}_kid": "float64", "weights_path": "str",
                          "weights_hash": "str"},
               "confirmations": {f"{SOURCE}_fid": "float64", f"{SOURCE}_kid": "float64", "train_seed": "Int64"},
               "summary": {f"search_{SOURCE}_fid": "float64", f"heldout_{SOURCE}_fid": "float64",
                           f"heldout_{SOURCE}_fid_std": "float64", f"delta_{SOURCE}_fid": "float64"}}

    @property
    def spec_class(self) -> type[DiffTuningSpec]:
        return DiffTuningSpec

    def named_data(self, spec: DiffTuningSpec) -> list[tuple[str, str]]:
        return [*super().named_data(spec), ("finetune.data", spec.finetune.data),
                ("finetune.source_reference", spec.finetune.source_reference)]

    def reference_fields(self, spec: DiffTuningSpec) -> dict[str, str]:
        return {SOURCE: "finetune.source_reference"}

    def check(self, spec: DiffTuningSpec, info: Any, source: str) -> list[str]:
        """The source reference and the new data load, hold enough images of the model's kind (channels), and the
        weights folder is writable."""
        from skipsearch import data
        from skipsearch.spec_checks import below_dimension, checked_reference, input_fits, named, writable_folder

        f = spec.finetune
        source_images = named(source, "finetune.source_reference",
                              lambda: checked_reference(spec, f.source_reference, info.resolution))
        size = len(source_images)
        images = named(source, "finetune.data", lambda: data.load(f.data, resolution=info.resolution))
        fits = [*input_fits(spec, info, source_images, "finetune.source_reference", source),
                *input_fits(spec, info, images, "finetune.data", source)]
        if f.n_images is not None and f.n_images > len(images):
            raise UserError(f"{source}: invalid spec\n  finetune.n_images: {f.n_images} images asked for, but "
                            f"{f.data} has only {len(images)}")
        named(source, "finetune.weights_dir", lambda: writable_folder(f.weights_dir))
        named(source, "name", lambda: self.artifact(spec, 0))  # inside weights_dir, before the study is stored
        return [*fits, *below_dimension(spec, [("finetune.source_reference", size, "images")])]

    def suggest(self, trial: Any, spec: DiffTuningSpec, info: Any) -> DiffTuningWeights:
        from skipsearch.methods.diff_tuning import recipe_space as space

        return space.suggest(trial, spec)

    def baseline(self, spec: DiffTuningSpec, info: Any) -> dict[str, float]:
        from skipsearch.methods.diff_tuning import recipe_space as space

        return space.baseline(spec)

    def fidelity(self, spec: DiffTuningSpec) -> Fidelity:
        """Target FID at ``finetune.eval_steps``: the median rule there (Optuna cannot prune two objectives)."""
        f = spec.finetune
        if not f.eval_steps or len(self.objectives(spec)) > 1:
            return Fidelity(unit="steps", top=f.steps)
        return Fidelity(rule="median", unit="steps", first=f.eval_steps[0], top=f.steps, startup=PRUNE_AFTER)

    def objectives(self, spec: DiffTuningSpec) -> tuple[str, ...]:
        """``search.objectives`` as the trials frame's columns: ``target_fid`` is ``fid``, ``source_fid`` itself."""
        return tuple(OBJECTIVES[o][0] for o in spec.search.objectives)

    def metric_names(self, spec: DiffTuningSpec) -> list[str]:
        return [OBJECTIVES[o][1] for o in spec.search.objectives]

    def references(self, spec: DiffTuningSpec) -> dict[str, str]:
        """Every trial is also scored against ``finetune.source_reference``: what fine-tuning forgot."""
        return {SOURCE: MEASURES}

    def profiles(self, spec: DiffTuningSpec, coefficients: DiffTuningWeights, info: Any) -> tuple[Profile, ...]:
        """The noise-level densities of the two halves of a batch, over the quantile u (linear in ln sigma):
        new data ~ (s+1) u^s (reconsolidation), bank ~ (s'+1) (1-u)^s' (retention), with the bank's share r."""
        w = coefficients
        u = tuple(i / 100 for i in range(101))
        new = Curve(label=f"new data, share {1 - w.r:.2f}", x=u, y=tuple((w.s + 1) * x ** w.s for x in u))
        bank = Curve(label=f"knowledge bank, share {w.r:.2f}, loss weight {w.lam:.3g}", x=u,
                     y=tuple((w.s_prime + 1) * (1 - x) ** w.s_prime for x in u))
        return (Profile(title="noise-level weighting", x_label="noise quantile u (0 = sigma_min, 1 = sigma_max)",
                        y_label="density", curves=(new, bank) if w.r > 0 else (new,)),)

    def trial(self, spec: DiffTuningSpec, coefficients: DiffTuningWeights, artifact: Path | None = None,
              progress: bool = False) -> Iterator[Rung]:
        from skipsearch.methods.diff_tuning.finetune_task import finetune_task
        from skipsearch.methods.diff_tuning.finetune_trial import finetune_ladder

        f = spec.finetune
        task = finetune_task(spec, n=spec.metric.n, seed_start=spec.metric.seed, train_seed=f.seed,
                             eval_steps=f.eval_steps)
        return finetune_ladder(task, coefficients, artifact, progress)

    def artifact(self, spec: DiffTuningSpec, number: int) -> Path:
        """Absolute, so the database's reference holds from any working directory. The study's name is a plain
        file name (the spec checks it); as a second guard, for a spec changed past validation (``model_copy``),
        the file must lie in the name's own folder under ``finetune.weights_dir``, compared lexically (a folder
        there that the user made a symlink stays theirs to make)."""
        folder = Path(os.path.abspath(Path(spec.finetune.weights_dir).expanduser()))
        path = Path(os.path.abspath(folder / spec.name / f"trial-{number:04d}.pt"))
        if path.parent.parent != folder or path.parent.name != spec.name:
            raise UserError(f"the study name {spec.name!r} would put a trial's weights at {path}, outside its own "
                            f"folder in finetune.weights_dir ({folder}); a study name must be a plain file name")
        return path.resolve()

    def heldout(self, spec: DiffTuningSpec, coefficients: DiffTuningWeights, seed_set: int) -> HeldOut:
        """Fine-tuned again with a new training seed, as well as scored on new sampling seeds: a recipe chosen
        on one training run can be lucky, just as coefficients chosen on one seed set can."""
        from skipsearch.methods.diff_tuning.finetune_task import finetune_task
        from skipsearch.methods.diff_tuning.finetune_trial import finetune_ladder
        from skipsearch.methods.sampled import heldout_seed_start

        train_seed = spec.finetune.seed + 1 + seed_set
        task = finetune_task(spec, n=spec.confirm.n, seed_start=heldout_seed_start(spec, seed_set),
                             train_seed=train_seed, heldout=True)
        *_, last = finetune_ladder(task, coefficients)
        return HeldOut(score=last.score, wall_s=last.wall_s, references=last.references,
                       extras={"train_seed": train_seed})

    def disagreements(self, coefficients: DiffTuningWeights, provenance: Any, skips: Any = None) -> list[str]:
        """The recipe in ``coefficients`` against the one its weights were trained with (``provenance.weights
        .recipe``): an edited ``steps`` or ``lr`` would describe weights that were never trained that way."""
        weights = getattr(provenance, "weights", None)
        if weights is None or weights.recipe is None or not isinstance(coefficients, DiffTuningWeights):
            return []
        mine = coefficients.model_dump(exclude={"family"})
        out = [f"coefficients.{name}: {mine[name]!r}, but the weights were trained with {name} = "
               f"{weights.recipe.get(name)!r} (provenance.weights.recipe.{name})"
               for name in mine if not _same(mine[name], weights.recipe.get(name))]
        out += [f"provenance.weights.recipe.{name}: not a field of Diff-Tuning coefficients"
                for name in weights.recipe if name not in mine]
        return out

    def sampling_classes(self, spec: DiffTuningSpec) -> tuple[int, ...]:
        """The target FID's labels: the new data's classes (a class-conditional model), as the trials sample."""
        from skipsearch.methods.diff_tuning.finetune_trial import class_plan
        from skipsearch.models import model_info

        return class_plan(model_info(spec.model), spec.finetune.data)[0]

    def apply(self, model: nn.Module, coefficients: DiffTuningWeights, provenance: Any) -> Removable:
        from skipsearch.methods.diff_tuning.tuned_weights import LoadedWeights

        if provenance is None or provenance.weights is None:
            raise UserError("Diff-Tuning weights are applied from a coefficient file that names its weights file "
                            "(provenance.weights)")
        return LoadedWeights(model, Path(provenance.weights.path), provenance.weights.sha256_16)

    def header(self, spec: DiffTuningSpec) -> str:
        f = spec.finetune
        return (f"Diff-Tuning: fine-tuned on {f.n_images or 'all'} images of {f.data}; the baseline is plain "
                f"fine-tuning (s = 0, r = 0) for {f.steps} steps at lr {f.lr:g}; source FID vs "
                f"{f.source_reference} measures forgetting")

    def provenance(self, spec: DiffTuningSpec, row: Any, heldout: Mapping[str, Any], info: Any) -> dict[str, Any]:
        """The fine-tuned weights (path and hash), the recipe's data and budget, the labels FIDs were sampled
        with (class-conditional models), and the forgetting (source) FID."""
        from skipsearch.methods.diff_tuning.finetune_trial import class_plan

        f = spec.finetune
        target, source = class_plan(info, f.data)
        recipe = self.read_coefficients(row.coefficients_json).model_dump(mode="json", exclude={"family"})
        path = _given(row, "weights_path")
        weights = None if not path else {"path": str(Path(path).resolve()), "sha256_16": _given(row, "weights_hash"),
                                         "recipe": recipe}
        return {"weights": weights, "finetune": f.model_dump(mode="json"),
                "sampling_classes": {"target": list(target), "source": list(source)},
                "source": {"reference": f.source_reference, "fid": _given(row, f"{SOURCE}_fid"),
                           "kid": _given(row, f"{SOURCE}_kid"),
                           "heldout_fid": _given(heldout, f"heldout_{SOURCE}_fid")}}

    def heldout_provenance(self, spec: DiffTuningSpec, row: Any) -> dict[str, Any]:
        """A held-out evaluation was fine-tuned again: its training seed, and its source FID."""
        seed = _given(row, "train_seed")
        return {} if seed is None else {"train_seed": int(seed), "source_fid": _given(row, f"{SOURCE}_fid")}

    def provenance_lines(self, provenance: Any) -> tuple[list[str], list[str]]:
        source, weights = getattr(provenance, "source", None), getattr(provenance, "weights", None)
        evidence = ([] if source is None or source.fid is None
                    else [f"source FID (forgetting, vs {source.reference}): {source.fid:.4f}"])
        files = [] if weights is None else [f"fine-tuned weights: {weights.path} (sha256 {weights.sha256_16})"]
        return evidence, files


def _given(row: Any, name: str) -> Any:
    """A frame row's (or a mapping's) value of ``name`` as a coefficient file holds it: None where the row has no
    such column or the value is missing (NaN, None, <NA>); a numpy scalar as Python's."""
    import pandas as pd  # only readers ask (export, best), with pandas loaded already

    value = row.get(name) if hasattr(row, "get") else getattr(row, name, None)
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _same(value: float, recorded: float | None) -> bool:
    """Equal up to the last bits a text format may round (a YAML, JSON or TOML float reads back exactly)."""
    return recorded is not None and math.isclose(value, recorded, rel_tol=1e-12, abs_tol=0.0)
