"""``skipsearch sample``: a study's model's images, with or without a coefficient file, as its trials drew them.

Why a verb of its own: a diffusers pipeline's own ``__call__`` cannot sample every model a study can (a
class-conditional ``UNet2DModel`` needs ``class_labels``, which ``DDIMPipeline`` never passes), and a user
comparing a winner with the baseline wants the very images the trials scored. So nothing here samples: the model
is loaded by its family, the coefficients go on through the method's ``apply``, and ``generate`` (the trials' own
sampler) draws seed s with the study's sampler and conditioning (``EvalTask.labels``: label or prompt s mod count).
The images are written twice: a PNG grid to look at (``previews.grid_png``) and an ``.npz`` (key ``images``, uint8,
NHWC) that ``npz:PATH`` reads back as a reference data set.
"""

from __future__ import annotations

import io
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from skipsearch import textfiles
from skipsearch.diffusion.generation import SamplerConfig
from skipsearch.errors import SampleError, UserError
from skipsearch.exchange import coeffile
from skipsearch.fields import N_MAX, SEED_MAX
from skipsearch.models import ModelSection
from skipsearch.spec import Spec
from skipsearch.specfile import load_spec

DEFAULT_N = 64
GRID_MAX = 256  # images in the PNG grid (16 x 16); the .npz holds all of them


@dataclass(frozen=True, kw_only=True)
class Samples:
    """What ``sample`` drew and wrote. ``images`` are uint8 (N, C, H, W), as skipsearch's data sets are; the
    ``.npz`` holds them as (N, H, W, C), the layout image tools expect."""

    images: torch.Tensor
    grid: Path  # PNG of the first min(N, GRID_MAX) images
    npz: Path  # key ``images``: every image, uint8 NHWC; ``npz:<path>`` reads it as a data set
    seeds: range
    labels: tuple[int, ...] | None  # seed s's condition index (a class label, or a prompt's line); None: none
    conditions: tuple[int, ...]  # what the seeds take in turn: seed s has conditions[s % len]; () unconditional
    model_id: str
    model_hash: str
    sampler: str  # e.g. "ddim, 8 steps, 8 NFE"
    coefficients: Path | None  # None: the model as it is (the study's baseline)
    device: str
    wall_s: float

    @property
    def grid_count(self) -> int:
        return min(len(self.images), GRID_MAX)


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """Everything but the coefficients that decides the images, from a spec or a coefficient file's provenance."""

    source: str  # the file named first, for messages
    alone: bool  # a coefficient file alone: its provenance is the plan
    section: ModelSection
    sampler: SamplerConfig
    seed_start: int
    batch_size: int
    classes: Callable[[], tuple[int, ...]]  # () = the model's default conditions; asked once the model is handed
    device: str
    name: str  # output names start with it
    extractor: str
    reference: str


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def is_coefficient_file(path: Path) -> bool:
    """Whether ``path`` is a coefficient file (``format: skipsearch-coefficients/1``) rather than a spec: JSON and
    TOML files can only be coefficient files; a YAML file is read to tell."""
    if path.suffix.lower() in (".json", ".toml"):
        return True
    doc = textfiles.parse(textfiles.read_text(path, "spec or coefficient file"), "yaml", str(path))
    return isinstance(doc, dict) and doc.get("format") == coeffile.FORMAT


def _from_spec(spec: Spec, source: str, device: str | None) -> _Plan:
    from skipsearch.methods import method_for

    m = spec.metric
    return _Plan(source=source, alone=False, section=spec.model, sampler=spec.sampler.config(), seed_start=m.seed,
                 batch_size=m.batch_size, classes=lambda: tuple(method_for(spec.kind).sampling_classes(spec)),
                 device=device or spec.device, name=spec.name, extractor=m.extractor, reference=m.reference)


def _recorded_classes(cf: coeffile.CoefficientFile) -> tuple[int, ...]:
    p = cf.provenance
    return tuple(p.sampling_classes.target) if p is not None and p.sampling_classes else ()


def _from_file(path: Path, cf: coeffile.CoefficientFile, device: str | None, trust_pickles: bool) -> _Plan:
    p = cf.provenance
    if p is None:
        raise UserError(f"{path}: invalid coefficient file\n  provenance: missing; sampling from a coefficient file "
                        f"alone needs the provenance `skipsearch export` writes (it names the model and sampler), "
                        f"or give the study's spec: skipsearch sample SPEC --coefficients {path}")
    return _Plan(source=str(path), alone=True, section=p.model.section(trust_pickles), sampler=p.sampler.config(),
                 seed_start=p.search.seed_start, batch_size=p.metric.batch_size, classes=lambda: _recorded_classes(cf),
                 device=device or "cpu", name=path.stem, extractor=p.metric.extractor, reference=p.metric.reference)


