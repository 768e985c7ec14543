"""Tiny models of every family, built in the tests from configs and saved the way their users have them on disk
(no download): a diffusers DDPM pipeline folder, a text-conditioned latent pipeline folder (UNet2DConditionModel,
VAE, tokenizer, text encoder), and a user's own UNet for the hooked family."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

WORDS = ["[PAD]", "[UNK]", "a", "digit", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
         "nine", "blurry"]
PROMPTS = ["a digit zero", "a digit seven", "a digit three"]


def unet2d(num_class_embeds: int | None = None, seed: int = 0):
    """A UNet2DModel at 16x16, 1 channel: three levels, an attention block at each end."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                       attention_head_dim=4, num_class_embeds=num_class_embeds).eval()


def ddpm_folder(path: Path, num_class_embeds: int | None = None, prediction: str = "epsilon") -> Path:
    """A DDPMPipeline folder (model_index.json, unet/, scheduler/) holding a random tiny UNet2DModel."""
    from diffusers import DDPMPipeline, DDPMScheduler

    DDPMPipeline(unet=unet2d(num_class_embeds), scheduler=DDPMScheduler(prediction_type=prediction)).save_pretrained(
        path, safe_serialization=True)
    return path


def cond_unet(in_channels: int = 2, sample_size: int = 8, seed: int = 0):
    """A UNet2DConditionModel with cross-attention on 16-d text embeddings; FreeU-capable up blocks."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                                block_out_channels=(8, 16), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=2).eval()


def text_parts(path: Path, seed: int = 0) -> None:
    """A word-level tokenizer over ``WORDS`` and a one-layer CLIP text encoder, saved as tokenizer/ and
    text_encoder/ (safetensors)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                            model_max_length=6).save_pretrained(path / "tokenizer")
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=6, bos_token_id=0, eos_token_id=0,
                            pad_token_id=0)
    CLIPTextModel(config).eval().save_pretrained(path / "text_encoder", safe_serialization=True)


def latent_text_folder(path: Path) -> Path:
    """A Stable-Diffusion-shaped pipeline folder: text-conditioned UNet on 2x8x8 latents, a VAE decoding them to
    1x16x16 images, a DDPM scheduler, tokenizer and text encoder; plus prompts.txt."""
    from diffusers import AutoencoderKL, DDPMScheduler

    path.mkdir(parents=True, exist_ok=True)
    cond_unet().save_pretrained(path / "unet", safe_serialization=True)
    torch.manual_seed(1)
    AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=2,
                  norm_num_groups=4, sample_size=16).eval().save_pretrained(path / "vae", safe_serialization=True)
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        path / "scheduler")
    text_parts(path)
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "PreTrainedTokenizerFast"]}
    (path / "model_index.json").write_text(json.dumps(index))
    (path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return path


class UserBlock(nn.Module):
    """A decoder block that concatenates its skip itself: cat([h, skip]) -> conv."""

    def __init__(self, ch: int, skip_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch + skip_ch, ch, 3, padding=1)

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(torch.cat([h, skip], 1)))


class SliceBlock(nn.Module):
    """A decoder block handed cat([h, skip]) already, as NVlabs' UNet blocks are."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch // 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class UserUNet(nn.Module):
    """A user's own two-level UNet as an EDM denoiser D(x, sigma): the outer skip is a block argument, the inner
    one a channel slice of a concatenated input."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inc = nn.Conv2d(1, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.dec = nn.ModuleList([UserBlock(8, 8), SliceBlock(16)])
        self.out = nn.Conv2d(8, 1, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        h0 = torch.relu(self.inc(x / (1 + s**2).sqrt()))
        h1 = torch.relu(self.down(h0))
        m = torch.relu(self.mid(h1)) + torch.log(s) / 4
        h = self.dec[1](torch.cat([m, h1], 1))  # inner skip: channels 8..15 of the block's input
        h = self.dec[0](self.up(h), h0)  # outer skip: argument 1
        return x / (1 + s**2) + self.out(h) * s / (1 + s**2).sqrt()


def user_section(name: str = "user-unet") -> dict:
    return {"family": "hooked", "name": name, "channels": 1, "resolution": 16,
            "skips": [{"module": "dec.0", "level": 0, "argument": 1},
                      {"module": "dec.1", "level": 1, "channels": [8, 16]}]}
