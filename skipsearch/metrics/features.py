"""Feature extractors: torch-fidelity networks fed uint8 batches directly, by registered name.

Two extractors: ``skipsearch-digits`` (the demo's own feature space) and ``inception-v3-compat``, the
standard FID Inception-v3 whose FIDs are comparable with papers'. Its weights are found offline as
skipsearch.metrics.inception describes. It resizes every image to 299x299 internally (TensorFlow-1.x bilinear),
so 32x32 images are upsampled as the standard FID code does for CIFAR-10. The two spaces' FIDs never compare.

Each extractor runs in fp32 unless its name carries a faster precision (skipsearch.precisions):
``NAME@tf32`` (TensorFloat-32 matmuls and convolutions, CUDA only), ``NAME@bf16`` (the network's forward
under bfloat16 autocast) or ``NAME@channels_last`` (fp32 in NHWC memory layout). Each such name is a feature
space of its own; ``skipsearch bench`` measures how far its FID lies from fp32's. On CUDA, fp32 means
strict fp32: PyTorch lets cuDNN convolutions use TF32 by default, which would make "fp32" Inception
features TF32 ones, so every precision but ``tf32`` turns TF32 off for the extraction call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from importlib import resources
from pathlib import Path

import torch
import torch_fidelity
from torch_fidelity.utils import create_feature_extractor

from skipsearch import deadline, safeload
from skipsearch.errors import UserError
from skipsearch.files import file_sha256
from skipsearch.metrics import digits as digits_extractor
from skipsearch.metrics import inception
from skipsearch.files import cache_dir
from skipsearch.precisions import CUDA_ONLY, PRECISIONS, extractor_label, split_label
from skipsearch.progress import Progress

# Each network's default feature layer; EXTRACTORS adds every precision's label of each.
FEATURES = {
    digits_extractor.DIGITS_EXTRACTOR: digits_extractor.DIGITS_FEATURE,
    inception.INCEPTION_EXTRACTOR: inception.INCEPTION_FEATURE,
}
EXTRACTORS = {extractor_label(name, p): feature for name, feature in FEATURES.items() for p in PRECISIONS}

# The most images one forward pass takes on a CPU, whatever batch the caller asks for. Inception resizes every
# image to 299x299, and a large batch's activations no longer fit in the caches: on 2 cores it read 4.3 images
# a second at a batch of 500 (metric.batch_size's default) and 7.1-7.5 at 2-16 (2026-12-07). The features are
# the same, bit for bit, at any batch size on a CPU (checked at 4, 16 and 64).
CPU_BATCH = {inception.INCEPTION_EXTRACTOR: 16}


def parse_label(label: str) -> tuple[str, str]:
    """(network name, precision) of an extractor label; a bad precision suffix is the user's mistake."""
    try:
        return split_label(label)
    except ValueError as err:
        raise UserError(f"feature extractor: {err}") from None


def extractor_weights(name: str, weights: str | Path | None = None) -> Path | None:
    """The weights file torch-fidelity loads for this extractor (None: the extractor finds its own); every
    precision of a network loads the same file."""
    name = parse_label(name)[0]
    if name == inception.INCEPTION_EXTRACTOR:
        return inception.weights_path(cache_dir(), weights)
    if weights is not None:
        raise UserError(f"feature extractor {name!r} takes no weights file")
    return None


def extractor_fingerprint(name: str, weights: str | Path | None = None) -> str:
    """Label (name and precision) plus what defines its weights; two fingerprints that differ never share
    statistics. An fp32 label is the plain name, so fp32 fingerprints are those of before precisions."""
    network = parse_label(name)[0]
    if network == digits_extractor.DIGITS_EXTRACTOR:
        shipped = resources.files("skipsearch.weights") / digits_extractor.DIGITS_WEIGHTS
        with resources.as_file(shipped) as path:
            return f"{name}:{file_sha256(path)[:16]}"
    if network == inception.INCEPTION_EXTRACTOR:
        resolved = Path(weights) if weights is not None else extractor_weights(name)
        return f"{name}:{file_sha256(resolved)[:16]}"
    return f"{name}:torch-fidelity-{torch_fidelity.__version__}"