def _warnings(plan: _Plan, classes: tuple[int, ...], path: Path, cf: coeffile.CoefficientFile) -> list[str]:
    """Where a coefficient file's study sampled otherwise than the spec it is applied under: allowed (the spec
    decides), but said, since such images are not the ones the file's FID was measured on."""
    p = cf.provenance
    if p is None or plan.alone:
        return []
    out = []
    if p.sampler.config() != plan.sampler:
        out.append(f"{path} was searched with sampler {_shown_sampler(p.sampler.config())}; sampling with the "
                   f"spec's {_shown_sampler(plan.sampler)}")
    recorded = _recorded_classes(cf)
    if recorded != classes:
        out.append(f"{path}'s study sampled labels {list(recorded) or 'by default'}; the spec samples "
                   f"{list(classes) or 'by default'}")
    return out


def _shown_sampler(s: SamplerConfig) -> str:
    guided = f", guidance {s.guidance_scale:g}" if s.guided else ""
    return f"{s.name}, {s.steps} steps, {s.nfe} NFE{guided}"


def _outputs(output: str | Path | None, output_dir: str | Path | None, stem: str) -> tuple[Path, Path]:
    """PREFIX.png and PREFIX.npz (``output``; a .png or .npz suffix given is taken off), or DIR/STEM.png and
    DIR/STEM.npz; checked writable before any sampling, so a long run is not lost to a typo."""
    if output is not None and output_dir is not None:
        raise UserError("give either -o/--output (a file prefix) or --output-dir, not both")
    if output is not None:
        prefix = Path(output)
        if prefix.suffix.lower() in (".png", ".npz"):
            prefix = prefix.with_suffix("")
        if not prefix.name:
            raise UserError(f"-o/--output {str(output)!r}: give a file prefix, e.g. out/samples")
    else:
        prefix = Path(output_dir or ".") / stem
    grid, npz = prefix.with_name(prefix.name + ".png"), prefix.with_name(prefix.name + ".npz")
    nearest = next(p for p in (prefix.parent, *prefix.parent.parents) if p.exists())  # the folder, or what holds it
    if not nearest.is_dir():
        raise UserError(f"cannot write {grid}: {nearest} is not a folder")
    try:  # a real file, not os.access: permissions are not the only way a folder refuses (a read-only mount)
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as err:
        raise UserError(f"cannot write {grid}: {nearest}: {err.strerror or err}") from None
    return grid, npz


def _write(images: torch.Tensor, grid: Path, npz: Path) -> None:
    import numpy as np

    from skipsearch.files import atomic_write
    from skipsearch.previews import grid_png, png_bytes

    count = min(len(images), GRID_MAX)
    png = png_bytes(grid_png(images, count=count, nrow=math.ceil(math.sqrt(count))))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images.permute(0, 2, 3, 1).contiguous().numpy())
    for path, content in ((npz, buffer.getvalue()), (grid, png)):
        try:
            atomic_write(path, lambda f, content=content: f.write(content))
        except UserError:
            raise
        except OSError as err:  # what the early check could not foresee (the folder vanished meanwhile)
            raise UserError(f"cannot write {path}: {err.strerror or err}") from None


