"""The diffusers family: a ``UNet2DModel`` or ``UNet2DConditionModel`` from a local folder, alone or inside a
pipeline folder (``model_index.json``: UNet, scheduler, VAE, tokenizer and text encoder).

```yaml
model:
  family: diffusers
  path: models/digits-ddpm     # a pipeline folder, or a UNet folder (config.json + safetensors)
  prompts: prompts.txt         # a text-conditioned UNet: one prompt per line, through the pipeline's text encoder
```

- Weights load from safetensors. A pickled ``.bin`` is refused unless ``trust_pickles: true``.
- The network is wrapped as an EDM denoiser (``VPDenoiser``), so EDM's Heun and Euler apply, and diffusers'
  own schedulers (``sampler.name: ddim | dpmpp_2m | euler_discrete``) run from the folder's scheduler config,
  as the user's pipeline would (DDPMScheduler's defaults where the folder has none).
- Conditions: a class-conditional ``UNet2DModel`` samples its ``num_class_embeds`` labels in turn, a text
  model its prompts in turn; guidance uses ``negative_prompt`` (or a file's ``negative_prompt_embeds``) as
  the unconditional prompt. A latent model (a pipeline with a VAE) is decoded before features are taken.
- Skips: every tensor of ``down_block_res_samples`` (the ``conv_in`` output first) reaches an up block in
  ``res_hidden_states_tuple``, passed by position in ``UNet2DModel`` and by keyword in the conditional UNet.
  Index 0 is the outermost (``conv_in``); the level counts the downsamplers before it.

A UNet or pipeline already in memory is studied by handing it over, with a ``model:`` section that names it
instead of a folder (the object is used as it is, in this process):

```python
pipe = diffusers.DDIMPipeline.from_pretrained("my-model")   # or any UNet2DModel / UNet2DConditionModel
skipsearch.run("studies/mine.yaml", model=pipe)              # model: {family: diffusers, name: my-model}
```
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from skipsearch.diffusion.vp import VPSchedule
from skipsearch.errors import UserError
from skipsearch.files import file_hash
from skipsearch.hooks import SkipPoint, TupleSkip
from skipsearch.hooks.scaling import SigmaOf
from skipsearch.models.base import MODEL_ID_MAX, Family, LoadedModel, ModelInfo, ModelSection, SkipInfo

UNETS = ("UNet2DModel", "UNet2DConditionModel")
SAFE_WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED_WEIGHTS = "diffusion_pytorch_model.bin"


class DiffusersModel(ModelSection):
    """``model:`` for a diffusers UNet or pipeline folder."""

    operational = frozenset({"name"})
    family: Literal["diffusers"] = "diffusers"
    path: str | None = Field(None, min_length=1, max_length=4096)  # None: a network handed over by the Python API
    subfolder: str | None = Field(None, min_length=1, max_length=200)  # default: unet, in a pipeline folder
    name: str | None = Field(None, min_length=1, max_length=MODEL_ID_MAX)  # default: the folder's name
    prediction_type: Literal["epsilon", "v_prediction", "sample"] | None = None  # default: the scheduler config's
    prompts: str | None = Field(None, min_length=1, max_length=4096)
    prompt_embeds: str | None = Field(None, min_length=1, max_length=4096)
    negative_prompt: str = Field("", max_length=10_000)
    trust_pickles: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> DiffusersModel:
        if self.prompts and self.prompt_embeds:
            raise ValueError("give prompts or prompt_embeds, not both")
        if self.path is None and self.name is None:
            raise ValueError("give path (a UNet or pipeline folder), or name for a UNet or pipeline handed over "
                             "with skipsearch.run(spec, model=...)")
        if self.path is None and (self.subfolder or self.trust_pickles):
            raise ValueError("subfolder and trust_pickles describe a folder; this section has no path")
        return self

    @property
    def model_id(self) -> str:
        return (self.name or Path(self.path).name or self.path)[:MODEL_ID_MAX]  # type: ignore[arg-type]

    def anchored(self, base: Path) -> DiffusersModel:
        def at(p: str | None) -> str | None:
            return None if p is None else str(base / Path(p).expanduser())

        return self.model_copy(update={"path": at(self.path), "prompts": at(self.prompts),
                                       "prompt_embeds": at(self.prompt_embeds)})


@dataclass(frozen=True)
class Layout:
    """Where a model's parts are on disk."""

    unet: Path
    scheduler: Path | None
    vae: Path | None
    tokenizer: Path | None
    text_encoder: Path | None


