"""The edm family: NVlabs EDM's ``SongUNet`` (DDPM++, NCSN++) and ``DhariwalUNet`` (ADM), from their network pickles.

```yaml
model:
  family: edm
  path: networks/edm-cifar10-32x32-uncond-vp.pkl   # a network pickle, as NVlabs' generate.py loads it
  code: ~/src/edm                                   # the user's NVlabs/edm checkout (dnnlib, torch_utils)
  trust_pickles: true                               # required: a pickle runs code when loaded
```

- The network is ``pickle.load(f)['ema']``: NVlabs' preconditioned network (``EDMPrecond``, ``VPPrecond``,
  ``VEPrecond`` or ``iDDPMPrecond``) whose ``.model`` is a ``SongUNet`` or ``DhariwalUNet``. Such a pickle
  brings the source of the network with it and runs it while it is loaded, so nothing is unpickled unless
  ``trust_pickles: true``. ``code`` is put on ``sys.path`` only while unpickling; the pickle needs NVlabs'
  ``dnnlib`` and ``torch_utils`` from it. skipsearch itself contains none of NVlabs' code.
- The precond already is an EDM denoiser D(x, sigma, class_labels). ``NVlabsDenoiser`` wraps it so that it
  takes what skipsearch passes: sigma as a number or a tensor, and a conditional network's labels as integer
  indices (NVlabs' networks want one-hot rows; rows of ``label_dim`` floats are passed on unchanged). A
  conditional network (``label_dim`` > 0) samples its labels 0..label_dim-1 in turn. Classifier-free guidance
  is refused: NVlabs' networks have no null label skipsearch could rely on.
- Skips: the encoder pushes the output of each of its blocks (``enc``, the ``*_aux_*`` modules of NCSN++
  aside: they change the last pushed tensor, not the count) on a stack; each decoder block whose
  ``in_channels`` differ from the channels reaching it pops one and concatenates it behind them,
  ``cat([x, skips.pop()])``. So a skip is the channel slice [channels reaching the block, ``in_channels``) of
  that block's input (``ChannelSlice``), worked out here from ``enc``/``dec`` and the blocks' channels alone.
  Index 0 is the encoder's first output (its input convolution: outermost, highest resolution); the level
  counts the resolutions before the one in its ``enc`` key (``'16x16_block0'``). Paths are those of
  ``named_modules()`` of the precond (``model.dec.16x16_block1``), however the network is handed over.
"""

from __future__ import annotations

import pickle
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from skipsearch.errors import UserError
from skipsearch.fields import FilePath
from skipsearch.files import file_hash
from skipsearch.models.family import MODEL_ID_MAX, Family, LoadedModel, ModelInfo, ModelSection, SkipInfo

if TYPE_CHECKING:  # torch where a network is handled: parsing a spec's section needs none
    import torch
    from torch import nn

    from skipsearch.hooks import SkipPoint
    from skipsearch.hooks.scaling import SigmaOf

UNETS = ("SongUNet", "DhariwalUNet")
PRECONDS = ("EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond")
NEEDED = ("dnnlib", "torch_utils")  # what a network pickle imports from the NVlabs checkout
_KEY = re.compile(r"^(\d+)x(\d+)_")


class NVlabsModel(ModelSection):
    """``model:`` for an NVlabs EDM network pickle."""

    operational = frozenset({"name"})
    family: Literal["edm"] = "edm"
    path: FilePath
    code: FilePath
    trust_pickles: bool = False
    name: str | None = Field(None, min_length=1, max_length=MODEL_ID_MAX)  # default: the pickle's file name

    @property
    def model_id(self) -> str:
        return (self.name or Path(self.path).stem or self.path)[:MODEL_ID_MAX]


# What a model is, by type name: NVlabs' classes are rebuilt from the source inside each pickle, so there is
# no one class to import and test against (and this module imports none of NVlabs' code).
def __getattr__(name: str):
    if name == "NVlabsDenoiser":  # its own module (torch); named here too, beside the family
        from skipsearch.models.nvlabs_denoiser import NVlabsDenoiser

        return NVlabsDenoiser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_unet(model: Any) -> bool:
    from torch import nn

    return (type(model).__name__ in UNETS and isinstance(getattr(model, "enc", None), nn.ModuleDict)
            and isinstance(getattr(model, "dec", None), nn.ModuleDict))


def _is_precond(model: Any) -> bool:
    from torch import nn

    return type(model).__name__ in PRECONDS and isinstance(model, nn.Module) and _is_unet(getattr(model, "model", None))


