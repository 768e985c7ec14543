"""Where a diffusers model's parts come from: a folder on disk (a UNet folder, or a pipeline folder with
``model_index.json``), or a UNet or pipeline the user handed over in this process. Either way a ``Source``
finds and checks the parts once (the UNet's config and class, the VAE's config, the training schedule, what
the weights hash covers) and loads them when asked; the diffusers family (``diffusers_unet``) builds the
model's facts and its denoiser from it.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skipsearch.errors import UserError
from skipsearch.files import file_hash
from skipsearch.models.family import Handed, handed, keep_handed

if TYPE_CHECKING:  # types only: the diffusers family's registry entry loads no torch until a model is used
    import torch
    from torch import nn

    from skipsearch.models.diffusers_section import DiffusersModel

UNETS = ("UNet2DModel", "UNet2DConditionModel")
SAFE_WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED_WEIGHTS = "diffusion_pytorch_model.bin"
TEXT_WEIGHTS = "model.safetensors"  # transformers' name, for a pipeline's text encoder


@dataclass(frozen=True)
class Layout:
    """Where a model's parts are on disk."""

    unet: Path
    scheduler: Path | None
    vae: Path | None
    tokenizer: Path | None
    text_encoder: Path | None


def find_layout(spec: DiffusersModel) -> Layout:
    root = Path(spec.path)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder (a diffusers UNet folder or a pipeline folder)")
    if (root / "model_index.json").is_file():
        index = json.loads((root / "model_index.json").read_text())

        def part(name: str) -> Path | None:
            return root / name if name in index and (root / name).is_dir() else None

        return Layout(unet=root / (spec.subfolder or "unet"), scheduler=part("scheduler"), vae=part("vae"),
                      tokenizer=part("tokenizer"), text_encoder=part("text_encoder"))
    unet = root / spec.subfolder if spec.subfolder else root
    scheduler = next((p for p in (unet / "scheduler_config.json", root / "scheduler" / "scheduler_config.json")
                      if p.is_file()), None)
    return Layout(unet=unet, scheduler=scheduler.parent if scheduler else None, vae=None, tokenizer=None,
                  text_encoder=None)


def read_config(folder: Path, file: str, what: str) -> dict[str, Any]:
    path = folder / file
    if not path.is_file():
        raise UserError(f"{path} not found: {what} needs it")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not JSON ({err})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: a config must be a JSON object")
    return config


def unet_class(config: dict[str, Any], folder: Path) -> type[nn.Module]:
    name = config.get("_class_name")
    if name not in UNETS:
        raise UserError(f"{folder}/config.json: {name!r} is not a supported UNet; supported: {', '.join(UNETS)} "
                        f"(any other network: family hooked)")
    import diffusers

    return getattr(diffusers, name)


def weights_file(folder: Path, spec: DiffusersModel, what: str, name: str = SAFE_WEIGHTS) -> Path:
    """The file the library will load the weights from, checked now (before a study is stored), not when a
    trial loads it: a readable safetensors file ``name`` (diffusers': ``diffusion_pytorch_model.safetensors``,
    transformers': ``model.safetensors``) or the first shard of an indexed set, else a pickled ``.bin`` only with
    ``trust_pickles`` (it can run code when loaded). Any other ``*.safetensors`` is refused by name: the library
    would not load it, so the model would be hashed from one file and loaded from another, or not at all."""
    if (folder / name).is_file():
        return readable_safetensors(folder / name, what)
    safe = sorted(folder.glob("*.safetensors"))
    if safe and (folder / f"{name}.index.json").is_file():  # sharded: the library loads the shards it lists
        return readable_safetensors(safe[0], what)
    pickled = [folder / PICKLED_WEIGHTS, *sorted(folder.glob("*.bin"))]
    found = next((p for p in pickled if p.is_file()), None)
    if safe and not (found and spec.trust_pickles):
        beside = f"; {found.name} beside it is a pickle (model.trust_pickles: false)" if found else ""
        raise UserError(f"{safe[0]}: {what} load only from {name} (or the shards that {name}.index.json "
                        f"lists), not from this file{beside}. Rename it to {name} if it holds these weights, or "
                        f"remove it")
    if found and not spec.trust_pickles:
        raise UserError(f"{found}: {what} is a pickle, which can run code when loaded; convert it to safetensors, "
                        f"or set model.trust_pickles: true if you trust where it came from")
    if found:
        return found
    raise UserError(f"{folder}: no weights file ({SAFE_WEIGHTS}) for {what}")


