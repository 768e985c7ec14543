"""Everything a spec names is found and checked before a study is stored.

A typo must not lock a study name: an unknown model, extractor or data set, a missing weights file, an
unusable reference set or device is reported here, naming the spec field and the valid choices, before
``open_study`` writes anything. ``check_names`` is the cheap part (registry lookups only); ``resolve``
also gets the model's facts, checks the extractor's weights and loads the data sets (each check of one field:
``spec_checks``); the study's method checks what its own sections name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skipsearch.methods import method_for
from skipsearch.metrics import extractor_weights
from skipsearch.metrics.reported import check_extractor, check_report
from skipsearch.models import ModelInfo, model_info
from skipsearch.spec import Spec
from skipsearch.spec_checks import (below_dimension, check_registered, checked_reference, data_hash, extractor_fits,
                                     input_fits, named, sampler_fits)


def check_names(spec: Spec, source: str = "spec") -> None:
    """Registry lookups only: the model, the extractor and every data set name exist."""
    check_registered(source, "spec", ("model", spec.model), ("metric.extractor", spec.metric.extractor),
                     method_for(spec.kind).named_data(spec))


@dataclass(frozen=True)
class Resolved:
    info: ModelInfo
    reference_size: int
    warnings: list[str] = field(default_factory=list)
    # content hashes of the model's weights ("model") and of each data set, by spec field: ``search.integrity``
    hashes: dict[str, str] = field(default_factory=dict)


def content_hashes(spec: Spec, info: ModelInfo, source: str = "spec") -> dict[str, str]:
    """What the study's numbers depend on beyond the spec's values: the model's weights and every data set the
    spec names, each by content; the study records them when it is stored and compares them at each open."""
    hashes = {"model": info.weights_hash}
    for name, dataset in method_for(spec.kind).named_data(spec):
        hashes[name] = named(source, name, lambda d=dataset: data_hash(spec, d, info.resolution))
    return hashes


def resolve(spec: Spec, source: str = "spec") -> Resolved:
    """Find and check everything the spec names; warnings are returned for the caller to show."""
    from skipsearch.evaluate import resolve_device

    check_names(spec, source)
    device = named(source, "device", lambda: resolve_device(spec.device))
    named(source, "metric.extractor", lambda: extractor_fits(spec, device))
    info = named(source, "model", lambda: model_info(spec.model))
    named(source, "metric.extractor", lambda: extractor_weights(spec.metric.extractor))
    images = named(source, "metric.reference", lambda: checked_reference(spec, spec.metric.reference, info.resolution))
    size = len(images)
    warnings = [f"{what} ({n}) is larger than the {size} reference images of {spec.metric.reference}: FID is "
                f"then computed from more samples than the reference has"
                for what, n in (("metric.n", spec.metric.n), ("confirm.n", spec.confirm.n)) if n > size]
    counts = [("metric.n", spec.metric.n, "samples"), ("confirm.n", spec.confirm.n, "samples"),
              ("metric.reference", size, "images")]
    warnings += below_dimension(spec, [c for c in counts if c[0] != "confirm.n" or spec.confirm.top_k > 0])
    warnings += input_fits(spec, info, images, "metric.reference", source)
    warnings += check_report(spec.metric.report, device, info, images, source)
    opinion = spec.confirm.second_opinion.extractor
    if spec.confirm.top_k > 0 and not (spec.confirm.second_opinion.off or spec.confirm.second_opinion.auto):
        warnings += check_extractor(opinion, "confirm.second_opinion.extractor", device, info, images, source)
    warnings += named(source, "sampler", lambda: sampler_fits(spec, info))
    warnings += method_for(spec.kind).check(spec, info, source)
    return Resolved(info, size, warnings, content_hashes(spec, info, source))