def _layout(spec: DiffusersModel) -> Layout:
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


def _config(folder: Path, file: str, what: str) -> dict[str, Any]:
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


def _unet_class(config: dict[str, Any], folder: Path) -> type[nn.Module]:
    name = config.get("_class_name")
    if name not in UNETS:
        raise UserError(f"{folder}/config.json: {name!r} is not a supported UNet; supported: {', '.join(UNETS)} "
                        f"(any other network: family hooked)")
    import diffusers

    return getattr(diffusers, name)


def _weights(folder: Path, spec: DiffusersModel, what: str) -> Path:
    """The safetensors file; a pickled one only with ``trust_pickles`` (it can run code when loaded)."""
    if (folder / SAFE_WEIGHTS).is_file():
        return folder / SAFE_WEIGHTS
    safe = sorted(folder.glob("*.safetensors"))
    if safe:
        return safe[0]
    pickled = [folder / PICKLED_WEIGHTS, *sorted(folder.glob("*.bin"))]
    found = next((p for p in pickled if p.is_file()), None)
    if found and not spec.trust_pickles:
        raise UserError(f"{found}: {what} is a pickle, which can run code when loaded; convert it to safetensors, "
                        f"or set model.trust_pickles: true if you trust where it came from")
    if found:
        return found
    raise UserError(f"{folder}: no weights file ({SAFE_WEIGHTS}) for {what}")


def _square(size: Any, what: str) -> int:
    sizes = size if isinstance(size, (list, tuple)) else (size, size)
    if len(sizes) != 2 or sizes[0] != sizes[1] or not isinstance(sizes[0], int):
        raise UserError(f"{what}: sample_size {size!r}: skipsearch samples square images")
    return sizes[0]


def tuple_skips(unet: nn.Module) -> list[TupleSkip]:
    """Every entry of ``down_block_res_samples`` as the up block that pops it sees it, outermost first."""
    levels, level = [0], 0  # the conv_in output
    for block in unet.down_blocks:
        levels += [level] * len(block.resnets)
        if getattr(block, "downsamplers", None):
            level += 1
            levels.append(level)
    remaining, points = list(range(len(levels))), []
    for j, block in enumerate(unet.up_blocks):
        taken, remaining = remaining[-len(block.resnets):], remaining[: -len(block.resnets)]
        points += [TupleSkip(index=k, level=levels[k], module=block,
                             path=f"up_blocks.{j}:res_hidden_states_tuple[{e}]", position=1,
                             keyword="res_hidden_states_tuple", element=e) for e, k in enumerate(taken)]
    if remaining:
        raise UserError(f"{type(unet).__name__}: {len(remaining)} skip tensor(s) reach no up block; not a UNet "
                        f"skipsearch understands")
    return sorted(points, key=lambda p: p.index)


def _loaded(load: Any, folder: Path) -> Any:
    """A library's load of a user's folder; what it cannot read is the folder's fault, said in one line."""
    try:
        return load()
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"{folder}: could not be loaded ({type(err).__name__}: {first})") from None


def _is_unet(model: Any) -> bool:
    return type(model).__name__ in UNETS and type(model).__module__.startswith("diffusers")


def _unet_of(model: Any) -> nn.Module:
    """The UNet of a VPDenoiser, a pipeline or the UNet itself."""
    return model if _is_unet(model) else model.unet