def shards(weights: Path) -> list[Path]:
    """Every file the library loads for these weights: the one file, or (sharded) the index and each shard it
    lists, so that a change in any shard changes the model's hash, not only a change in the first."""
    for index in sorted(weights.parent.glob("*.index.json")):
        try:
            listed = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            continue  # not a shard index that lists files: the library would not read these weights through it
        if weights.name in listed:
            return [index, *(weights.parent / name for name in sorted(listed))]
    return [weights]


def readable_safetensors(path: Path, what: str) -> Path:
    """The file if its safetensors header reads (nothing else is loaded); else one message naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{path}: {what} is not a readable safetensors file ({first})") from None
    return path


def loaded(load: Any, folder: Path) -> Any:
    """A library's load of a user's folder; what it cannot read is the folder's fault, said in one line."""
    try:
        return load()
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"{folder}: could not be loaded ({type(err).__name__}: {first})") from None


def is_unet(model: Any) -> bool:
    return type(model).__name__ in UNETS and type(model).__module__.startswith("diffusers")


def unet_of(model: Any) -> nn.Module:
    """The UNet of a VPDenoiser, a pipeline or the UNet itself."""
    return model if is_unet(model) else model.unet


def training_schedule(where: Path | dict[str, Any] | None, prediction_type: str | None,
              shown: str) -> tuple[dict[str, Any], torch.Tensor]:
    """The training schedule's config (a folder's, a pipeline scheduler's, else DDPMScheduler's defaults) with
    the prediction type settled, and its abar_t. DDPMScheduler reads any scheduler's config: the training
    schedule's keys (betas, timesteps, prediction type) are shared by diffusers' schedulers."""
    from diffusers import DDPMScheduler

    try:
        if where is None:
            config = dict(DDPMScheduler().config)
        elif isinstance(where, dict):
            config = dict(DDPMScheduler.from_config(where).config)
        else:
            config = dict(DDPMScheduler.load_config(where))
        config["prediction_type"] = prediction_type or config.get("prediction_type", "epsilon")
        return config, DDPMScheduler.from_config(config).alphas_cumprod
    except (OSError, ValueError, NotImplementedError) as err:
        raise UserError(f"{shown}: unusable scheduler config ({err})") from None


class Source(ABC):
    """A model's parts, found and checked once for both ``info`` and ``load``: in a folder, or in an object the
    user handed over (``skipsearch.run(spec, model=unet_or_pipeline)``)."""

    where: str  # how messages name it
    config: dict[str, Any]  # the UNet's
    cls: type[nn.Module]
    vae_config: dict[str, Any] | None
    scheduler_config: dict[str, Any]  # the training schedule's, the prediction type settled
    alphas: torch.Tensor

    @abstractmethod
    def weights_hash(self, spec: DiffusersModel) -> str:
        """What the numbers depend on: the UNet's, the VAE's and the text encoder's weights, and the prompts."""

    @abstractmethod
    def unet(self) -> nn.Module: ...

    @abstractmethod
    def vae(self) -> nn.Module | None: ...

    @abstractmethod
    def text(self, spec: DiffusersModel) -> tuple[Any, nn.Module]:
        """(tokenizer, text encoder) to encode ``model.prompts`` with; UserError where there are none."""


