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
    samples = compat.Samples(channels=info.img_channels, resolution=info.resolution, latent=bool(info.noise_shape))
    reference = compat.Images.of(images)
    warnings: list[str] = []
    for i, (name, extractor) in enumerate((e.metric, e.extractor) for e in entries):
        if name not in METRICS:
            _refuse(source, f"metric.report[{i}].metric", f"unknown metric {name[:60]!r}; known: {', '.join(METRICS)}")
        if extractor is None:
            continue
        field = f"metric.report[{i}].extractor"
        if extractor not in EXTRACTORS:
            valid = ", ".join(sorted(EXTRACTORS))
            _refuse(source, field, f"unknown feature extractor {extractor[:60]!r}; valid: {valid}")
        if (problem := precision_problem(extractor, device)) is not None:
            _refuse(source, field, f"{extractor!r} on device {device}: {problem}")
        try:
            extractor_weights(extractor)
        except UserError as err:
            _refuse(source, field, str(err))
        for found in compat.problems(samples, reference, extractor):
            if found.field != "metric.extractor":  # the samples against the reference: said for metric.reference
                continue
            if found.refused:
                _refuse(source, field, found.text)
            warnings.append(f"{field}: {found.text}")
    return warnings


def _refuse(source: str, field: str, text: str) -> None:
    raise UserError(f"{source}: invalid spec\n  {field}: {text}")