def _check_counts(n: int, seed_start: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= N_MAX:
        raise UserError(f"n: the number of samples must be an integer from 1 to {N_MAX:,}, got {n!r}")
    if isinstance(seed_start, bool) or not isinstance(seed_start, int) or not 0 <= seed_start <= SEED_MAX - n:
        raise UserError(f"seed_start: must be an integer from 0 to {SEED_MAX - n:,} (2^31 - 1 - n), got {seed_start!r}")


def sample(spec: Spec | str | Path, coefficients: str | Path | None = None, n: int = DEFAULT_N, *,
           output: str | Path | None = None, output_dir: str | Path | None = None, seed_start: int | None = None,
           device: str | None = None, model: Any = None, trust_pickles: bool = False, progress: bool = True,
           echo: Callable[[str], None] = _stderr) -> Samples:
    """Draw ``n`` images of a study's model with its sampler, seeds and conditioning, with the coefficient file
    applied (``coefficients``) or without (the study's baseline), and write them as a PNG grid and an ``.npz``.

    ``spec``: a study spec (a file, or a ``Spec``), or a coefficient file alone (its provenance names the model,
    the sampler and the study's first seed). ``seed_start``: default the study's ``metric.seed``, so the first
    images are those of every trial's preview grid. ``output``: a file prefix (PREFIX.png, PREFIX.npz);
    ``output_dir``: a folder for NAME-samples.png/.npz; neither: the working folder. ``device``: default the
    spec's (``auto``: CUDA where visible), ``cpu`` for a coefficient file alone. ``model``: the network a study
    was handed (``skipsearch.run(spec, model=...)``), handed over again. ``trust_pickles``: your own trust in a
    pickled model file that a coefficient file names (the file's own flag is never honoured). ``echo``: where
    warnings go (a coefficient file searched with another sampler than the spec's)."""
    from skipsearch.evaluate import EvalTask, resolve_device
    from skipsearch.exchange.apply_file import apply
    from skipsearch.models import family_for, load_model, model_info
    from skipsearch.spec_checks import field_of

    started = time.perf_counter()
    coef_path = None if coefficients is None else Path(coefficients)
    if coef_path is not None and not coef_path.is_file():
        raise UserError(f"coefficient file not found: {coef_path}")
    cf = None if coef_path is None else coeffile.read(coef_path)
    if isinstance(spec, Spec):
        plan = _from_spec(spec, "spec", device)
    else:
        first = Path(spec)
        if not first.is_file():
            raise UserError(f"spec or coefficient file not found: {first}")
        if is_coefficient_file(first):
            if coef_path is not None:
                raise UserError(f"{first} is a coefficient file itself; give it alone (skipsearch sample {first}), "
                                f"or give the study's spec with --coefficients {coef_path}")
            coef_path, cf = first, coeffile.read(first)
            plan = _from_file(first, cf, device, trust_pickles)
        else:
            plan = _from_spec(load_spec(first), str(first), device)
    seed_start = plan.seed_start if seed_start is None else seed_start
    _check_counts(n, seed_start)
    if not re.fullmatch(r"cpu|auto|cuda(:\d{1,3})?", plan.device):
        raise UserError(f"device: must be cpu, cuda (or cuda:K) or auto, got {plan.device[:60]!r}")
    if model is not None:
        family_for(plan.section).hand_over(plan.section, model)
    with _trust_said(plan, coef_path, trust_pickles), field_of(plan.source, *(
            ("provenance.model", "provenance") if plan.alone else ("model", "spec"))):
        info = model_info(plan.section)
    if cf is not None and cf.provenance is not None and cf.provenance.model.hash != info.weights_hash:
        recorded = cf.provenance.model
        raise UserError(f"{coef_path} was searched on model {recorded.id} with weights {recorded.hash}, but "
                        f"{plan.source}'s model {info.model_id} has weights {info.weights_hash}; a coefficient file "
                        f"applies only to the model it was searched on")
    classes = plan.classes()
    for line in [] if cf is None else _warnings(plan, classes, coef_path, cf):
        echo(f"warning: {line}")
    stem = (plan.name if coef_path is None or plan.alone else f"{plan.name}-{coef_path.stem}") + "-samples"
    grid, npz = _outputs(output, output_dir, stem)
    dev = torch.device(resolve_device(plan.device))
    with _trust_said(plan, coef_path, trust_pickles):
        loaded = load_model(plan.section)
    loaded.denoiser.to(dev)
    seeds = range(seed_start, seed_start + n)
    task = EvalTask(model=plan.section, sampler=plan.sampler, extractor=plan.extractor, dataset=plan.reference, n=n,
                    seed_start=seed_start, batch_size=plan.batch_size, device=str(dev), classes=classes)
    labels = task.labels(seeds, loaded.info.conditions)
    conditions = tuple(classes or loaded.info.conditions)  # as ``EvalTask.labels`` takes them
    images = _generate(loaded, task, seeds, labels, dev, progress,
                       nullcontext() if coef_path is None else apply(loaded.denoiser, coef_path))
    _write(images, grid, npz)
    return Samples(images=images, grid=grid, npz=npz, seeds=seeds, labels=None if labels is None else tuple(labels),
                   conditions=conditions,
                   model_id=loaded.info.model_id, model_hash=loaded.info.weights_hash,
                   sampler=_shown_sampler(plan.sampler), coefficients=coef_path, device=str(dev),
                   wall_s=time.perf_counter() - started)


def _generate(loaded: Any, task: Any, seeds: range, labels: list[int] | None, dev: torch.device, progress: bool,
              applied: Any) -> torch.Tensor:
    """The trials' own sampler (``generate``), as ``Evaluator.sample`` calls it, under the applied coefficients.
    Unusable samples (NaN, inf) are one message: with these coefficients the model diverges."""
    from skipsearch.diffusion.generation import generate

    try:
        with applied:
            return generate(loaded.denoiser, seeds, loaded.info.shape, task.sampler, batch_size=task.batch_size,
                            device=dev, progress=progress, labels=labels, desc="sampling")
    except SampleError as err:
        raise UserError(f"sampling {loaded.info.model_id} failed: {err}") from None


@contextmanager
def _trust_said(plan: _Plan, coef_path: Path | None, trust_pickles: bool) -> Iterator[None]:
    """A model refused for want of trust, named by a coefficient file alone, says how the user gives trust here:
    the family's "set model.trust_pickles" would send them to edit a file whose own flag is never honoured."""
    try:
        yield
    except UserError as err:
        if not plan.alone or trust_pickles or "trust_pickles" not in str(err):
            raise
        raise UserError(f"{err}\n  a coefficient file never gives trust; if you trust that model file, give it "
                        f"yourself: skipsearch sample {coef_path} --trust-pickles (Python: sample(..., "
                        f"trust_pickles=True))") from None