class FolderSource(Source):
    def __init__(self, spec: DiffusersModel) -> None:
        self.layout = layout = find_layout(spec)
        self.where = str(layout.unet)
        self.config = read_config(layout.unet, "config.json", "the UNet")
        self.cls = unet_class(self.config, layout.unet)
        self.unet_weights = weights_file(layout.unet, spec, "the UNet's weights")
        self.vae_weights = None if layout.vae is None else weights_file(layout.vae, spec, "the VAE's weights")
        self.vae_config = None if layout.vae is None else read_config(layout.vae, "config.json", "the VAE")
        self.scheduler_config, self.alphas = training_schedule(layout.scheduler, spec.prediction_type,
                                                               str(layout.scheduler))

    def weights_hash(self, spec: DiffusersModel) -> str:
        files = [*shards(self.unet_weights), *(shards(self.vae_weights) if self.vae_weights else [])]
        if spec.prompts or spec.prompt_embeds:
            files.append(Path(spec.prompts or spec.prompt_embeds))
        if spec.prompts and self.layout.text_encoder is not None:
            files += shards(weights_file(self.layout.text_encoder, spec, "the text encoder's weights", TEXT_WEIGHTS))
        return hashlib.sha256("|".join(file_hash(f) for f in files).encode()).hexdigest()[:16]

    def unet(self) -> nn.Module:
        folder = self.layout.unet
        return loaded(lambda: self.cls.from_pretrained(folder, use_safetensors=is_safetensors(self.unet_weights),
                                                        low_cpu_mem_usage=False), folder)

    def vae(self) -> nn.Module | None:
        from diffusers import AutoencoderKL

        folder = self.layout.vae
        if folder is None:
            return None
        return loaded(lambda: AutoencoderKL.from_pretrained(folder, use_safetensors=is_safetensors(self.vae_weights),
                                                             low_cpu_mem_usage=False), folder)

    def text(self, spec: DiffusersModel) -> tuple[Any, nn.Module]:
        layout = self.layout
        if layout.tokenizer is None or layout.text_encoder is None:
            raise UserError(f"model.prompts: {spec.path} has no tokenizer and text_encoder folders to encode prompts "
                            f"with; give model.prompt_embeds instead")
        import transformers

        weights_file(layout.text_encoder, spec, "the text encoder's weights", TEXT_WEIGHTS)
        tokenizer = loaded(lambda: transformers.AutoTokenizer.from_pretrained(layout.tokenizer), layout.tokenizer)
        encoder = loaded(lambda: transformers.AutoModel.from_pretrained(layout.text_encoder, use_safetensors=True),
                          layout.text_encoder)
        return tokenizer, encoder


class ObjectSource(Source):
    """The user's own objects, used as they are (not copied): skipsearch removes what it puts on them."""

    def __init__(self, spec: DiffusersModel, handed: Handed) -> None:
        self.handed, model = handed, handed.model
        self.where = f"the handed-over {type(model).__name__} {spec.name!r}"
        unet = unet_of(model)
        self.cls, self.config = type(unet), dict(unet.config)
        vae = getattr(model, "vae", None)
        self.vae_config = None if vae is None else dict(vae.config)
        scheduler = getattr(model, "scheduler", None)
        config = None if scheduler is None else dict(scheduler.config)
        self.scheduler_config, self.alphas = training_schedule(config, spec.prediction_type, self.where)

    def weights_hash(self, spec: DiffusersModel) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.handed.digests.items())
                 if k != "text_encoder" or spec.prompts]
        if spec.prompt_embeds or spec.prompts:
            parts.append(file_hash(Path(spec.prompts or spec.prompt_embeds)))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def unet(self) -> nn.Module:
        return unet_of(self.handed.model)

    def vae(self) -> nn.Module | None:
        return getattr(self.handed.model, "vae", None)

    def text(self, spec: DiffusersModel) -> tuple[Any, nn.Module]:
        tokenizer = getattr(self.handed.model, "tokenizer", None)
        encoder = getattr(self.handed.model, "text_encoder", None)
        if tokenizer is None or encoder is None:
            raise UserError(f"model.prompts: {self.where} has no tokenizer and text_encoder to encode prompts with; "
                            f"hand over the whole pipeline, or give model.prompt_embeds")
        return tokenizer, encoder


def hand_over(model: Any, spec: DiffusersModel) -> None:
    """What ``skipsearch.run(spec, model=unet_or_pipeline)`` does for a diffusers spec without a path."""
    if spec.path is not None:
        raise UserError("model.path names a folder and model= hands over a network: give one (to study the handed "
                        "one, leave out model.path and give model.name)")
    if not (is_unet(model) or is_unet(getattr(model, "unet", None))):
        raise UserError(f"model= for family diffusers takes a {' or '.join(UNETS)}, or a pipeline holding one as "
                        f".unet; got {type(model).__name__} (any other network: family hooked)")
    keep_handed("diffusers", spec.name, model, {"unet": unet_of(model), "vae": getattr(model, "vae", None),
                                                "text_encoder": getattr(model, "text_encoder", None)})


def source(spec: DiffusersModel) -> Source:
    if spec.path is not None:
        return FolderSource(spec)
    given = handed("diffusers", spec.name)
    if given is None:
        raise UserError(f"model.name {spec.name!r} names no folder (model.path) and no network handed over in this "
                        f"process: pass it through the Python API, skipsearch.run(spec, model=unet_or_pipeline)")
    return ObjectSource(spec, given)


def is_safetensors(weights: Path) -> bool:
    return weights.suffix == ".safetensors"