def precision_refusal(precision: str, device: torch.device) -> str | None:
    """Why the device cannot compute this precision, or None. TF32 exists only on CUDA GPUs of compute
    capability 8.0 (Ampere) or newer; elsewhere PyTorch ignores the flags and the numbers would be fp32's
    under another label, splitting one feature space in two for nothing, so it is refused rather than
    run as fp32."""
    if precision not in CUDA_ONLY:
        return None
    if device.type != "cuda":
        return f"it needs a CUDA device, and features are extracted on {device}, where it would compute plain fp32"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return (f"it needs a GPU of compute capability 8.0 (Ampere) or newer, and "
                f"{torch.cuda.get_device_name(device)} would compute plain fp32")
    return None


def precision_problem(label: str, device: str | torch.device) -> str | None:
    """Why this extractor label cannot be computed on ``device`` (its precision refused there, and how to fix
    the spec), or None. One message for the two places that check it: ``resolve`` before a study is stored
    (device ``auto`` is only known there, on the machine that runs it) and FeatureExtractor itself."""
    precision = parse_label(label)[1]
    reason = precision_refusal(precision, torch.device(device))
    if reason is None:
        return None
    return f"precision {precision!r} is refused: {reason}; drop the '@{precision}' suffix for fp32"


def supported_precisions(device: str | torch.device) -> tuple[str, ...]:
    """The precisions a FeatureExtractor computes on this device, fp32 first."""
    return tuple(p for p in PRECISIONS if precision_refusal(p, torch.device(device)) is None)


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and cuDNN convolutions on (or off) inside the block only; the flags are put back
    as they were afterwards, also on error, so nothing else in the process changes precision. (PyTorch's
    own default has cuDNN's on, cuBLAS's off.)"""
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv


class FeatureExtractor:
    """A torch-fidelity extractor fed uint8 batches directly (its generator wrapper breaks on NumPy 2).

    Takes uint8 (N, C, H, W), C = 1 (expanded to 3) or 3, and returns float64 (N, D) features. ``name`` is
    a label: a network name, optionally with a precision (``skipsearch-digits@bf16``); ``self.name`` is that
    label, which scores and the reference cache carry, ``self.precision`` the precision. ``weights`` is a
    weights file for ``inception-v3-compat`` (see skipsearch.metrics.inception); ``self.weights`` is the
    resolved file that was loaded, and its hash is part of the reference cache key.
    """

    def __init__(self, name: str, feature: str | None = None, device: str = "cpu",
                 weights: str | Path | None = None):
        digits_extractor.register()
        network, self.precision = parse_label(name)
        if name not in EXTRACTORS:
            raise UserError(f"unknown feature extractor {name!r}; valid: {', '.join(sorted(EXTRACTORS))}")
        self.name, self.feature = name, feature or EXTRACTORS[name]
        self.device = torch.device(device)
        self.cpu_batch = CPU_BATCH.get(network) if self.device.type == "cpu" else None
        if (problem := precision_problem(name, self.device)) is not None:
            raise UserError(f"feature extractor {name!r} (metric.extractor): {problem}")
        self.weights = extractor_weights(name, weights)
        if self.weights is not None:
            inception.check_feature(self.weights, self.feature)
        kwargs = {} if self.weights is None else {"feature_extractor_weights_path": str(self.weights)}
        with safeload.forced_weights_only():  # torch-fidelity loads the (already checked) file with pickle
            self.net = create_feature_extractor(network, [self.feature], cuda=False, verbose=False, **kwargs)
        self.net.to(self.device)
        if self.precision == "channels_last":
            self.net.to(memory_format=torch.channels_last)  # the convolutions' weights; inputs follow in _batch

    def numerics(self) -> ExitStack:
        """The precision's settings around the forward passes: TF32 on CUDA only for ``tf32`` (strict fp32
        for every other precision), bfloat16 autocast for ``bf16``. On the CPU, fp32 and channels_last
        enter nothing, so the fp32 path is the one of before precisions, bit for bit."""
        stack = ExitStack()
        if self.device.type == "cuda":
            stack.enter_context(tf32(self.precision == "tf32"))
        if self.precision == "bf16":
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        return stack

    def _batch(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch on the device, 3 channels, in the precision's memory layout."""
        batch = images.to(self.device)
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        if self.precision == "channels_last":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 500, progress: bool = False) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError("feature extraction takes uint8 images")
        out, batch_size = [], min(batch_size, self.cpu_batch or batch_size)
        with Progress(len(images), "features", "samples", enabled=progress, leave=False) as bar, self.numerics():
            for start in range(0, len(images), batch_size):
                deadline.check()
                batch = self._batch(images[start : start + batch_size])
                out.append(self.net(batch)[0].to("cpu", torch.float64))
                bar.update(len(batch))
        return torch.cat(out)


