"""Everything a spec names is found and checked before a study is stored.

A typo must not lock a study name: an unknown model, extractor or data set, a missing weights file, an
unusable reference set or device is reported here, naming the spec field and the valid choices, before
``open_study`` writes anything. ``check_names`` is the cheap part (registry lookups only); ``resolve``
also gets the model's facts, checks the extractor's weights and loads the data sets; the study's method
checks what its own sections name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from skipsearch import data
from skipsearch.errors import UserError
from skipsearch.methods import method_for
from skipsearch.metrics import EXTRACTORS, extractor_weights
from skipsearch.models import MODELS, ModelInfo, model_info
from skipsearch.spec import Spec

T = TypeVar("T")
MIN_REFERENCE = 2  # a covariance needs two images; KID needs kid_subset_size of them


@contextmanager
def field_of(source: str, name: str, heading: str = "spec") -> Iterator[None]:
    """Re-raise a UserError as an invalid-spec (or -provenance) error naming the field."""
    try:
        yield
    except UserError as err:
        raise UserError(f"{source}: invalid {heading}\n  {name}: {err}") from None


def named(source: str, name: str, check: Callable[[], T]) -> T:
    """Run a check; its UserError is reported as an invalid spec field ``name``."""
    with field_of(source, name):
        return check()


def check_registered(source: str, heading: str, model: tuple[str, str], extractor: tuple[str, str],
                     datasets: list[tuple[str, str]]) -> None:
    """The model, the extractor and the data sets named at these (field, name) pairs exist: registry
    lookups only. Shared by specs and by the provenance of coefficient files."""
    (model_field, model_name), (extractor_field, extractor_name) = model, extractor
    if model_name not in MODELS:
        raise UserError(f"{source}: invalid {heading}\n  {model_field}: unknown model {model_name[:60]!r}; "
                        f"valid: {', '.join(sorted(MODELS))}")
    if extractor_name not in EXTRACTORS:
        raise UserError(f"{source}: invalid {heading}\n  {extractor_field}: unknown feature extractor "
                        f"{extractor_name[:60]!r}; valid: {', '.join(sorted(EXTRACTORS))}")
    for name, value in datasets:
        with field_of(source, name, heading):
            data.check_name(value)


def check_names(spec: Spec, source: str = "spec") -> None:
    """Registry lookups only: the model, the extractor and every data set name exist."""
    check_registered(source, "spec", ("model.name", spec.model.name), ("metric.extractor", spec.metric.extractor),
                     method_for(spec.kind).named_data(spec))


@dataclass(frozen=True)
class Resolved:
    info: ModelInfo
    reference_size: int
    warnings: list[str] = field(default_factory=list)


def reference_size(spec: Spec, dataset: str, resolution: int) -> int:
    """How many images a reference holds; too few for a covariance or a KID subset is a UserError."""
    images = data.load(dataset, resolution=resolution)
    if len(images) < max(MIN_REFERENCE, spec.metric.kid_subset_size):
        raise UserError(f"{dataset} has {len(images)} image(s); a reference needs at least "
                        f"{max(MIN_REFERENCE, spec.metric.kid_subset_size)} (metric.kid_subset_size, and two for a "
                        f"covariance)")
    return len(images)


def writable_folder(path: str) -> None:
    folder = Path(path).expanduser().resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{folder} cannot be created or written ({existing} is not a writable folder)")


def resolve(spec: Spec, source: str = "spec") -> Resolved:
    """Find and check everything the spec names; warnings are returned for the caller to show."""
    from skipsearch.evaluate import resolve_device

    check_names(spec, source)
    named(source, "device", lambda: resolve_device(spec.device))
    info = named(source, "model.name", lambda: model_info(spec.model.name))
    named(source, "metric.extractor", lambda: extractor_weights(spec.metric.extractor))
    size = named(source, "metric.reference", lambda: reference_size(spec, spec.metric.reference, info.resolution))
    warnings = [f"{what} ({n}) is larger than the {size} reference images of {spec.metric.reference}: FID is "
                f"then computed from more samples than the reference has"
                for what, n in (("metric.n", spec.metric.n), ("confirm.n", spec.confirm.n)) if n > size]
    warnings += method_for(spec.kind).check(spec, info, source)
    return Resolved(info, size, warnings)
