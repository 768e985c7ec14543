"""Checks of what one spec field names, each reported as an invalid spec naming that field: the model and data
sets exist, a reference holds enough images for a FID, the samples, extractor and reference are of one kind,
the sampler can drive the model, a folder is writable.

They take a spec and the model's facts, never the method: ``resolve`` runs them for the common sections, and a
method's own ``check`` for its sections, so the methods import these without importing ``resolve`` (which
calls the methods).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch

from skipsearch import data
from skipsearch.diffusion.kinds import kind_of, names_that
from skipsearch.errors import FieldError, UserError
from skipsearch.metrics import EXTRACTORS, compat
from skipsearch.metrics.digits import DIGITS_EXTRACTOR
from skipsearch.metrics.features import precision_problem
from skipsearch.metrics.inception import INCEPTION_EXTRACTOR
from skipsearch.models import ModelInfo, ModelSection, family_for
from skipsearch.precisions import split_label
from skipsearch.spec import MIN_FID_N, Spec

T = TypeVar("T")
MIN_REFERENCE = MIN_FID_N  # distinct images, as many as a FID needs samples; KID needs kid_subset_size of them
# Each network's FID feature dimension d: a covariance of fewer than d images is singular (rank <= N - 1).
FEATURE_DIMS = {DIGITS_EXTRACTOR: 128, INCEPTION_EXTRACTOR: 2048}


@contextmanager
def field_of(source: str, name: str, heading: str = "spec") -> Iterator[None]:
    """Re-raise a UserError as an invalid-spec (or -provenance) error naming the field."""
    try:
        yield
    except FieldError as err:
        raise UserError(f"{source}: invalid {heading}\n  {name}.{err.field}: {err}") from None
    except UserError as err:
        text = str(err)
        line = text if text.startswith(f"{name}.") else f"{name}: {text}"  # the message names the field already
        raise UserError(f"{source}: invalid {heading}\n  {line}") from None

def named(source: str, name: str, check: Callable[[], T]) -> T:
    """Run a check; its UserError is reported as an invalid spec field ``name``."""
    with field_of(source, name):
        return check()

def check_registered(source: str, heading: str, model: tuple[str, str | ModelSection], extractor: tuple[str, str],
                     datasets: list[tuple[str, str]]) -> None:
    """The model, the extractor and the data sets named at these (field, name) pairs exist: registry
    lookups and folder checks only. Shared by specs and by the provenance of coefficient files."""
    (model_field, section), (extractor_field, extractor_name) = model, extractor
    with field_of(source, model_field, heading):
        family_for(section).lookup(section)
    if extractor_name not in EXTRACTORS:
        raise UserError(f"{source}: invalid {heading}\n  {extractor_field}: unknown feature extractor "
                        f"{extractor_name[:60]!r}; valid: {', '.join(sorted(EXTRACTORS))}")
    for name, value in datasets:
        with field_of(source, name, heading):
            data.check_name(value)

def checked_reference(spec: Spec, dataset: str, resolution: int) -> torch.Tensor:
    """A reference's images. Fewer than a FID needs (``MIN_REFERENCE``, counting copies of one image once: they
    add nothing to a covariance) or than a KID subset is a UserError, raised here so that no study is stored,
    and no statistics cached, from a reference that cannot give a meaningful FID."""
    images = data.load(dataset, resolution=resolution)
    need = max(MIN_REFERENCE, spec.metric.kid_subset_size)
    if len(images) < need:
        raise UserError(f"{dataset} has {len(images)} image(s); a reference needs at least {need}: {MIN_REFERENCE} "
                        f"for a FID (README, \"FID at small N\") and metric.kid_subset_size "
                        f"({spec.metric.kid_subset_size}) for KID")
    distinct = data.distinct_count(images, enough=MIN_REFERENCE)
    if distinct < MIN_REFERENCE:
        raise UserError(f"{dataset} has {len(images)} images but only {distinct} distinct one(s); a reference needs "
                        f"at least {MIN_REFERENCE} different images (copies of an image add nothing to a covariance)")
    return images

def input_fits(spec: Spec, info: ModelInfo, images: torch.Tensor, name: str, source: str = "spec") -> list[str]:
    """The model's samples, ``spec.metric.extractor`` and the images at spec field ``name`` can give a FID that
    means something (``metrics.compat``): a refusal is an invalid spec naming the field, a doubt a warning. For
    a field other than ``metric.reference`` only what concerns that field is said (the rest was, there)."""
    samples = compat.Samples(channels=info.img_channels, resolution=info.resolution, latent=bool(info.noise_shape))
    found = compat.problems(samples, compat.Images.of(images), spec.metric.extractor, name)
    found = found if name == "metric.reference" else [p for p in found if p.field == name]
    refused = [f"  {p.field}: {p.text}" for p in found if p.refused]
    if refused:
        raise UserError("\n".join([f"{source}: invalid spec", *refused]))
    return [f"{p.field}: {p.text}" for p in found if not p.refused]

def below_dimension(spec: Spec, counts: list[tuple[str, int, str]]) -> list[str]:
    """At most one warning naming every (field, count, unit) below the extractor's feature dimension: FID is
    then computed from a singular covariance. Allowed (FID at 1,000 Inception samples is common), but its
    upward bias is large, so such FIDs compare only at the same N and reference."""
    network = split_label(spec.metric.extractor)[0]
    dim = FEATURE_DIMS.get(network)
    low = [f"{what} ({n} {unit})" for what, n, unit in counts if dim is not None and n < dim]
    if not low:
        return []
    listed = low[0] if len(low) == 1 else f"{', '.join(low[:-1])} and {low[-1]}"
    return [f"{listed} {'is' if len(low) == 1 else 'are'} below the {dim} dimensions of {network}'s features: a "
            f"covariance of N images has rank at most N - 1, so these FIDs are biased upward and compare only at "
            f"the same N and reference (README, \"FID at small N\")"]

def data_hash(spec: Spec, dataset: str, resolution: int) -> str:
    """A data set's content key as the study's trials record it for their reference (``ref_hash``)."""
    from skipsearch.metrics.reference import reference_key

    return reference_key(data.load(dataset, resolution=resolution), spec.metric.extractor)

def writable_folder(path: str) -> None:
    folder = Path(path).expanduser().resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{folder} cannot be created or written ({existing} is not a writable folder)")

def sampler_fits(spec: Spec, info: ModelInfo) -> list[str]:
    """The sampler can drive the model: diffusers' schedulers need a discrete-time model, guidance an
    unconditional input; EDM's sigma range beyond the model's training range is a warning."""
    s = spec.sampler
    kind = kind_of(s.name)
    if kind.drives == "scheduler" and not info.schedulers:
        raise UserError(f"name: {s.name} is a diffusers scheduler; model {info.model_id} (family {info.family}) "
                        f"samples with {' or '.join(names_that('denoiser'))}")
    if s.guidance_scale != 1.0 and not info.guidance:
        raise UserError(f"guidance_scale: model {info.model_id} has no unconditional input for classifier-free "
                        f"guidance (a text model with prompts, or prompt_embeds with negative_prompt_embeds)")
    if kind.drives == "denoiser" and info.sigma_range is not None:
        lo, hi = info.sigma_range
        if s.sigma_max > hi * 1.0001 or s.sigma_min < lo * 0.9999:
            return [f"sampler sigma range [{s.sigma_min:g}, {s.sigma_max:g}] leaves the model's trained range "
                    f"[{lo:.4g}, {hi:.4g}]; noise levels outside it are clamped to its ends"]
    return []

def extractor_fits(spec: Spec, device: str) -> None:
    """The extractor's precision can be computed on the device the study runs on (confirmation runs on this
    machine too). The spec alone refuses ``@tf32`` with ``device: cpu``; what ``auto`` becomes, or that a
    ``cuda`` GPU predates Ampere, is only known here, and would otherwise be found by the first trial's
    extractor, after the study was stored under its name."""
    problem = precision_problem(spec.metric.extractor, device)
    if problem is not None:
        shown = device if device == spec.device else f"{spec.device} (resolved to {device})"
        raise UserError(f"{spec.metric.extractor!r} on device {shown}: {problem}")
