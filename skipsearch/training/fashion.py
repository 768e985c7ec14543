"""Regenerate the Fashion-MNIST weights: ``python -m skipsearch.training.fashion [--data DIR] [--out DIR]``.

Trains an EDM-preconditioned SkipUNet (3 levels: 32, 16, 8) on the 60,000 Fashion-MNIST training images,
zero-padded from 28x28 to 32x32 and scaled to [-1, 1]. Seeded; the shipped weights were trained on one
GPU (``--device cuda``, bf16 autocast, TF32), and the script also runs on the CPU, slowly. It writes the
EMA network's state dict in fp16 to ``<out>/fashion_unet.pt``, the log (also printed to stdout) to
``<out>/fashion_unet_log.txt`` and an 8x8 grid of 18-step Heun samples to ``<out>/fashion_samples.png``.
The images come from the gzip idx files (``train-images-idx3-ubyte.gz``) of Debian's
``dataset-fashion-mnist``, by default in /usr/share/datasets/fashion-mnist/.

The shipped ``skipsearch/weights/fashion_unet.pt`` came from one H100 (see ``fashion_unet_log.txt``)::

    python -m skipsearch.training.fashion --data DIR --out OUT --steps 24000 --batch 256 --compile --max-seconds 480

which stopped the 24,000-step schedule at step 23,395 (learning rate 6.1e-5 of its final 6e-5). GPU
kernels and torch.compile are not bit-reproducible, so a rerun gives close but not identical weights.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import torch

from skipsearch.data import FASHION_DATA, FASHION_FILES, read_idx_images
from skipsearch.diffusion.preconditioning import EDMPrecond, edm_loss
from skipsearch.models.embedded_family import SHIPPED

SEED = 20260102
FASHION_IMAGES = FASHION_FILES["train"]
FASHION = SHIPPED["fashion-mnist-unet"]
FASHION_UNET_LOG = "fashion_unet_log.txt"
FASHION_SAMPLES = "fashion_samples.png"
RECIPE = FASHION.training  # steps, batch, lr, warmup, ema


def load_fashion(data_dir: Path, resolution: int = 32) -> torch.Tensor:
    """(N, 1, 32, 32) float32 in [-1, 1]: the 28x28 images zero-padded (before scaling) on every side."""
    images = torch.from_numpy(read_idx_images(data_dir / FASHION_IMAGES).copy())
    pad = (resolution - images.shape[-1]) // 2
    images = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    return (images.float() / 127.5 - 1.0)[:, None]


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then a cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class Log:
    """Prints each line and appends it to a file as it goes, so an interrupted run keeps its log."""

    def __init__(self, path: Path):
        self.file = path.open("w")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def train(args: argparse.Namespace, log: Log) -> tuple[EDMPrecond, int]:
    device = torch.device(args.device)
    torch.manual_seed(SEED)
    g = torch.Generator(device=device).manual_seed(SEED + 1)
    x0 = load_fashion(args.data, FASHION.resolution).to(device)
    log(f"data {tuple(x0.shape)} range [{x0.min().item():.1f}, {x0.max().item():.1f}] from {args.data}")
    model = FASHION.build().to(device)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    params, ema_params = list(model.parameters()), list(ema_model.parameters())
    log(f"parameters {sum(p.numel() for p in params):,}")
    step_fn = torch.compile(model) if args.compile else model
    cuda = device.type == "cuda"
    opt = torch.optim.Adam(params, lr=args.lr, fused=cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps, RECIPE["warmup"]))
    log(f"steps {args.steps} batch {args.batch} lr {args.lr} warmup {RECIPE['warmup']} then cosine to 10%, "
        f"ema {RECIPE['ema']}, device {device}, bf16 autocast {cuda}, compile {args.compile}")
    loss_sum, n_sum, start, last_t, last_step = torch.zeros((), device=device), 0, time.perf_counter(), None, 0
    step = 0
    for step in range(args.steps):
        idx = torch.randint(len(x0), (args.batch,), generator=g, device=device)
        flip = torch.rand(args.batch, generator=g, device=device) < 0.5
        x = x0[idx]
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = edm_loss(step_fn, x, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - RECIPE["ema"])
        loss_sum += loss.detach()
        n_sum += 1
        last = step == args.steps - 1
        elapsed = time.perf_counter() - start
        over = args.max_seconds is not None and elapsed > args.max_seconds
        if step % args.log_every == 0 or last or over:
            mean = loss_sum.item() / n_sum  # the .item() syncs, so the clock below is honest
            now = time.perf_counter()
            rate = (step - last_step) / (now - last_t) if last_t is not None and step > last_step else float("nan")
            log(f"step {step:6d} loss {mean:.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"{now - start:7.1f}s {rate:6.2f} steps/s")
            loss_sum.zero_()
            n_sum, last_t, last_step = 0, now, step
        if over:
            log(f"stopping at step {step}: --max-seconds {args.max_seconds} reached")
            break
    log(f"trained {step + 1} steps in {time.perf_counter() - start:.1f}s")
    # Copy the EMA's buffers too (there are none in SkipUNet today, but keep the copy complete).
    for b_ema, b in zip(ema_model.buffers(), model.buffers()):
        b_ema.copy_(b)
    return ema_model.eval(), step + 1


def save_samples(denoiser: EDMPrecond, path: Path, device: torch.device, steps: int = 18) -> None:
    from PIL import Image

    from skipsearch.diffusion.samplers import sample_heun
    from skipsearch.diffusion.karras import karras_sigmas

    res, n = FASHION.resolution, 8
    noise = torch.randn(n * n, 1, res, res, generator=torch.Generator().manual_seed(SEED + 2)) * 80.0
    sigmas = karras_sigmas(steps).to(device=device, dtype=torch.float32)
    x = sample_heun(denoiser, noise.to(device), sigmas).float().cpu()
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0]
    pad = 2
    grid = torch.full((n * (res + pad) + pad, n * (res + pad) + pad), 255, dtype=torch.uint8)
    for k in range(n * n):
        r, c = divmod(k, n)
        top, left = pad + r * (res + pad), pad + c * (res + pad)
        grid[top:top + res, left:left + res] = img[k]
    Image.fromarray(grid.numpy(), mode="L").save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=FASHION_DATA, help="folder holding " + FASHION_IMAGES)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "weights")
    parser.add_argument("--steps", type=int, default=RECIPE["steps"])
    parser.add_argument("--batch", type=int, default=RECIPE["batch"])
    parser.add_argument("--lr", type=float, default=RECIPE["lr"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (GPU speed-up)")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop training early after this long")
    parser.add_argument("--log-every", type=int, default=500)
    parser.add_argument("--samples", type=Path, default=None, help="sample grid path (default <out>/" +
                        FASHION_SAMPLES + ")")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    log = Log(args.out / FASHION_UNET_LOG)
    log(f"skipsearch.training.fashion seed {SEED} torch {torch.__version__}"
        + (f" gpu {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""))
    ema_model, _ = train(args, log)
    state = {k: (v.half() if v.is_floating_point() else v).cpu().contiguous()
             for k, v in ema_model.net.state_dict().items()}
    weights = args.out / FASHION.weights
    torch.save(state, weights)
    log(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB, fp16 EMA state dict)")
    # Sample from the weights as shipped: the fp16 file read back and cast to float32.
    ema_model.net.load_state_dict({k: v.float() for k, v in torch.load(weights, weights_only=True).items()})
    start = time.perf_counter()
    samples = args.samples or args.out / FASHION_SAMPLES
    save_samples(ema_model, samples, torch.device(args.device))
    log(f"wrote {samples} (64 samples, Heun 18 steps, {time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
