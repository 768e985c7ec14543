"""A discrete-time (DDPM/VP) network as an EDM denoiser, so EDM's samplers and skipsearch's hooks treat it like
any other model.

A VP network sees x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at integer timestep t. In EDM's terms that is
x = x0 + sigma eps scaled by sqrt(abar), with sigma = sqrt((1 - abar) / abar). So D(x, sigma) feeds the network
x / sqrt(1 + sigma^2) at the (fractional) timestep whose sigma that is, and turns its prediction into x0:
eps -> x - sigma eps; v -> sqrt(abar) x_t - sqrt(1 - abar) v; sample -> itself.

``VPDenoiser`` also holds what conditions the network (class labels, or prompt embeddings indexed like labels),
classifier-free guidance, and a latent model's VAE decoder; as the diffusers family's ``FamilySampling`` it
samples through diffusers' own schedulers (``diffusers_schedulers``) and decodes latents, which the generic
sampler reaches without knowing the family.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from skipsearch.diffusion.family_sampling import FamilySampling, Wrap

if TYPE_CHECKING:
    from skipsearch.diffusion.generation import SamplerConfig

Prediction = Literal["epsilon", "v_prediction", "sample"]


class VPSchedule:
    """sigma <-> t for a discrete schedule, interpolating log sigma linearly between integer timesteps."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        abar = alphas_cumprod.to(torch.float64)
        self.log_sigmas = ((1 - abar) / abar).sqrt().log()  # increasing in t
        self._on: dict[torch.device, torch.Tensor] = {}

    def _table(self, device: torch.device) -> torch.Tensor:
        """The table on ``device``, copied there once (not on every network call)."""
        if device not in self._on:
            self._on[device] = self.log_sigmas.to(device)
        return self._on[device]

    @property
    def sigma_min(self) -> float:
        return float(self.log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:
        return float(self.log_sigmas[-1].exp())

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma at (possibly fractional) timesteps, float64, on t's device."""
        log_sigmas = self._table(t.device)
        t = t.to(torch.float64).clamp(0, len(log_sigmas) - 1)
        low = t.floor().long().clamp(max=len(log_sigmas) - 2)
        w = t - low
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[low + 1]).exp()

    def t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The fractional timestep of each sigma (clamped to the schedule's range), float64."""
        log_sigmas = self._table(sigma.device)
        s = sigma.to(torch.float64).log().clamp(log_sigmas[0], log_sigmas[-1])
        high = torch.searchsorted(log_sigmas, s).clamp(1, len(log_sigmas) - 1)
        low = high - 1
        w = (s - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])
        return low + w


class VPDenoiser(nn.Module, FamilySampling):
    """D(x, sigma[, class_labels]) over a diffusers UNet; ``class_labels`` index the model's conditions (class
    labels, or rows of ``prompt_embeds``). ``model_output`` is the network's own prediction at timestep t, with
    guidance, as diffusers' schedulers want it."""

    drives_schedulers: ClassVar[bool] = True

    def __init__(self, unet: nn.Module, alphas_cumprod: torch.Tensor, prediction: Prediction, *,
                 scheduler_config: dict[str, Any] | None = None, prompt_embeds: torch.Tensor | None = None,
                 null_embeds: torch.Tensor | None = None, vae: nn.Module | None = None):
        super().__init__()
        self.unet, self.vae, self.prediction = unet, vae, prediction
        self.schedule = VPSchedule(alphas_cumprod)
        self.scheduler_config = dict(scheduler_config or {})
        self.register_buffer("alphas_cumprod", alphas_cumprod.to(torch.float64), persistent=False)
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)
        self.register_buffer("null_embeds", null_embeds, persistent=False)

    @property
    def text(self) -> bool:
        return self.prompt_embeds is not None

    def network(self) -> nn.Module:
        """The UNet: diffusers' schedulers call it through ``model_output``, never this wrapper's ``forward``."""
        return self.unet

    def _call(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None, null: bool = False) -> torch.Tensor:
        if self.text:
            embeds = self.null_embeds.expand(len(x), -1, -1) if null else self.prompt_embeds[cond]
            return self.unet(x, t, encoder_hidden_states=embeds.to(x.dtype)).sample
        if cond is not None:
            return self.unet(x, t, class_labels=cond).sample
        return self.unet(x, t).sample

    def model_output(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                     guidance_scale: float = 1.0, cfg_batched: bool = True) -> torch.Tensor:
        """The network's prediction at timestep(s) t; with guidance, uncond + scale (cond - uncond), from one
        batch of 2B (``cfg_batched``) or two calls."""
        if guidance_scale == 1.0:
            return self._call(x, t, cond)
        if cond is None or not self.text:
            raise ValueError("classifier-free guidance needs a text-conditioned model (a null prompt)")
        if cfg_batched:
            tt = t.repeat(2) if t.dim() else t
            embeds = torch.cat([self.null_embeds.expand(len(x), -1, -1), self.prompt_embeds[cond]]).to(x.dtype)
            uncond, conditional = self.unet(torch.cat([x, x]), tt, encoder_hidden_states=embeds).sample.chunk(2)
        else:
            uncond, conditional = self._call(x, t, cond, null=True), self._call(x, t, cond)
        return uncond + guidance_scale * (conditional - uncond)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                guidance_scale: float = 1.0, cfg_batched: bool = True) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1).expand(x.shape[0])
        abar = 1 / (1 + sigma**2)
        x_t = x * abar.sqrt().to(x.dtype)[:, None, None, None]
        t = self.schedule.t(sigma).to(x.dtype)
        out = self.model_output(x_t, t, class_labels, guidance_scale, cfg_batched)
        s = sigma.to(x.dtype)[:, None, None, None]
        if self.prediction == "epsilon":
            return x - s * out
        if self.prediction == "v_prediction":
            a = abar.to(x.dtype)[:, None, None, None]
            return a.sqrt() * x_t - (1 - a).sqrt() * out
        return out

    def sample_scheduled(self, noise: torch.Tensor, sampler: SamplerConfig, labels: torch.Tensor | None,
                         wrap: Wrap) -> torch.Tensor:
        """x_0 through diffusers' scheduler ``sampler.name``, built from the model's training schedule as its own
        pipeline builds it; every network call goes through ``wrap``."""
        from skipsearch.models.diffusers_schedulers import sample_scheduler

        output = wrap(functools.partial(self.model_output, cond=labels, **sampler.guidance()))
        return sample_scheduler(output, noise, sampler.name, sampler.steps, self.scheduler_config)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """A latent model's latents -> images in [-1, 1] through its VAE; a pixel model's x as it is."""
        if self.vae is None:
            return x
        scale = getattr(self.vae.config, "scaling_factor", 1.0)
        return self.vae.decode(x / scale).sample


Network = Callable[..., torch.Tensor]
