"""Build the shipped tiny text-to-image pipeline: ``python -m skipsearch.training.tiny_text [--out DIR]``.

FreeU needs diffusers' ``UNet2DConditionModel``, and the usual such models (Stable Diffusion) are gigabytes. This
script makes one that runs a study in minutes on a CPU and still has something for FreeU to change: a
Stable-Diffusion-shaped pipeline folder (``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``,
``tokenizer/``, ``text_encoder/``, safetensors only) trained on scikit-learn's 1,797 digits at 16x16, plus
``prompts.txt`` with one prompt per digit ("a digit zero" ... "a digit nine") and the training log.

- The tokenizer is word-level over the twelve words the prompts use; the text encoder is a one-layer
  ``CLIPTextModel`` left at its seeded random initialisation and frozen: a fixed map from prompt to embedding
  that the UNet learns to read (no text training is needed for ten prompts).
- The VAE (``AutoencoderKL``, 1x16x16 images <-> 2x8x8 latents) is trained first on reconstruction with a
  small KL term; its ``scaling_factor`` is set so the training latents have unit standard deviation, as
  Stable Diffusion's is.
- The UNet (two levels, cross-attention on the text) is trained on those latents with diffusers' DDPM recipe:
  a linear beta schedule over 1,000 steps, uniform timesteps, ``add_noise`` and the MSE of the predicted
  noise. One prompt in ten is replaced by the empty prompt, so classifier-free guidance has a null input
  (``sampler.guidance_scale``). The weights saved are an exponential moving average.

Seeded and CPU-only (``--threads``, default 1, leaves the other core free); some 8 minutes on one thread of an
idle 2-core machine (the UNet's steps take about 0.1 s each there), while the shipped run took 26 minutes with other
jobs sharing the machine. The weights are saved in half precision, about 0.5 MB in all; diffusers loads them into
float32 models. Nothing in skipsearch imports this module.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from skipsearch import data
from skipsearch.training.fashion import Log

SEED = 20260426
RESOLUTION = 16
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = ("[PAD]", "[UNK]", "a", "digit", *NAMES)
PROMPTS = tuple(f"a digit {name}" for name in NAMES)  # prompt k draws digit k
TOKENS = 4  # "a digit seven" and one pad
TEXT_DIM = 16
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "studies/models/digits-text"
DEFAULT_VAE_STEPS = 500
DEFAULT_UNET_STEPS = 4000
LOG_EVERY = 250
TRAIN_LOG = "train_log.txt"


def build_text(out: Path) -> tuple[object, nn.Module]:
    """The word-level tokenizer and the frozen random one-layer CLIP text encoder, saved under ``out``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="[PAD]", unk_token="[UNK]",
                                        model_max_length=TOKENS)
    tokenizer.save_pretrained(out / "tokenizer")
    config = CLIPTextConfig(vocab_size=len(WORDS), hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=TOKENS, bos_token_id=0, eos_token_id=0,
                            pad_token_id=0)
    encoder = CLIPTextModel(config).eval().requires_grad_(False)
    encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
    return tokenizer, encoder


@torch.no_grad()
def encode(tokenizer: object, encoder: nn.Module, texts: list[str]) -> torch.Tensor:
    """As skipsearch encodes a study's prompts: padded to the tokenizer's length, the last hidden state."""
    ids = tokenizer(texts, padding="max_length", max_length=TOKENS, truncation=True, return_tensors="pt").input_ids
    return encoder(ids).last_hidden_state.float()


def build_vae() -> nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=2,
                         layers_per_block=1, norm_num_groups=4, sample_size=RESOLUTION)


