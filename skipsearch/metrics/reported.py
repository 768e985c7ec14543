"""A spec's ``metric.report`` checked before a study is stored: every metric and extractor it names exists, the
extractor's weights are found, its precision runs on the study's device, and it can read the model's samples.

The spec itself only checks the shape of each entry (parsing a spec loads neither torch nor an extractor); this
is the registry half, run by ``resolve`` with the other name checks, so a typo is one message naming the field
(``metric.report[1].extractor``) and the valid choices, before anything is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from skipsearch.errors import UserError
from skipsearch.metrics import compat
from skipsearch.metrics.features import EXTRACTORS, extractor_weights, precision_problem
from skipsearch.metrics.registry import METRICS

if TYPE_CHECKING:
    from skipsearch.models import ModelInfo
    from skipsearch.spec import ReportEntry


def check_report(entries: Sequence[ReportEntry], device: str, info: ModelInfo, images: torch.Tensor,
                 source: str = "spec") -> list[str]:
    """Refuse an entry that cannot be computed, naming its field; return the warnings (an extractor that
    resizes the samples). ``info``: the model whose samples are scored; ``images``: the reference's. An entry
    without an extractor uses ``metric.extractor``, which is checked under that name."""
    warnings: list[str] = []
    for i, (name, extractor) in enumerate((e.metric, e.extractor) for e in entries):
        if name not in METRICS:
            _refuse(source, f"metric.report[{i}].metric", f"unknown metric {name[:60]!r}; known: {', '.join(METRICS)}")
        if extractor is not None:
            warnings += check_extractor(extractor, f"metric.report[{i}].extractor", device, info, images, source)
    return warnings


def extractor_problem(extractor: str, device: str, info: ModelInfo,
                      images: torch.Tensor) -> tuple[str | None, list[str]]:
    """Why ``extractor`` cannot score this model's samples against ``images`` on ``device`` (None: it can), and
    the warnings it gives where it can (an extractor that resizes the samples)."""
    if extractor not in EXTRACTORS:
        return f"unknown feature extractor {extractor[:60]!r}; valid: {', '.join(sorted(EXTRACTORS))}", []
    if (problem := precision_problem(extractor, device)) is not None:
        return f"{extractor!r} on device {device}: {problem}", []
    try:
        extractor_weights(extractor)
    except UserError as err:
        return str(err), []
    samples = compat.Samples(channels=info.img_channels, resolution=info.resolution, latent=bool(info.noise_shape))
    warnings = []
    for found in compat.problems(samples, compat.Images.of(images), extractor):
        if found.field != "metric.extractor":  # the samples against the reference: said for metric.reference
            continue
        if found.refused:
            return found.text, []
        warnings.append(found.text)
    return None, warnings


def check_extractor(extractor: str, field: str, device: str, info: ModelInfo, images: torch.Tensor,
                    source: str = "spec") -> list[str]:
    """Refuse, naming ``field``, an extractor that cannot score the model's samples (``extractor_problem``);
    its warnings, prefixed by the field."""
    problem, warnings = extractor_problem(extractor, device, info, images)
    if problem is not None:
        _refuse(source, field, problem)
    return [f"{field}: {w}" for w in warnings]


def _refuse(source: str, field: str, text: str) -> None:
    raise UserError(f"{source}: invalid spec\n  {field}: {text}")
