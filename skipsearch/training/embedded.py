"""Regenerate the shipped weights: ``python -m skipsearch.training.embedded [--out DIR]``.

Trains the digit classifier (the demo's feature extractor) and the embedded EDM UNet on scikit-learn's
digits upsampled to 16x16. Seeded, CPU-only; the log goes to stdout. ``--source-digits`` trains the
Diff-Tuning demo's pre-trained model instead: the same UNet, class-conditional, on digits 0-4 only
(``python -m skipsearch.training.embedded --source-digits --unet-steps 5000``).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from skipsearch import data
from skipsearch.diffusion.preconditioning import edm_loss
from skipsearch.metrics.digits import DIGITS_WEIGHTS, DigitClassifier, to_classifier_input
from skipsearch.models.embedded_family import SHIPPED

DIGITS, SOURCE = SHIPPED["embedded-digits"], SHIPPED["digits-0to4"]

SEED = 20260101


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to one pixel, so the classifier's features do not key on exact placement."""
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train_classifier(steps: int = 3000, seed: int = SEED) -> tuple[DigitClassifier, float]:
    g = torch.Generator().manual_seed(seed)
    images, labels = to_classifier_input(data.digits(16)), data.digit_labels()
    perm = torch.randperm(len(images), generator=g)
    test, train = perm[:300], perm[300:]
    net = DigitClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(steps):
        idx = train[torch.randint(len(train), (128,), generator=g)]
        loss = F.cross_entropy(net(_augment(images[idx], g)), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(f"classifier step {step:5d} loss {loss.item():.4f}", flush=True)
    net.eval()
    with torch.no_grad():
        acc = (net(images[test]).argmax(1) == labels[test]).float().mean().item()
        net.feature_scale.fill_(net.features(images).pow(2).mean().sqrt().item())
    print(f"classifier held-out accuracy {acc:.4f} on {len(test)} images; "
          f"feature scale {net.feature_scale.item():.4f}", flush=True)
    return net, acc


def train_unet(steps: int, seed: int = SEED, batch: int = 128, lr: float = 2e-3, ema: float = 0.999,
               classes: tuple[int, ...] | None = None, num_classes: int = 0, label_dropout: float = 0.1):
    """Unconditional, or (num_classes > 0) class-conditional with a fraction ``label_dropout`` of each batch
    trained under the null label, so the same network is also the unconditional model of its classes."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    x0 = data.to_model_range(data.digits(16, classes))
    labels = data.digit_labels(classes)
    model = (SOURCE if num_classes else DIGITS).build()
    ema_model = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x0), (batch,), generator=g)
        y = None
        if num_classes:
            drop = torch.rand(batch, generator=g) < label_dropout
            y = torch.where(drop, torch.full_like(labels[idx], num_classes), labels[idx])
        loss = edm_loss(model, x0[idx], generator=g, class_labels=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for p_ema, p in zip(ema_model.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - ema)
        if step % 500 == 0 or step == steps - 1:
            print(f"unet step {step:6d} loss {loss.item():.4f} {time.perf_counter() - start:7.1f}s", flush=True)
    return ema_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "weights")
    parser.add_argument("--unet-steps", type=int, default=DIGITS.training["steps"])
    parser.add_argument("--skip-classifier", action="store_true")
    parser.add_argument("--source-digits", action="store_true",
                        help=f"train only the UNet, on digits {SOURCE.classes} (the Diff-Tuning demo's source)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.source_digits:
        unet = train_unet(args.unet_steps, classes=SOURCE.classes, num_classes=SOURCE.num_classes,
                          label_dropout=SOURCE.training["label_dropout"])
        torch.save(unet.net.state_dict(), args.out / SOURCE.weights)
        print(f"wrote {args.out / SOURCE.weights}", flush=True)
        return
    if not args.skip_classifier:
        classifier, _ = train_classifier()
        torch.save(classifier.state_dict(), args.out / DIGITS_WEIGHTS)
    unet = train_unet(args.unet_steps)
    torch.save(unet.net.state_dict(), args.out / DIGITS.weights)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