def _alphas_cumprod(model: Any) -> torch.Tensor:
    from diffusers import DDPMScheduler

    if hasattr(model, "alphas_cumprod"):  # a VPDenoiser
        return model.alphas_cumprod
    scheduler = getattr(model, "scheduler", None)  # a pipeline
    if scheduler is not None and hasattr(scheduler, "alphas_cumprod"):
        return scheduler.alphas_cumprod
    return DDPMScheduler().alphas_cumprod  # a bare UNet: diffusers' default training schedule


def _text_embeds(spec: DiffusersModel, tokenizer: Any, encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt embeddings (P, L, D), the negative prompt's (1, L, D)) from the prompts file through the
    pipeline's own tokenizer and text encoder."""
    prompts = _prompt_lines(spec.prompts)
    encoder = encoder.eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return encoder(ids.to(next(encoder.parameters()).device)).last_hidden_state.float().cpu()

    return encode(prompts), encode([spec.negative_prompt])


def _prompt_lines(path: str) -> list[str]:
    from skipsearch import textfiles

    lines = [line.strip() for line in textfiles.read_text(path, "prompts file").splitlines()]
    prompts = [line for line in lines if line]
    if not prompts:
        raise UserError(f"{path}: the prompts file has no prompts (one per line)")
    return prompts


def _embeds_file(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(f"model.prompt_embeds: {path} not found")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"model.prompt_embeds: {path} is not a safetensors file ({err})") from None
    embeds, negative = tensors.get("prompt_embeds"), tensors.get("negative_prompt_embeds")
    if embeds is None or embeds.dim() != 3 or not len(embeds):
        raise UserError(f"model.prompt_embeds: {path} needs a tensor 'prompt_embeds' shaped (prompts, tokens, dim)")
    if negative is not None:
        negative = negative.reshape(1, *embeds.shape[1:]) if negative.numel() == embeds[0].numel() else None
        if negative is None:
            raise UserError(f"model.prompt_embeds: 'negative_prompt_embeds' must have one prompt's shape "
                            f"{tuple(embeds.shape[1:])}")
    return embeds.float(), None if negative is None else negative.float()


def _schedule(where: Path | dict[str, Any] | None, prediction_type: str | None,
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
        self.layout = layout = _layout(spec)
        self.where = str(layout.unet)
        self.config = _config(layout.unet, "config.json", "the UNet")
        self.cls = _unet_class(self.config, layout.unet)
        self.unet_weights = _weights(layout.unet, spec, "the UNet's weights")
        self.vae_weights = None if layout.vae is None else _weights(layout.vae, spec, "the VAE's weights")
        self.vae_config = None if layout.vae is None else _config(layout.vae, "config.json", "the VAE")
        self.scheduler_config, self.alphas = _schedule(layout.scheduler, spec.prediction_type, str(layout.scheduler))

    def weights_hash(self, spec: DiffusersModel) -> str:
        files = [self.unet_weights, *([self.vae_weights] if self.vae_weights else [])]
        if spec.prompts or spec.prompt_embeds:
            files.append(Path(spec.prompts or spec.prompt_embeds))
        if spec.prompts and self.layout.text_encoder is not None:
            files.append(_weights(self.layout.text_encoder, spec, "the text encoder's weights"))
        return hashlib.sha256("|".join(file_hash(f) for f in files).encode()).hexdigest()[:16]

    def unet(self) -> nn.Module:
        folder = self.layout.unet
        return _loaded(lambda: self.cls.from_pretrained(folder, use_safetensors=_safe(self.unet_weights),
                                                        low_cpu_mem_usage=False), folder)

    def vae(self) -> nn.Module | None:
        from diffusers import AutoencoderKL

        folder = self.layout.vae
        if folder is None:
            return None
        return _loaded(lambda: AutoencoderKL.from_pretrained(folder, use_safetensors=_safe(self.vae_weights),
                                                             low_cpu_mem_usage=False), folder)

    def text(self, spec: DiffusersModel) -> tuple[Any, nn.Module]:
        layout = self.layout
        if layout.tokenizer is None or layout.text_encoder is None:
            raise UserError(f"model.prompts: {spec.path} has no tokenizer and text_encoder folders to encode prompts "
                            f"with; give model.prompt_embeds instead")
        import transformers

        _weights(layout.text_encoder, spec, "the text encoder's weights")
        tokenizer = _loaded(lambda: transformers.AutoTokenizer.from_pretrained(layout.tokenizer), layout.tokenizer)
        encoder = _loaded(lambda: transformers.AutoModel.from_pretrained(layout.text_encoder, use_safetensors=True),
                          layout.text_encoder)
        return tokenizer, encoder


@dataclass(frozen=True)
class Handed:
    """A UNet or pipeline handed over in this process, with the digest of its weights taken then."""

    model: Any
    digests: dict[str, str]  # part -> content digest of its state dict


_HANDED: dict[str, Handed] = {}  # model.name -> the object handed to skipsearch.run in this process


class ObjectSource(Source):
    """The user's own objects, used as they are (not copied): skipsearch removes what it puts on them."""

    def __init__(self, spec: DiffusersModel, handed: Handed) -> None:
        self.handed, model = handed, handed.model
        self.where = f"the handed-over {type(model).__name__} {spec.name!r}"
        unet = _unet_of(model)
        self.cls, self.config = type(unet), dict(unet.config)
        vae = getattr(model, "vae", None)
        self.vae_config = None if vae is None else dict(vae.config)
        scheduler = getattr(model, "scheduler", None)
        config = None if scheduler is None else dict(scheduler.config)
        self.scheduler_config, self.alphas = _schedule(config, spec.prediction_type, self.where)

    def weights_hash(self, spec: DiffusersModel) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.handed.digests.items())
                 if k != "text_encoder" or spec.prompts]
        if spec.prompt_embeds or spec.prompts:
            parts.append(file_hash(Path(spec.prompts or spec.prompt_embeds)))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def unet(self) -> nn.Module:
        return _unet_of(self.handed.model)

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
    if not (_is_unet(model) or _is_unet(getattr(model, "unet", None))):
        raise UserError(f"model= for family diffusers takes a {' or '.join(UNETS)}, or a pipeline holding one as "
                        f".unet; got {type(model).__name__} (any other network: family hooked)")
    from skipsearch.safeload import content_digest

    parts = {"unet": _unet_of(model), "vae": getattr(model, "vae", None),
             "text_encoder": getattr(model, "text_encoder", None)}
    digests = {k: content_digest(m.state_dict()) for k, m in parts.items() if isinstance(m, nn.Module)}
    _HANDED[spec.name] = Handed(model, digests)


