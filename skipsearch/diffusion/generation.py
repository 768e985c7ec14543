"""Seeded sampling: the noise of sample i comes from its own generator seeded by seeds[i].

A trial's images therefore do not depend on batch size, worker count or placement, and every trial
of a study sees the same noise (common random numbers). EDM's samplers (``heun``, ``euler``) run on any
family's denoiser; a family's own samplers (diffusers' schedulers ``ddim``, ``dpmpp_2m``, ``euler_discrete``)
and its decoding (a latent model's VAE) are reached through its denoiser's ``FamilySampling``
(``family_sampling``): this module names no family.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from skipsearch import deadline
from skipsearch.data import to_uint8
from skipsearch.errors import SampleError
from skipsearch.diffusion.family_sampling import FamilySampling, no_scheduler, sampling_of
from skipsearch.diffusion.karras import karras_sigmas
from skipsearch.diffusion.kinds import kind_of
from skipsearch.diffusion.samplers import get_sampler, nfe, step_calls
from skipsearch.diffusion.trajectories import Sharing
from skipsearch.progress import Progress


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "heun"
    steps: int = 10
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    guidance_scale: float = 1.0  # classifier-free guidance; 1 = none
    cfg_batched: bool = True  # with guidance: the conditional and unconditional passes share one batch

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    def guidance(self) -> dict[str, float | bool]:
        """The guidance keywords of a network call: none without guidance."""
        return {"guidance_scale": self.guidance_scale, "cfg_batched": self.cfg_batched} if self.guided else {}

    @property
    def scheduler(self) -> bool:
        """Whether a diffusers scheduler drives the sampling (else one of EDM's samplers)."""
        return kind_of(self.name).drives == "scheduler"

    @property
    def nfe(self) -> int:
        """Network evaluations per sample: with guidance, the conditional and unconditional passes both
        count, batched together or not."""
        return nfe(self.name, self.steps) * (2 if self.guided else 1)

    def sigmas(self) -> torch.Tensor:
        return karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)

    def evaluations_per_step(self) -> list[int]:
        """Network evaluations per sample in each step of an EDM sampler (guidance counts twice, as in nfe)."""
        return [len(c) * (2 if self.guided else 1) for c in step_calls(self.name, self.sigmas())]


