"""Can these samples, this extractor and this reference give a FID that means anything? Checked before a study is
stored, from facts alone (no network is run).

A FID compares two sets of images in one feature space, so three things must agree, and nothing downstream says
when they do not: the feature extractors take any uint8 batch (the digit classifier averages whatever channels it
is given into grey; Inception resizes whatever it is given to 299x299).

- **Samples are images.** What the model samples (after its VAE decodes them, for a latent model) must have 1
  (grey) or 3 (RGB) channels; 4-channel latents of a UNet without its VAE are not images.
- **The extractor reads them.** ``skipsearch-digits`` was trained on grey 16x16 digits and averages colour away:
  it takes 1-channel images only. ``inception-v3-compat`` takes RGB, and grey images replicated to 3 channels
  (the standard FID code's documented treatment of grey data such as MNIST).
- **The reference is the same kind of image.** Grey samples against an RGB reference (or the reverse) compare
  colour with no colour: refused. A 3-channel reference whose channels are all equal (grey PNGs read as RGB) is
  grey, and matches grey samples exactly as the extractors see both.
- **Size.** Inception resizes every image to 299x299 by its protocol (32x32 CIFAR-10 is upsampled by the standard
  FID code too): nothing is said. The digit classifier resizes to 16x16 bilinearly: legitimate for digit-like
  images (its training digits were 8x8 upsampled), but such FIDs compare only at the same size, so a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skipsearch.metrics.digits import DIGITS_EXTRACTOR, INPUT_RESOLUTION
from skipsearch.metrics.inception import INCEPTION_EXTRACTOR
from skipsearch.precisions import split_label

IMAGE_CHANNELS = (1, 3)


@dataclass(frozen=True, kw_only=True)
class Samples:
    """What a model's samples are when they reach the extractor."""

    channels: int
    resolution: int
    latent: bool = False  # sampled as latents that the model's VAE decodes into these images


@dataclass(frozen=True, kw_only=True)
class Images:
    """A reference data set's images."""

    channels: int
    resolution: int
    grey: bool  # every image's channels are equal (always true for 1 channel)

    @classmethod
    def of(cls, images: torch.Tensor) -> Images:
        """Facts of uint8 (N, C, H, W) images; equal channels are looked for only in 3-channel ones."""
        c = images.shape[1]
        return cls(channels=c, resolution=images.shape[-1], grey=c == 1 or _equal_channels(images))


def _equal_channels(images: torch.Tensor, chunk: int = 1024) -> bool:
    """Whether every image's channels are equal, a chunk at a time: a reference may be gigabytes, and a colour
    one is told in its first chunk."""
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        if not all(torch.equal(part[:, 0], part[:, k]) for k in range(1, part.shape[1])):
            return False
    return True


@dataclass(frozen=True, kw_only=True)
class ExtractorInput:
    """What a feature network was made to read."""

    channels: tuple[int, ...]  # the sample channel counts it takes (1: grey replicated or read as grey)
    resolution: int | None  # the size it resizes to where a mismatch deserves a word; None: its protocol resizes
    reads: str  # for messages


INPUTS: dict[str, ExtractorInput] = {
    DIGITS_EXTRACTOR: ExtractorInput(channels=(1,), resolution=INPUT_RESOLUTION,
                                     reads="grey 16x16 digits (it averages colour channels into grey)"),
    INCEPTION_EXTRACTOR: ExtractorInput(channels=(1, 3), resolution=None,
                                        reads="RGB images, and grey ones replicated to 3 channels"),
}


@dataclass(frozen=True)
class Problem:
    """One finding, naming the spec field to change; ``refused`` ones stop the study, the others are warnings."""

    field: str
    text: str
    refused: bool = True


def problems(samples: Samples, reference: Images, extractor: str,
             reference_field: str = "metric.reference") -> list[Problem]:
    """Why FID between these samples and this reference, in this extractor's space, would mean nothing."""
    if samples.channels not in IMAGE_CHANNELS:
        hint = ("its VAE decodes to that many" if samples.latent else
                "latents of a latent model's UNet alone? give the pipeline folder with its vae/ so they are decoded")
        return [Problem("model", f"the model samples {samples.channels}-channel tensors ({hint}); FID reads images "
                                 f"of 1 (grey) or 3 (RGB) channels")]
    found: list[Problem] = []
    network = split_label(extractor)[0]
    needs = INPUTS.get(network)
    if needs is not None and samples.channels not in needs.channels:
        found.append(Problem("metric.extractor", f"{network} reads {needs.reads}, and the model samples "
                                                 f"{samples.channels}-channel images; use inception-v3-compat"))
    if samples.channels != reference.channels and not (samples.channels == 1 and reference.grey):
        kind, what = "grey " if reference.grey else "", "reference" if "reference" in reference_field else "data set"
        found.append(Problem(reference_field, f"the model samples {samples.channels}-channel images, the {what} "
                                              f"holds {reference.channels}-channel {kind}images; a FID between them "
                                              f"measures the channels, not the model (give a "
                                              f"{samples.channels}-channel {what})"))
    if needs is not None and needs.resolution is not None and samples.resolution != needs.resolution:
        size = f"{samples.resolution}x{samples.resolution}"
        found.append(Problem("metric.extractor", f"{network} takes {needs.resolution}x{needs.resolution} images; the "
                                                 f"{size} samples and reference images are resized to it (bilinear), "
                                                 f"so these FIDs compare only with FIDs of {size} images",
                             refused=False))
    return found
