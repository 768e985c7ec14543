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

from pathlib import Path
from typing import TYPE_CHECKING, Any


from skipsearch.errors import UserError
from skipsearch.models import diffusers_parts as parts
from skipsearch.models.diffusers_section import DiffusersModel
from skipsearch.models.family import Family, LoadedModel, ModelInfo, SkipInfo, handed

if TYPE_CHECKING:  # torch where a network is handled: parsing a spec's section needs none
    import torch
    from torch import nn

    from skipsearch.hooks import SkipPoint, TupleSkip
    from skipsearch.hooks.scaling import SigmaOf


def _square(size: Any, what: str) -> int:
    sizes = size if isinstance(size, (list, tuple)) else (size, size)
    if len(sizes) != 2 or sizes[0] != sizes[1] or not isinstance(sizes[0], int):
        raise UserError(f"{what}: sample_size {size!r}: skipsearch samples square images")
    return sizes[0]


def tuple_skips(unet: nn.Module) -> list[TupleSkip]:
    """Every entry of ``down_block_res_samples`` as the up block that pops it sees it, outermost first."""
    from skipsearch.hooks import TupleSkip

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
    import torch

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


class DiffusersFamily(Family):
    name = "diffusers"
    spec_class = DiffusersModel

    def lookup(self, spec: DiffusersModel) -> None:
        if spec.path is not None:
            parts.find_layout(spec)
        else:
            parts.source(spec)

    def hand_over(self, spec: DiffusersModel, model: Any) -> None:
        parts.hand_over(model, spec)

    def missing_network(self, spec: DiffusersModel) -> str | None:
        return "pipe" if spec.path is None and handed("diffusers", spec.name) is None else None

    def info(self, spec: DiffusersModel) -> ModelInfo:
        return self._info(spec, parts.source(spec))

    def _info(self, spec: DiffusersModel, source: parts.Source) -> ModelInfo:
        import torch

        from skipsearch.models.diffusers_vp import VPSchedule

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
        from skipsearch.models.diffusers_vp import VPDenoiser

        source = parts.source(spec)
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
        return parts.is_unet(model) or parts.is_unet(getattr(model, "unet", None))

    def skip_points(self, model: Any) -> list[SkipPoint]:
        return list(tuple_skips(parts.unet_of(model)))

    def hook_root(self, model: Any) -> nn.Module:
        return parts.unet_of(model)

    def sigma_of(self, model: Any) -> SigmaOf:
        import torch

        from skipsearch.models.diffusers_vp import VPSchedule

        schedule = model.schedule if hasattr(model, "schedule") else VPSchedule(_alphas_cumprod(model))

        def read(args: tuple, kwargs: dict) -> torch.Tensor:
            t = kwargs["timestep"] if "timestep" in kwargs else args[1]
            t = torch.as_tensor(t)
            return schedule.sigma(t).reshape(-1)

        return read

    def freeu_target(self, model: Any) -> Any:
        unet = parts.unet_of(model)
        if not hasattr(unet, "enable_freeu"):
            raise UserError(f"FreeU: diffusers' {type(unet).__name__} has no enable_freeu (its up blocks are not "
                            f"told their stage); diffusers supports FreeU on UNet2DConditionModel")
        return unet