def latents(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise, one CPU generator per sample, so it is the same on every device."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


class _NoiseMemo:
    """Chunks' noise, least recently used out past a byte limit (a running count, not a sum per insert)."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes, self.nbytes = limit_bytes, 0
        self._chunks: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> torch.Tensor | None:
        with self._lock:
            if key not in self._chunks:
                return None
            self._chunks.move_to_end(key)
            return self._chunks[key].clone()

    def put(self, key: tuple, noise: torch.Tensor) -> None:
        size = noise.numel() * noise.element_size()
        with self._lock:
            if size > self.limit_bytes or key in self._chunks:  # too big, or another thread was first
                return
            self._chunks[key] = noise.clone()
            self.nbytes += size
            while self.nbytes > self.limit_bytes:
                _, dropped = self._chunks.popitem(last=False)
                self.nbytes -= dropped.numel() * dropped.element_size()


_noise = _NoiseMemo(256 * 2**20)


def chunk_noise(seeds: Sequence[int], shape: tuple[int, ...]) -> torch.Tensor:
    """``latents`` of a chunk, remembered (up to 256 MiB, least recently used out): every trial of a study draws
    the same seeds, and one generator per sample costs about 0.1 ms each on the CPU, every trial. A fresh copy is
    returned, so no caller can change the remembered noise."""
    key = (tuple(int(s) for s in seeds), tuple(shape))
    noise = _noise.get(key)
    if noise is None:
        noise = latents(seeds, shape)
        _noise.put(key, noise)
    return noise


def _within_deadline(denoiser: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The denoiser, checking the trial's deadline before every network evaluation."""

    def call(*args, **kwargs):
        deadline.check()
        return denoiser(*args, **kwargs)

    return call


def generate(denoiser: nn.Module, seeds: Sequence[int], shape: tuple[int, ...], sampler: SamplerConfig, *,
             batch_size: int = 500, device: torch.device | str = "cpu", progress: bool = False,
             labels: Sequence[int] | None = None, desc: str = "sampling",
             wrap: Callable[[Callable], Callable] = lambda f: f, share: Sharing | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) for the given seeds, from noise of ``shape`` per sample; ``labels`` (one per
    seed) index a conditional model's conditions, else the model samples unconditionally. ``wrap`` is put
    around every network call (timing). ``progress`` counts samples under ``desc`` (``skipsearch.progress``).
    ``share``: the first steps are the baseline's, from (and into) its cache."""
    device = torch.device(device)
    check_sampler(denoiser, sampler)
    out = []
    with Progress(len(seeds), desc, "samples", enabled=progress, leave=False) as bar:
        for start in range(0, len(seeds), batch_size):
            chunk = seeds[start : start + batch_size]
            x = sample_seeds(denoiser, chunk, shape, sampler, device=device, wrap=wrap, share=share,
                             labels=None if labels is None else labels[start : start + batch_size])
            if not torch.isfinite(x).all():
                raise SampleError(non_finite(start, len(x)))
            out.append(to_uint8(x).cpu())
            bar.update(len(x))
    return torch.cat(out)


def check_sampler(denoiser: nn.Module, sampler: SamplerConfig) -> None:
    """A scheduler's name on a denoiser whose family runs no schedulers is refused before any sampling."""
    own = sampling_of(denoiser)
    if sampler.scheduler and (own is None or not own.drives_schedulers):
        raise no_scheduler(sampler.name)


def non_finite(start: int, count: int) -> str:
    return f"non-finite values in samples {start}..{start + count - 1} (NaN or inf)"


def sample_seeds(denoiser: nn.Module, seeds: Sequence[int], shape: tuple[int, ...], sampler: SamplerConfig, *,
                 device: torch.device, labels: Sequence[int] | None = None, copies: int = 1,
                 wrap: Callable[[Callable], Callable] = lambda f: f, share: Sharing | None = None) -> torch.Tensor:
    """One network batch: the samples (float, on ``device``, decoded when the model is latent) of ``seeds``,
    ``copies`` times over (copy c is rows c*len(seeds) ...): several trials sharing a batch see the same noise.
    ``share``: the first ``share.steps`` steps are the baseline's (for every copy): start from its latest cached
    state, and cache the shared states computed here."""
    noise = chunk_noise(seeds, shape).to(device)
    y = None
    if labels is not None:
        y = torch.as_tensor(list(labels), dtype=torch.long, device=device)
    if share is not None and (sampler.scheduler or share.steps == 0):
        share = None  # a diffusers scheduler's state is more than x (multistep history); nothing to share
    key = (tuple(int(s) for s in seeds), None if labels is None else tuple(int(c) for c in labels), sampler,
           tuple(shape), str(device), _weights_version(denoiser)) if share is not None else ()
    if copies > 1:
        noise = noise.repeat(copies, *([1] * (noise.dim() - 1)))
        y = None if y is None else y.repeat(copies)
    x = _sample(denoiser, noise, sampler, y, wrap, share, key, copies)
    own = sampling_of(denoiser)
    return x if own is None else wrap(own.decode)(x)


def _weights_version(denoiser: nn.Module) -> int:
    """Changes whenever a parameter is changed in place (a fine-tuning step), so such a model never resumes from
    states its older weights computed: torch counts in-place writes per tensor."""
    return sum(p._version for p in denoiser.parameters())


def _edm_network(denoiser: nn.Module, sampler: SamplerConfig, y: torch.Tensor | None) -> Callable[..., torch.Tensor]:
    """D(x, sigma) as EDM's samplers call it: with the batch's labels and the guidance settings bound."""
    labels = {"class_labels": y} if y is not None else {}
    return functools.partial(denoiser, **labels, **sampler.guidance())


def _sample(denoiser: nn.Module, noise: torch.Tensor, sampler: SamplerConfig, y: torch.Tensor | None,
            wrap: Callable[[Callable], Callable], share: Sharing | None = None, key: tuple = (),
            copies: int = 1) -> torch.Tensor:
    if sampler.scheduler:
        own = sampling_of(denoiser) or FamilySampling()  # the base refuses, naming the sampler
        return own.sample_scheduled(noise, sampler, y, lambda f: _within_deadline(wrap(f)))
    sigmas = sampler.sigmas()
    net = _within_deadline(wrap(_edm_network(denoiser, sampler, y)))
    run = get_sampler(sampler.name)
    if share is None:
        return run(net, noise * float(sigmas[0]), sigmas)
    start, x = 0, noise * float(sigmas[0])
    cached = share.cache.latest(key, share.steps)
    if cached is not None:
        start, state = cached
        x = state.to(noise.device).repeat(copies, *([1] * (state.dim() - 1)))
        share.saved += sum(sampler.evaluations_per_step()[:start]) * len(noise)

    def keep(step: int, state: torch.Tensor) -> None:
        """Cache a shared state computed here; only from a batch of one trial, so that a cached state is the
        one the trial alone would compute, whatever the kernels do with larger batches."""
        if 0 < step <= share.steps and copies == 1:
            share.cache.put(key, step, state)

    return run(net, x, sigmas, start, keep)


class _Reached(Exception):
    """Ends a probing network call at the hooked module, before any work is done."""


def hook_sigmas(denoiser: nn.Module, sampler: SamplerConfig, shape: tuple[int, ...], device: torch.device,
                labels: Sequence[int] | None, root: nn.Module,
                read: Callable[[tuple, dict], torch.Tensor]) -> list[tuple[float, ...]] | None:
    """Per step of an EDM sampler, the noise levels that a pre-hook on ``root`` reads (``read(args, kwargs)``)
    in that step's network calls. The model may turn the sampler's sigma into something else before its hooks
    see it (a VP model's fractional timestep, in float32), so this asks the model: each call is made on one
    sample, exactly as the sampler makes it, and stopped when it reaches ``root``. None when it never does."""
    seen: dict[int, float] = {}
    sigmas = sampler.sigmas()
    on_device = sigmas.to(device)
    y = None if labels is None else torch.as_tensor(list(labels)[:1], dtype=torch.long, device=device)
    net = _edm_network(denoiser, sampler, y)
    x = torch.zeros((1, *shape), device=device)

    def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
        raise _Reached(float(read(args, kwargs).reshape(-1)[0]))

    handle = root.register_forward_pre_hook(stop, with_kwargs=True, prepend=True)
    try:
        with torch.no_grad():
            for i in range(len(sigmas) - 1):
                try:
                    net(x, on_device[i].to(x.dtype))
                except _Reached as reached:
                    seen[i] = reached.args[0]
                else:
                    return None
    finally:
        handle.remove()
    return [tuple(seen[i] for i in calls) for calls in step_calls(sampler.name, sigmas)]
