"""A model's facts (``ModelInfo``: its skips, channels, resolution, conditions, ...) as plain data, and their JSON
form as a study stores them.

These live outside ``skipsearch.models`` because readers need them without the families: ``best``, ``export`` and
``report`` of a study read its model's facts from the database (``storage.facts``), never from the model. A model
handed over in memory (``skipsearch.run(spec, model=pipe)``) is gone once its process ends; a folder may have
moved. This module imports only the standard library, so reading facts costs no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SkipInfo:
    """A skip as stored and exported: its index (0 = outermost), resolution level (0 = highest) and the
    path of the module that consumes it."""

    index: int
    level: int
    path: str


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What a stored result needs to name the model it came from, and what a search space needs of it."""

    model_id: str
    family: str
    weights_hash: str
    img_channels: int
    resolution: int
    skips: tuple[SkipInfo, ...]
    reference: str  # the data set the model was trained on, the FID reference by default
    num_classes: int = 0  # > 0: class-conditional, with label num_classes as the null (unconditional) label
    classes: tuple[int, ...] = ()  # the labels it was trained on (a conditional model's source classes)
    conditions: tuple[int, ...] = ()  # the conditions a trial samples by default (seed s: conditions[s % len])
    noise_shape: tuple[int, ...] = ()  # the sampler's state per sample (a latent model's latents); () = image
    schedulers: bool = False  # whether diffusers' schedulers can drive it (sampler.name ddim, ...)
    guidance: bool = False  # whether it has an unconditional input for classifier-free guidance
    sigma_range: tuple[float, float] | None = None  # the noise levels it was trained on, where finite
    freeu: bool = False  # whether diffusers' FreeU can be switched on it

    @property
    def n_skips(self) -> int:
        return len(self.skips)

    @property
    def n_levels(self) -> int:
        return len({s.level for s in self.skips})

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample's initial noise."""
        return self.noise_shape or (self.img_channels, self.resolution, self.resolution)


def to_json(info: ModelInfo) -> str:
    """The facts as one JSON object (keys sorted, so that equal facts are equal text)."""
    return json.dumps(asdict(info), sort_keys=True)


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def from_json(text: str) -> ModelInfo:
    """Facts read back: JSON's lists become the tuples ``ModelInfo`` holds. A field this skipsearch does not
    know (stored by a newer one) is left out; a field it lacks takes its default (stored by an older one)."""
    raw = json.loads(text)
    known = {f.name for f in fields(ModelInfo)}
    values = {k: _tuple(v) for k, v in raw.items() if k in known}
    values["skips"] = tuple(SkipInfo(**s) for s in raw.get("skips", ()))
    return ModelInfo(**values)
