"""The knowledge bank: images sampled once from the pre-trained model, before any fine-tuning, cached on disk
by (model hash, sampler, count, seed) and reused by every trial and every run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from skipsearch.diffusion.generation import SamplerConfig, generate
from skipsearch.metrics.cache import cache_file, cached_array, write_cached_array
from skipsearch.models import LoadedModel


def bank_path(loaded: LoadedModel, sampler: SamplerConfig, count: int, seed: int) -> Path:
    key = json.dumps({"model": loaded.info.model_id, "hash": loaded.info.weights_hash, "sampler": asdict(sampler),
                      "count": count, "seed": seed}, sort_keys=True)
    return cache_file("bank", loaded.info.model_id, hashlib.sha256(key.encode()).hexdigest()[:16])


def knowledge_bank(loaded: LoadedModel, sampler: SamplerConfig, count: int, seed: int = 2_000_000,
                   batch_size: int = 500, device: str = "cpu", progress: bool = True) -> torch.Tensor:
    """uint8 images sampled from the pre-trained model before any fine-tuning, cached on disk by
    (model hash, sampler, count, seed) and reused by every trial. Sampling it (once) reports its progress
    as "knowledge bank" unless ``progress`` is False."""
    path = bank_path(loaded, sampler, count, seed)
    info = loaded.info
    shape = (count, info.img_channels, info.resolution, info.resolution)
    images = cached_array(path, "images")
    if images is not None and tuple(images.shape) == shape and images.dtype == torch.uint8:
        return images
    images = generate(loaded.denoiser, range(seed, seed + count), shape[1:], sampler, batch_size=batch_size,
                      device=device, progress=progress, desc="knowledge bank")
    write_cached_array(path, "images", images)
    return images


