"""Train a diffusers DDPM on the digits: ``python -m skipsearch.training.diffusers_digits [--out DIR] [--steps N]``.

Gives the project a model in diffusers' own format (a ``DDPMPipeline`` folder) to search coefficients on,
besides its own EDM networks: a small ``UNet2DModel`` (16x16, 1 channel, about 1.1 M parameters) trained
with diffusers' DDPM recipe on scikit-learn's 1,797 digits upsampled to 16x16 and scaled to [-1, 1]. The
recipe: a linear beta schedule over 1,000 steps, uniform random timesteps, ``scheduler.add_noise`` and the
MSE between the predicted and the true noise (epsilon prediction); AdamW with a linear warm-up and a cosine
decay of the learning rate, gradient norm clipped to 1; an EMA of the weights (``EMAModel`` with its
warm-up), which are the weights saved. Each image is shifted left or right by up to one pixel (no flips:
digits are not symmetric).

Seeded and CPU-only; the default 2,500 ``--steps`` take about 18 minutes on one thread of an otherwise idle
2-core machine (``--threads``, default 1, leaves the other cores free; the shipped run took 22 minutes
while other jobs shared the machine). It writes ``DDPMPipeline.save_pretrained(out)`` in safetensors
(``model_index.json``, ``unet/``, ``scheduler/``) and the log, also printed to stdout, to
``<out>/train_log.txt``. Load it with ``DDPMPipeline.from_pretrained(out)``; DDIM at 10-20 steps
(``DDIMScheduler.from_config(pipe.scheduler.config)``) gives recognisable digits.

``--classes`` trains a class-conditional model instead (``UNet2DModel(num_class_embeds=10)``, each image's
digit label passed as ``class_labels``), written by default to ``studies/models/digits-ddpm-classes`` so that
the shipped unconditional model is never overwritten. It is saved as the same ``DDPMPipeline`` folder: the
pipeline class only records where the UNet and scheduler are, and skipsearch's ``model: {family: diffusers,
path: ...}`` loads the UNet from ``unet/`` and samples its ten labels in turn (seed s: digit s mod 10), as it
samples any class-conditional ``UNet2DModel``. (diffusers' ``DDPMPipeline.__call__`` itself passes no labels;
call the UNet with ``class_labels`` to sample it outside skipsearch.) Without ``--classes`` the run is the
shipped one, bit for bit: the labels are read only when asked for, and no random draw moves.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch.nn import functional as F

from skipsearch import data
from skipsearch.training.fashion import Log

SEED = 20260103
RESOLUTION = 16
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "studies/models/digits-ddpm"
DEFAULT_OUT_CLASSES = DEFAULT_OUT.with_name("digits-ddpm-classes")
CLASSES = 10  # the digits 0-9
DEFAULT_STEPS = 2500  # about 0.43 s a step on one idle CPU thread: some 18 minutes
LOG_EVERY = 250
TRAIN_LOG = "train_log.txt"


def build_unet(classes: int = 0) -> UNet2DModel:
    """Three levels (16, 8, 4 pixels), self-attention only at the coarsest; with ``classes`` > 0 a learned
    embedding of the label is added to the timestep embedding (diffusers' ``num_class_embeds``)."""
    return UNet2DModel(
        sample_size=RESOLUTION,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        **({"num_class_embeds": classes} if classes else {}),  # unconditional: the shipped config, untouched
    )


def build_scheduler() -> DDPMScheduler:
    """diffusers' DDPM noise schedule: linear betas from 1e-4 to 0.02 over 1,000 steps, epsilon prediction."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         prediction_type="epsilon")


def shift_horizontally(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image moved left or right by up to one pixel, the uncovered column filled with background (-1)."""
    batch, channels, height, width = x.shape
    padded = F.pad(x, (1, 1), value=-1.0)
    offsets = torch.randint(0, 3, (batch,), generator=g)
    columns = torch.arange(width)[None, :] + offsets[:, None]  # (batch, width) into the padded images
    index = columns[:, None, None, :].expand(batch, channels, height, width)
    return torch.gather(padded, 3, index)


def train_step(unet: UNet2DModel, scheduler: DDPMScheduler, clean: torch.Tensor, g: torch.Generator,
               labels: torch.Tensor | None = None) -> torch.Tensor:
    """Noise the images at uniform random timesteps; the loss is the MSE of the predicted noise (given the
    images' labels where the model is class-conditional)."""
    noise = torch.randn(clean.shape, generator=g)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(clean),), generator=g)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    return F.mse_loss(unet(noisy, timesteps, class_labels=labels).sample, noise)


def train(steps: int, log: Log, batch: int = 128, lr: float = 1e-3, warmup: int = 300,
          seed: int = SEED, classes: bool = False) -> tuple[UNet2DModel, DDPMScheduler]:
    """The trained UNet with its EMA weights copied in, and the noise scheduler it was trained under;
    ``classes``: conditioned on the digit labels."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    x0 = data.to_model_range(data.digits(RESOLUTION))
    log(f"data {tuple(x0.shape)} range [{x0.min().item():.1f}, {x0.max().item():.1f}]")
    labels = data.digit_labels() if classes else None  # in the order of x0's images
    unet, scheduler = build_unet(CLASSES if classes else 0), build_scheduler()
    log(f"parameters {sum(p.numel() for p in unet.parameters()):,}")
    # diffusers' unconditional-training defaults, but for the learning rate (1e-4 there)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr_sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=steps)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
                   model_cls=UNet2DModel, model_config=unet.config)
    unet.train()
    loss_ema, start = None, time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x0), (batch,), generator=g)
        loss = train_step(unet, scheduler, shift_horizontally(x0[idx], g), g,
                          None if labels is None else labels[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        ema.step(unet.parameters())
        loss_ema = loss.item() if loss_ema is None else 0.99 * loss_ema + 0.01 * loss.item()
        if (step + 1) % LOG_EVERY == 0 or step == steps - 1:
            log(f"step {step + 1:6d} loss {loss_ema:.4f} lr {lr_sched.get_last_lr()[0]:.2e} "
                f"ema decay {ema.get_decay(ema.optimization_step):.5f} {time.perf_counter() - start:7.1f}s")
    ema.copy_to(unet.parameters())
    unet.eval()
    return unet, scheduler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"default {DEFAULT_OUT} ({DEFAULT_OUT_CLASSES} with --classes)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--classes", action="store_true",
                        help=f"class-conditional on the {CLASSES} digit labels (num_class_embeds)")
    args = parser.parse_args()
    if args.out is None:
        args.out = DEFAULT_OUT_CLASSES if args.classes else DEFAULT_OUT
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / TRAIN_LOG)
    kind = f", class-conditional ({CLASSES} labels)," if args.classes else ""  # the shipped log's line without
    log(f"training {args.steps} steps{kind} on {args.threads} thread(s), torch {torch.__version__}")
    start = time.perf_counter()
    unet, scheduler = train(args.steps, log, classes=args.classes)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(args.out, safe_serialization=True)
    log(f"parameters {sum(p.numel() for p in unet.parameters()):,}; total {time.perf_counter() - start:.1f}s")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
