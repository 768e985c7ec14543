"""The shipped Fashion-MNIST UNet's baseline curve: standard Inception FID/KID against the test set, by NFE.

    python scripts/fashion_baseline.py [--n 10000] [--steps 5 10 18] [--device cuda] [--data DIR]

Samples use seeds 0..n-1 (Heun, EDM time steps); the reference is the 10,000-image test split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from skipsearch import data
from skipsearch.diffusion.generation import SamplerConfig, generate
from skipsearch.metrics import FeatureExtractor, fid, kid, reference
from skipsearch.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 18])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", type=Path, default=data.FASHION_DATA)
    args = parser.parse_args()
    model = load_model("fashion-mnist-unet").denoiser.to(args.device)
    fx = FeatureExtractor("inception-v3-compat", device=args.device)
    ref = reference(data.fashion_mnist("test", 32, args.data), fx).to(args.device)
    print(f"reference: Fashion-MNIST test, {len(ref.features)} images, key {ref.key}; extractor {fx.name}")
    print("steps  NFE   N       FID        KID        sample s  feature s")
    for steps in args.steps:
        sampler = SamplerConfig("heun", steps)
        start = time.perf_counter()
        images = generate(model, range(args.n), (1, 32, 32), sampler, batch_size=1000, device=args.device)
        sampled = time.perf_counter() - start
        feats = fx(images, batch_size=250)
        featured = time.perf_counter() - start - sampled
        value = fid(feats, ref.stats)
        kid_mean, _ = kid(feats, ref.features, 1000)
        print(f"{steps:5d}  {sampler.nfe:3d}  {args.n:6d}  {value:9.4f}  {kid_mean:9.6f}  {sampled:8.1f}  "
              f"{featured:9.1f}")


if __name__ == "__main__":
    main()