def build_unet() -> nn.Module:
    """Two levels on 8x8 latents; both up blocks are FreeU stages (diffusers' ``resolution_idx`` 0 and 1)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=RESOLUTION // 2, in_channels=2, out_channels=2,
                                block_out_channels=(16, 32), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_DIM,
                                norm_num_groups=8, attention_head_dim=4)


def build_scheduler() -> object:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         prediction_type="epsilon")


def train_vae(x0: torch.Tensor, steps: int, log: Log, g: torch.Generator, batch: int = 64) -> nn.Module:
    """Reconstruction (MSE) plus a small KL, so the latents stay near a Gaussian the UNet can start from."""
    vae = build_vae()
    log(f"vae parameters {sum(p.numel() for p in vae.parameters()):,}")
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    vae.train()
    start = time.perf_counter()
    for step in range(steps):
        x = x0[torch.randint(len(x0), (batch,), generator=g)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=g)).sample
        mse, kl = F.mse_loss(recon, x), posterior.kl().mean() / x[0].numel()
        loss = mse + 1e-3 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % LOG_EVERY == 0 or step == steps - 1:
            log(f"vae step {step + 1:5d} mse {mse.item():.4f} kl {kl.item():.4f} {time.perf_counter() - start:6.1f}s")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = vae.encode(x0).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1 / latents.std()))
    log(f"vae latents {tuple(latents.shape[1:])} std {latents.std().item():.3f}: scaling_factor "
        f"{vae.config.scaling_factor:.4f}")
    return vae


def train_unet(latents: torch.Tensor, labels: torch.Tensor, prompts: torch.Tensor, null: torch.Tensor, steps: int,
               log: Log, g: torch.Generator, batch: int = 64, lr: float = 2e-3) -> tuple[nn.Module, object]:
    """DDPM epsilon-prediction on the scaled latents, conditioned on each image's prompt (the null prompt one
    time in ten); the EMA weights are returned."""
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    unet, scheduler = build_unet(), build_scheduler()
    log(f"unet parameters {sum(p.numel() for p in unet.parameters()):,}")
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, betas=(0.95, 0.999), weight_decay=1e-6)
    lr_sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=200, num_training_steps=steps)
    ema = EMAModel(unet.parameters(), decay=0.999, use_ema_warmup=True, power=3 / 4)
    unet.train()
    loss_ema, start = None, time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(latents), (batch,), generator=g)
        clean = latents[idx]
        text = prompts[labels[idx]]
        dropped = torch.rand(batch, generator=g) < 0.1
        text = torch.where(dropped[:, None, None], null.expand_as(text), text)
        noise = torch.randn(clean.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g)
        loss = F.mse_loss(unet(scheduler.add_noise(clean, noise, t), t, encoder_hidden_states=text).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        ema.step(unet.parameters())
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        if (step + 1) % LOG_EVERY == 0 or step == steps - 1:
            log(f"unet step {step + 1:5d} loss {loss_ema:.4f} lr {lr_sched.get_last_lr()[0]:.2e} "
                f"{time.perf_counter() - start:6.1f}s")
    ema.copy_to(unet.parameters())
    return unet.eval(), scheduler


def build(out: Path, vae_steps: int, unet_steps: int, log: Log) -> None:
    """Every part of the pipeline folder, then ``model_index.json`` and ``prompts.txt``."""
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    x0 = data.to_model_range(data.digits(RESOLUTION))
    labels = data.digit_labels().long()
    log(f"data {tuple(x0.shape)} range [{x0.min().item():.1f}, {x0.max().item():.1f}], {len(labels)} labels")
    tokenizer, encoder = build_text(out)
    prompts, null = encode(tokenizer, encoder, list(PROMPTS)), encode(tokenizer, encoder, [""])
    vae = train_vae(x0, vae_steps, log, g)
    with torch.no_grad():
        latents = vae.encode(x0).latent_dist.mean * vae.config.scaling_factor
    unet, scheduler = train_unet(latents, labels, prompts, null, unet_steps, log, g)
    # half precision on disk halves the folder; diffusers loads the weights into float32 models as before
    vae.half().save_pretrained(out / "vae", safe_serialization=True)
    unet.half().save_pretrained(out / "unet", safe_serialization=True)
    scheduler.save_pretrained(out / "scheduler")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": _diffusers_version(),
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "PreTrainedTokenizerFast"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--vae-steps", type=int, default=DEFAULT_VAE_STEPS)
    parser.add_argument("--unet-steps", type=int, default=DEFAULT_UNET_STEPS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log = Log(args.out / TRAIN_LOG)
    log(f"building {args.out.name}: vae {args.vae_steps} steps, unet {args.unet_steps} steps on {args.threads} "
        f"thread(s), torch {torch.__version__}")
    start = time.perf_counter()
    build(args.out, args.vae_steps, args.unet_steps, log)
    log(f"total {time.perf_counter() - start:.1f}s; wrote {args.out}")


if __name__ == "__main__":
    main()