def _precond_of(model: Any) -> nn.Module | None:
    """The precond of a wrapper or the precond itself; None for a bare UNet."""
    from skipsearch.models.nvlabs_denoiser import NVlabsDenoiser

    if isinstance(model, NVlabsDenoiser):
        return model.net
    return model if _is_precond(model) else None


def _unet_of(model: Any) -> nn.Module:
    precond = _precond_of(model)
    return model if precond is None else precond.model


@dataclass(frozen=True, kw_only=True)
class _Skip:
    index: int
    level: int
    key: str  # the consuming decoder block's key in ``dec``
    start: int  # the channels reaching that block: the skip is [start, stop) of its input
    stop: int

    @property
    def path(self) -> str:
        return f"model.dec.{self.key}"


def _not_understood(unet: nn.Module, why: str) -> UserError:
    return UserError(f"{type(unet).__name__}: {why}; not an NVlabs EDM UNet skipsearch understands")


def _skips(unet: nn.Module) -> list[_Skip]:
    """Each skip with the decoder block that concatenates it, from ``enc``/``dec`` and the blocks' channels as
    the network's forward uses them; outermost first."""
    made: list[tuple[int, int]] = []  # (level, channels) of each tensor the encoder pushes, in order
    resolutions: list[int] = []
    for key, block in unet.enc.items():
        if "aux" in key:
            continue
        match = _KEY.match(key)
        if match is None:
            raise _not_understood(unet, f"encoder key {key!r} does not start with its resolution ('16x16_')")
        res = int(match.group(1))
        if res not in resolutions:
            resolutions.append(res)
        made.append((resolutions.index(res), int(block.out_channels)))
    if not made:
        raise _not_understood(unet, "its encoder is empty")
    stack, channels, skips = list(range(len(made))), made[-1][1], []
    for key, block in unet.dec.items():
        if "aux" in key:
            continue
        if block.in_channels != channels:  # forward: x = cat([x, skips.pop()]) before this block
            if not stack:
                raise _not_understood(unet, f"decoder block {key!r} takes a skip the encoder did not make")
            k = stack.pop()
            if block.in_channels - channels != made[k][1]:
                raise _not_understood(unet, f"decoder block {key!r} takes {block.in_channels - channels} skip "
                                            f"channels where encoder output {k} has {made[k][1]}")
            skips.append(_Skip(index=k, level=made[k][0], key=key, start=channels, stop=int(block.in_channels)))
        channels = int(block.out_channels)
    if stack:
        raise _not_understood(unet, f"{len(stack)} encoder output(s) reach no decoder block")
    return sorted(skips, key=lambda s: s.index)


@dataclass(frozen=True)
class _Structure:
    """What ``info`` needs of an unpickled network, kept per file so that it is unpickled once for it."""

    img_channels: int
    resolution: int
    label_dim: int
    skips: tuple[SkipInfo, ...]


_STRUCTURES: dict[tuple[str, int, int], _Structure] = {}  # (resolved path, size, mtime_ns) -> structure


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _structure(precond: nn.Module) -> _Structure:
    skips = tuple(SkipInfo(index=s.index, level=s.level, path=s.path) for s in _skips(precond.model))
    return _Structure(img_channels=int(precond.img_channels), resolution=int(precond.img_resolution),
                      label_dim=int(getattr(precond, "label_dim", 0) or 0), skips=skips)


def _check(spec: NVlabsModel) -> tuple[Path, Path]:
    """The pickle exists, the user trusts it, and the code folder has what it imports; nothing is opened."""
    path, code = Path(spec.path).expanduser(), Path(spec.code).expanduser()
    if not path.is_file():
        raise UserError(f"model.path: {path} not found (an NVlabs network pickle, .pkl)")
    if not spec.trust_pickles:
        raise UserError(f"model.path: {path} is an NVlabs network pickle, and a pickle runs code when loaded; set "
                        f"model.trust_pickles: true if you trust it")
    if not code.is_dir():
        raise UserError(f"model.code: {code} is not a folder (the NVlabs/edm checkout, with dnnlib and torch_utils)")
    missing = [name for name in NEEDED if not (code / name).is_dir() and not (code / f"{name}.py").is_file()]
    if missing:
        raise UserError(f"model.code: {code} has no {' or '.join(missing)}; model.code must be a checkout of "
                        f"NVlabs/edm (git clone https://github.com/NVlabs/edm), which the pickle imports them from")
    return path, code


@contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def _unpickle(spec: NVlabsModel) -> nn.Module:
    """``pickle.load(f)['ema']``, NVlabs' way, with ``model.code`` on sys.path meanwhile; checked to be a
    precond around a UNet whose skips skipsearch understands."""
    from skipsearch.safeload import LOAD_ERRORS

    path, code = _check(spec)
    with _on_path(code):
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)
        except ModuleNotFoundError as err:
            top = (err.name or "").split(".")[0]
            if top and top not in (*NEEDED, "training") and not (code / top).exists():
                hint = " (on Python 3.12+, setuptools provides it)" if top == "distutils" else ""
                raise UserError(f"model.code: NVlabs' code in {code} imports {err.name!r}, which is not installed "
                                f"in this Python environment{hint}; install it (NVlabs' environment.yml lists "
                                f"what their code needs)") from None
            raise UserError(f"model.code: unpickling {path} needs the module {err.name!r}, which {code} does not "
                            f"provide; model.code must be a checkout of NVlabs/edm (with dnnlib and torch_utils)"
                            ) from None
        except (*LOAD_ERRORS, AssertionError, NameError) as err:
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise UserError(f"model.path: {path} is not an NVlabs network pickle ({type(err).__name__}: {first})"
                            ) from None
    if not isinstance(data, dict) or "ema" not in data:
        raise UserError(f"model.path: {path} holds {type(data).__name__}, not NVlabs' snapshot dict with the "
                        f"network under 'ema'")
    net = data["ema"]
    if not _is_precond(net):
        inner = type(getattr(net, "model", None)).__name__
        raise UserError(f"model.path: {path}: 'ema' is a {type(net).__name__} (model {inner}); the edm family "
                        f"serves {', '.join(PRECONDS)} around a {' or '.join(UNETS)}")
    _STRUCTURES[_file_key(path)] = _structure(net)  # also checks the skips
    return net


class NVlabsFamily(Family):
    name = "edm"
    spec_class = NVlabsModel

    def lookup(self, spec: NVlabsModel) -> None:
        _check(spec)

    def _info(self, spec: NVlabsModel, s: _Structure) -> ModelInfo:
        return ModelInfo(model_id=spec.model_id, family=self.name, weights_hash=file_hash(_check(spec)[0]),
                         img_channels=s.img_channels, resolution=s.resolution, skips=s.skips, reference="",
                         conditions=tuple(range(s.label_dim)))

    def info(self, spec: NVlabsModel) -> ModelInfo:
        """Unpickles the network (only with ``trust_pickles``) the first time a file is asked about."""
        path, _ = _check(spec)
        structure = _STRUCTURES.get(_file_key(path))
        if structure is None:
            _unpickle(spec)
            structure = _STRUCTURES[_file_key(path)]
        return self._info(spec, structure)

    def load(self, spec: NVlabsModel) -> LoadedModel:
        from skipsearch.models.nvlabs_denoiser import NVlabsDenoiser

        net = _unpickle(spec)
        denoiser = NVlabsDenoiser(net).eval().requires_grad_(False)
        return LoadedModel(denoiser, self._info(spec, _structure(net)))  # from the network: no second unpickling

    def matches(self, model: Any) -> bool:
        from skipsearch.models.nvlabs_denoiser import NVlabsDenoiser

        return isinstance(model, NVlabsDenoiser) or _is_precond(model) or _is_unet(model)

    def skip_points(self, model: Any) -> list[SkipPoint]:
        from skipsearch.hooks import ChannelSlice

        unet = _unet_of(model)
        return [ChannelSlice(index=s.index, level=s.level, module=unet.dec[s.key], path=s.path, position=0,
                             start=s.start, stop=s.stop) for s in _skips(unet)]

    def hook_root(self, model: Any) -> nn.Module:
        return model if _precond_of(model) is not None else _unet_of(model)

    def sigma_of(self, model: Any) -> SigmaOf:
        from skipsearch.hooks.scaling import sigma_argument

        return sigma_argument(1) if _precond_of(model) is not None else _no_sigma  # forward(x, sigma, ...)


def _no_sigma(args: tuple, kwargs: dict) -> torch.Tensor:
    raise UserError("coefficients that depend on the noise level need sigma, which a bare SongUNet/DhariwalUNet is "
                    "not given (its noise label depends on the preconditioning); apply them to the preconditioned "
                    "network, pickle['ema'], not to its .model")
