"""The Diff-Tuning training loop: mixed batches of new images and bank images, noise levels drawn by the
trial's exponents (``noise``), trained in place and reporting at the evaluation steps."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from skipsearch import deadline
from skipsearch.diffusion.preconditioning import EDMPrecond
from skipsearch.errors import DivergedError
from skipsearch.methods.diff_tuning.noise import diff_tuning_loss
from skipsearch.methods.diff_tuning.recipe import DiffTuningWeights
from skipsearch.progress import Progress


def finetune(denoiser: EDMPrecond, new_images: torch.Tensor, bank: torch.Tensor | None, w: DiffTuningWeights,
             *, batch_size: int, sigma_range: tuple[float, float], seed: int,
             report_at: tuple[int, ...] = (), new_labels: torch.Tensor | None = None,
             progress: bool = False) -> Iterator[int]:
    """Train ``denoiser`` in place; yields the step count at each of ``report_at`` and at the end, with the
    network in eval mode (sample from it there), then trains on. Inputs are float images in [-1, 1] on
    the model's device; batches are drawn with replacement from a generator seeded by ``seed``. A
    class-conditional network (``net.num_classes`` > 0) gets ``new_labels`` for the new images (the null
    label where None) and the null label for the bank. ``progress`` counts training steps
    (``skipsearch.progress``)."""
    n_bank = w.bank_count(batch_size) if bank is not None and len(bank) else 0
    n_new = batch_size - n_bank
    null = getattr(denoiser.net, "num_classes", 0)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(denoiser.net.parameters(), lr=w.lr)
    denoiser.requires_grad_(True)
    stops = sorted({s for s in report_at if s < w.steps} | {w.steps})
    with Progress(w.steps, "fine-tuning", "steps", enabled=progress, leave=False) as bar:
        for step in range(1, w.steps + 1):
            deadline.check()
            denoiser.train()
            idx = torch.randint(len(new_images), (n_new,), generator=g)
            x_new = new_images[idx]
            x_bank = bank[torch.randint(len(bank), (n_bank,), generator=g)] if n_bank else new_images[:0]
            labels = None  # an unconditional network gets none; a conditional one its null label for the bank
            if null:
                labels = torch.full((batch_size,), null, dtype=torch.long)
                if new_labels is not None:
                    labels[:n_new] = new_labels[idx]
            loss = diff_tuning_loss(denoiser, x_new, x_bank, w, sigma_range, g, labels)
            if not torch.isfinite(loss):
                raise DivergedError(f"fine-tuning loss is {loss.item()} at step {step} (lr {w.lr:.3g} too high?)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
            if step in stops:
                denoiser.eval().requires_grad_(False)
                yield step  # the evaluation at this step runs while the bar stays open (its work is nested)
                denoiser.requires_grad_(True)
