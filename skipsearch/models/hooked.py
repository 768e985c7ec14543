"""Any other UNet, by hook: the spec (or the Python API) names the modules whose input carries a skip.

The network is the user's own ``nn.Module``, a denoiser in EDM's convention, D(x, sigma) -> denoised x (wrap
it if it predicts noise), handed over through the Python API, since no file can hold code skipsearch would
run:

```python
net = MyUNet(...)                       # D(x, sigma)
skipsearch.run("studies/mine.yaml", model=net)
```

```yaml
model:
  family: hooked
  name: my-unet
  channels: 3
  resolution: 32
  skips:                                 # outermost first
    - {module: dec.3, level: 0, argument: 1}          # the skip is the block's 2nd positional argument
    - {module: dec.2, level: 1, channels: [128, 256]} # the skip is channels 128..255 of the block's input
```

Each skip is scaled exactly where it was named: a whole argument (by position or keyword), or a channel
slice of a concatenated input (argument ``argument``, 0 by default), in place on that fresh tensor.
``declare(net, section)`` marks a module with its skips, so ``skipsearch.apply`` knows it without a study.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from skipsearch.errors import UserError
from skipsearch.fields import Section
from skipsearch.models.family import (MODEL_ID_MAX, Family, LoadedModel, ModelInfo, ModelSection, SkipInfo, handed,
                                    keep_handed)

if TYPE_CHECKING:  # torch where a network is handled: parsing a spec's section needs none
    from torch import nn

    from skipsearch.hooks import SkipPoint
    from skipsearch.hooks.scaling import SigmaOf

_DECLARED: weakref.WeakKeyDictionary[nn.Module, HookedModel] = weakref.WeakKeyDictionary()


class HookedSkip(Section):
    module: str = Field(min_length=1, max_length=500)  # the consuming module's path, as in named_modules()
    level: int = Field(ge=0, le=64)  # its resolution level, 0 = highest
    argument: int = Field(0, ge=0, le=32)  # which positional argument of that module's call carries the skip
    keyword: str | None = Field(None, min_length=1, max_length=100)  # or the keyword it is passed by
    channels: tuple[int, int] | None = None  # [start, stop): the skip is this slice of a concatenated input

    @model_validator(mode="after")
    def _slice(self) -> HookedSkip:
        if self.channels is not None and not 0 <= self.channels[0] < self.channels[1]:
            raise ValueError(f"channels must be [start, stop) with 0 <= start < stop, got {list(self.channels)}")
        return self


class HookedModel(ModelSection):
    family: Literal["hooked"] = "hooked"
    name: str = Field(min_length=1, max_length=MODEL_ID_MAX)
    channels: int = Field(ge=1, le=64)
    resolution: int = Field(ge=1, le=4096)
    skips: tuple[HookedSkip, ...] = Field(min_length=1, max_length=1024)
    sigma_argument: int = Field(1, ge=0, le=32)  # where sigma is in a call of the denoiser (keyword "sigma" too)

    @property
    def model_id(self) -> str:
        return self.name


def declare(model: nn.Module, section: HookedModel) -> nn.Module:
    """Mark ``model`` with its skips (checked against its modules now); returns it."""
    _points(model, section)
    _DECLARED[model] = section
    return model


def hand_over(model: nn.Module, section: HookedModel) -> None:
    """What ``skipsearch.run(spec, model=net)`` does: this process's trials use ``net`` for ``section``."""
    declare(model, section)
    keep_handed("hooked", section.name, model, {"net": model})


def _points(model: nn.Module, section: HookedModel) -> list[SkipPoint]:
    from skipsearch.hooks import ArgumentSkip, ChannelSlice

    modules = dict(model.named_modules())
    points: list[SkipPoint] = []
    for i, skip in enumerate(section.skips):
        if skip.module not in modules:
            near = [name for name in modules if name.split(".")[-1] == skip.module.split(".")[-1]][:5]
            raise UserError(f"model.skips.{i}.module: {type(model).__name__} has no module {skip.module!r}"
                            + (f"; similar: {', '.join(near)}" if near else ""))
        common = {"index": i, "level": skip.level, "module": modules[skip.module], "path": skip.module,
                  "position": skip.argument, "keyword": skip.keyword}
        if skip.channels is None:
            points.append(ArgumentSkip(**common))
        else:
            points.append(ChannelSlice(**common, start=skip.channels[0], stop=skip.channels[1]))
    return points


class HookedFamily(Family):
    name = "hooked"
    spec_class = HookedModel

    def info(self, spec: HookedModel) -> ModelInfo:
        given = handed("hooked", spec.name)
        weights = given.digests["net"][:16] if given is not None else "0" * 16
        return ModelInfo(model_id=spec.name, family=self.name, weights_hash=weights, img_channels=spec.channels,
                         resolution=spec.resolution, reference="",
                         skips=tuple(SkipInfo(index=i, level=s.level, path=s.module) for i, s in enumerate(spec.skips)))

    def hand_over(self, spec: HookedModel, model: Any) -> None:
        from torch import nn

        if not isinstance(model, nn.Module):
            raise UserError(f"model= takes a torch.nn.Module for family hooked, got {type(model).__name__}")
        hand_over(model, spec)

    def missing_network(self, spec: HookedModel) -> str | None:
        return "net" if handed("hooked", spec.name) is None else None

    def lookup(self, spec: HookedModel) -> None:
        """The network must have been handed over in this process: checked before a study is stored."""
        self._handed(spec)

    def _handed(self, spec: HookedModel) -> nn.Module:
        given = handed("hooked", spec.name)
        if given is None:
            raise UserError(f"model.family hooked: {spec.name!r} is the user's own module; pass it through the Python "
                            f"API, skipsearch.run(spec, model=net), and run in-process (not on Ray workers)")
        return given.model

    def load(self, spec: HookedModel) -> LoadedModel:
        """The module handed over by ``skipsearch.run(spec, model=...)`` in this process (not a copy: a hooked
        model is the user's own object, and skipsearch removes what it put on it)."""
        model = self._handed(spec)
        _points(model, spec)
        return LoadedModel(model, self.info(spec))

    def matches(self, model: Any) -> bool:
        from torch import nn

        return isinstance(model, nn.Module) and model in _DECLARED

    def skip_points(self, model: nn.Module) -> list[SkipPoint]:
        return _points(model, _DECLARED[model])

    def sigma_of(self, model: nn.Module) -> SigmaOf:
        from skipsearch.hooks.scaling import sigma_argument

        return sigma_argument(_DECLARED[model].sigma_argument)