def _source(spec: DiffusersModel) -> Source:
    if spec.path is not None:
        return FolderSource(spec)
    handed = _HANDED.get(spec.name)
    if handed is None:
        raise UserError(f"model.name {spec.name!r} names no folder (model.path) and no network handed over in this "
                        f"process: pass it through the Python API, skipsearch.run(spec, model=unet_or_pipeline)")
    return ObjectSource(spec, handed)


def _safe(weights: Path) -> bool:
    return weights.suffix == ".safetensors"


class DiffusersFamily(Family):
    name = "diffusers"
    spec_class = DiffusersModel

    def lookup(self, spec: DiffusersModel) -> None:
        if spec.path is not None:
            _layout(spec)
        else:
            _source(spec)

    def hand_over(self, spec: DiffusersModel, model: Any) -> None:
        hand_over(model, spec)

    def info(self, spec: DiffusersModel) -> ModelInfo:
        return self._info(spec, _source(spec))

    def _info(self, spec: DiffusersModel, source: Source) -> ModelInfo:
        config, cls = source.config, source.cls
        with torch.device("meta"):  # the structure without memory or weights
            unet = cls.from_config(config)
        skips = tuple(SkipInfo(index=p.index, level=p.level, path=p.path) for p in tuple_skips(unet))
        size = _square(config.get("sample_size", 0), f"{source.where} config")
        channels, resolution, noise_shape = config.get("out_channels", 3), size, ()
        if source.vae_config is not None:
            vae = source.vae_config
            noise_shape = (config.get("in_channels", 4), size, size)
            channels = vae.get("out_channels", 3)
            resolution = size * 2 ** (len(vae.get("block_out_channels", [0])) - 1)
        conditions: tuple[int, ...] = ()
        guidance = False
        if cls.__name__ == "UNet2DConditionModel":
            if not (spec.prompts or spec.prompt_embeds):
                raise UserError("a UNet2DConditionModel is conditioned on text: give model.prompts (a file, one "
                                "prompt per line) or model.prompt_embeds (a safetensors file)")
            if spec.prompts:
                count, guidance = len(_prompt_lines(spec.prompts)), True  # the negative prompt is the null input
            else:
                embeds, negative = _embeds_file(spec.prompt_embeds)
                count, guidance = len(embeds), negative is not None
            conditions = tuple(range(count))
        elif spec.prompts or spec.prompt_embeds:
            raise UserError(f"model.prompts: {cls.__name__} takes no text (only UNet2DConditionModel does)")
        elif config.get("num_class_embeds"):
            conditions = tuple(range(int(config["num_class_embeds"])))
        schedule = VPSchedule(source.alphas)
        return ModelInfo(model_id=spec.model_id, family=self.name, weights_hash=source.weights_hash(spec),
                         img_channels=channels, resolution=resolution, skips=skips, reference="",
                         conditions=conditions, noise_shape=noise_shape, schedulers=True, guidance=guidance,
                         sigma_range=(schedule.sigma_min, schedule.sigma_max), freeu=hasattr(cls, "enable_freeu"))

    def load(self, spec: DiffusersModel) -> LoadedModel:
        """A fresh copy from a folder; a handed-over object is the user's own (as the hooked family's is)."""
        from skipsearch.diffusion.vp import VPDenoiser

        source = _source(spec)
        info = self._info(spec, source)  # checks every part before anything is loaded
        unet = source.unet()
        embeds = negative = None
        if spec.prompts:
            embeds, negative = _text_embeds(spec, *source.text(spec))
        elif spec.prompt_embeds:
            embeds, negative = _embeds_file(spec.prompt_embeds)
        denoiser = VPDenoiser(unet, source.alphas, source.scheduler_config["prediction_type"],
                              scheduler_config=source.scheduler_config, prompt_embeds=embeds, null_embeds=negative,
                              vae=source.vae())
        denoiser.eval().requires_grad_(False)
        return LoadedModel(denoiser, info)

    def matches(self, model: Any) -> bool:
        return _is_unet(model) or _is_unet(getattr(model, "unet", None))

    def skip_points(self, model: Any) -> list[SkipPoint]:
        return list(tuple_skips(_unet_of(model)))

    def hook_root(self, model: Any) -> nn.Module:
        return _unet_of(model)

    def sigma_of(self, model: Any) -> SigmaOf:
        schedule = model.schedule if hasattr(model, "schedule") else VPSchedule(_alphas_cumprod(model))

        def read(args: tuple, kwargs: dict) -> torch.Tensor:
            t = kwargs["timestep"] if "timestep" in kwargs else args[1]
            t = torch.as_tensor(t)
            return schedule.sigma(t).reshape(-1)

        return read

    def freeu_target(self, model: Any) -> Any:
        unet = _unet_of(model)
        if not hasattr(unet, "enable_freeu"):
            raise UserError(f"FreeU: diffusers' {type(unet).__name__} has no enable_freeu (its up blocks are not "
                            f"told their stage); diffusers supports FreeU on UNet2DConditionModel")
        return unet
