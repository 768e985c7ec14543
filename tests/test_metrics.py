"""FID/KID on the device, checked against torch-fidelity and an independent computation; the reference cache."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from skipsearch import data, metrics
from skipsearch.metrics.digits import DIGITS_EXTRACTOR, DigitsFeatureExtractor, load_classifier, to_classifier_input
from skipsearch.metrics import FeatureExtractor, fid, kid, reference, statistics


def independent_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance with SciPy's matrix square root (the pytorch-fid formulation)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n", [300, 12], ids=["N>=d", "N<d (Gram form)"])
def test_fid_matches_independent_computation(n):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16))
    b = rng.normal(size=(n, 16)) @ rng.normal(size=(16, 16)) * 0.3 + 0.5
    ref = statistics(torch.from_numpy(a), with_sqrt=True)
    ours = fid(torch.from_numpy(b), ref)
    assert ours == pytest.approx(independent_fid(a, b), rel=1e-6)
    assert fid(torch.from_numpy(a), ref) == pytest.approx(0, abs=1e-9)


def test_statistics_are_numpy_cov_and_the_square_root_squares_back():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(50, 8)) @ rng.normal(size=(8, 8))
    stats = statistics(torch.from_numpy(a), with_sqrt=True)
    np.testing.assert_allclose(stats.sigma.numpy(), np.cov(a, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose((stats.sqrt_sigma @ stats.sqrt_sigma).numpy(), stats.sigma.numpy(), atol=1e-10)
    assert torch.equal(stats.sqrt_sigma, stats.sqrt_sigma.T)


@pytest.mark.parametrize("d,n_1,n_2,size", [(8, 300, 250, 100), (128, 120, 90, 90)])
def test_kid_equals_torch_fidelitys_for_the_same_subsets_and_seed(d, n_1, n_2, size):
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    rng = np.random.default_rng(d)
    f_1 = torch.from_numpy(rng.normal(size=(n_1, d)))
    f_2 = torch.from_numpy(rng.normal(0.2, 1.1, size=(n_2, d)))
    theirs = kid_features_to_metric(f_1, f_2, kid_subsets=100, kid_subset_size=size, rng_seed=2020, verbose=False)
    mean, std = kid(f_1, f_2, size)
    assert mean == pytest.approx(theirs[KEY_METRIC_KID_MEAN], rel=1e-9)
    assert std == pytest.approx(theirs[KEY_METRIC_KID_STD], rel=1e-9)
    assert kid(f_1, f_2, size, seed=7) != (mean, std)  # another seed draws other subsets


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    same = kid(torch.from_numpy(rng.normal(size=(300, 8))), torch.from_numpy(rng.normal(size=(300, 8))), 100)
    apart = kid(torch.from_numpy(rng.normal(size=(300, 8))), torch.from_numpy(rng.normal(1, 1, size=(300, 8))), 100)
    assert abs(same[0]) < 0.05 < apart[0]


def test_extractor_is_registered_with_torch_fidelity():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    fx = FeatureExtractor(DIGITS_EXTRACTOR)
    assert FEATURE_EXTRACTORS_REGISTRY[DIGITS_EXTRACTOR] is DigitsFeatureExtractor
    images = data.digits(16)[:10]
    feats = fx(images)
    assert feats.shape == (10, 128) and feats.dtype == torch.float64
    # 1-channel and 3-channel uint8 inputs give the same features
    assert torch.equal(feats, fx(images.expand(-1, 3, -1, -1).contiguous()))


def test_shipped_classifier_recognises_digits():
    net = load_classifier()
    with torch.no_grad():
        pred = net(to_classifier_input(data.digits(16))).argmax(1)
    assert (pred == data.digit_labels()).float().mean() > 0.97


def test_reference_cache_is_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path))
    fx = FeatureExtractor(DIGITS_EXTRACTOR)
    calls = []
    original = fx.__call__

    class Counting:
        name, feature = fx.name, fx.feature

        def __call__(self, images, **kw):
            calls.append(len(images))
            return original(images, **kw)

    counting = Counting()
    images = data.digits(16)[:200]
    first = reference(images, counting)
    again = reference(images.clone(), counting)
    assert calls == [200] and again.key == first.key
    torch.testing.assert_close(again.stats.mu, first.stats.mu, rtol=0, atol=0)
    torch.testing.assert_close(again.stats.sqrt_sigma, first.stats.sqrt_sigma, rtol=0, atol=0)

    changed = images.clone()
    changed[0, 0, 5, 5] ^= 0xFF  # one pixel differs: the cache must not be reused
    other = reference(changed, counting)
    assert calls == [200, 200] and other.key != first.key
    assert not torch.equal(other.stats.mu, first.stats.mu)
    assert len(list(tmp_path.glob("ref-*.npz"))) == 2


def test_content_hash_sees_shape_and_pixels():
    a = data.digits(16)[:5]
    assert data.content_hash(a) == data.content_hash(a.clone())
    assert data.content_hash(a) != data.content_hash(a[:4])
    assert data.content_hash(a) != data.content_hash(a.reshape(5, 1, 8, 32))


def test_unknown_extractor_lists_valid_ones():
    from skipsearch.errors import UserError

    with pytest.raises(UserError, match="skipsearch-digits"):
        metrics.FeatureExtractor("inception-v9")


def test_a_cache_entry_with_features_only_is_completed_without_extracting_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path))
    fx = FeatureExtractor(DIGITS_EXTRACTOR)
    images = data.digits(16)[:150]
    first = reference(images, fx)
    path = tmp_path / f"ref-{DIGITS_EXTRACTOR}-{first.key}.npz"
    np.savez(path, features=first.features.numpy())  # as entries were written before the square root was kept

    class Refusing:
        name, feature = fx.name, fx.feature

        def __call__(self, images, **kw):
            pytest.fail("the cached features were extracted again")

    again = reference(images, Refusing())
    torch.testing.assert_close(again.stats.sqrt_sigma, first.stats.sqrt_sigma, rtol=0, atol=0)
    with np.load(path) as archive:
        assert set(archive.files) == {"features", "mu", "sigma", "sqrt_sigma"}


def test_shipped_features_stand_in_for_the_first_extraction_and_only_when_they_fit(tmp_path, monkeypatch):
    """A shipped file under the cache entry's name is used on a cold cache, with the very statistics a
    computation gives; one of another size or dtype is ignored and the features are computed."""
    from skipsearch.metrics.reference import ship

    fx = FeatureExtractor(DIGITS_EXTRACTOR)
    images = data.digits(16)[:120]
    monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path / "computed"))
    computed = reference(images, fx)
    shipped = tmp_path / "shipped"
    file = ship(computed, fx.name, shipped)
    assert file.name == f"ref-{DIGITS_EXTRACTOR}-{computed.key}.npz"

    class Counting:
        name, feature = fx.name, fx.feature
        calls: list[int] = []

        def __call__(self, images, **kw):
            self.calls.append(len(images))
            return fx(images, **kw)

    counting = Counting()
    monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path / "cold"))
    cold = reference(images, counting, shipped=shipped)
    assert counting.calls == []
    for name in ("mu", "sigma", "sqrt_sigma"):
        torch.testing.assert_close(getattr(cold.stats, name), getattr(computed.stats, name), rtol=0, atol=0)
    assert (tmp_path / "cold" / file.name).is_file()  # and cached, as a computation would be

    for bad in (computed.features[:-1].float(), computed.features):  # a row short; float64 (not what ships)
        np.savez_compressed(file, features=bad.numpy())
        monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path / f"cold-{len(counting.calls)}"))
        again = reference(images, counting, shipped=shipped)
        torch.testing.assert_close(again.stats.mu, computed.stats.mu, rtol=0, atol=0)
    assert counting.calls == [120, 120]


def test_ship_refuses_features_that_float32_would_change():
    from skipsearch.metrics.reference import Reference, ship

    feats = torch.full((4, 3), 1 / 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="float32"):
        ship(Reference("k", feats, statistics(feats)), DIGITS_EXTRACTOR, None)


# --- the metric registry, and precision/recall (Kynkäänniemi et al. 2019) -----------------------------------------


def test_the_objective_through_the_registry_is_bit_identical_to_fid_and_kid():
    from skipsearch.metrics.registry import FID, KID, METRICS

    rng = np.random.default_rng(5)
    ref_features = torch.from_numpy(rng.normal(size=(200, 12)))
    ref = statistics(ref_features, with_sqrt=True)
    for n in (150, 10):  # both of fid's forms
        samples = torch.from_numpy(rng.normal(0.3, 1.2, size=(n, 12)))
        assert FID(samples, ref, ref_features) == {"fid": fid(samples, ref)}
        mean, std = kid(samples, ref_features, 8)
        assert KID(samples, ref, ref_features, 8) == {"kid": mean, "kid_std": std}
    assert set(METRICS) >= {"fid", "kid", "precision_recall"}


def test_a_metric_reads_only_what_it_declares():
    from skipsearch.metrics.metric import Metric

    peeking = Metric(name="peek", values=("v",), uses=frozenset({"stats"}),
                     compute=lambda x: {"v": float(x.reference.sum())})  # declares stats, reads features
    ref_features = torch.ones(20, 3, dtype=torch.float64)
    with pytest.raises(AttributeError):
        peeking(ref_features, statistics(ref_features), ref_features)
    wrong = Metric(name="wrong", values=("a",), uses=frozenset(), compute=lambda x: {"b": 1.0})
    with pytest.raises(RuntimeError, match="declares"):
        wrong(ref_features, None, None)


def test_precision_and_recall_of_identical_sets_are_one_and_of_far_apart_sets_zero():
    from skipsearch.metrics.precision_recall import precision_recall

    rng = np.random.default_rng(2)
    points = torch.from_numpy(rng.normal(size=(120, 6)))
    assert precision_recall(points, points) == (1.0, 1.0)
    assert precision_recall(points + 1000.0, points) == (0.0, 0.0)


def test_precision_and_recall_by_hand_in_two_dimensions():
    """k = 3. Reference on a line: (0,0) (1,0) (2,0) (3,0) (10,0); each one's third-nearest other point is at
    3, 2, 2, 3 and 9. Samples A: (0,3) lies exactly on (0,0)'s ball (distance 3 = radius: counts), (5,5) in
    (10,0)'s (7.07 <= 9), (20,0) and (-4,0) in none: precision 2/4. Their own radii (4 points: each one's farthest
    other) are 20.2 to 24, so every reference point is covered: recall 1. Samples B: four points at 0.5 around
    the origin, each of radius 1 (the opposite point): all inside (0,0)'s ball, precision 1; they cover (0,0) and
    (1,0) only (distance 0.5 from (0.5,0)), (2,0) is 1.5 away: recall 2/5."""
    from skipsearch.metrics.precision_recall import knn_radii, precision_recall

    real = torch.tensor([[0, 0], [1, 0], [2, 0], [3, 0], [10, 0]], dtype=torch.float64)
    assert knn_radii(real).tolist() == [3, 2, 2, 3, 9]
    a = torch.tensor([[0, 3], [5, 5], [20, 0], [-4, 0]], dtype=torch.float64)
    assert precision_recall(a, real) == (0.5, 1.0)
    b = torch.tensor([[0, 0.5], [0, -0.5], [0.5, 0], [-0.5, 0]], dtype=torch.float64)
    assert knn_radii(b).tolist() == [1, 1, 1, 1]
    assert precision_recall(b, real) == (1.0, 0.4)


def test_dropping_half_the_modes_halves_recall_and_keeps_precision():
    from skipsearch.metrics.precision_recall import precision_recall

    rng = np.random.default_rng(4)
    angles = np.arange(8) * np.pi / 4
    centres = np.stack([10 * np.cos(angles), 10 * np.sin(angles)], 1)
    real = np.concatenate([c + 0.3 * rng.normal(size=(60, 2)) for c in centres])  # 8 modes
    fake = np.concatenate([c + 0.3 * rng.normal(size=(120, 2)) for c in centres[::2]])  # 4 of them
    precision, recall = precision_recall(torch.from_numpy(fake), torch.from_numpy(real))
    assert precision > 0.95
    assert recall == pytest.approx(0.5, abs=0.03)


def test_precision_and_recall_do_not_depend_on_the_block_size(monkeypatch):
    from skipsearch.metrics import precision_recall as pr

    rng = np.random.default_rng(6)
    fake, real = torch.from_numpy(rng.normal(size=(90, 5))), torch.from_numpy(rng.normal(0.4, 1, size=(130, 5)))
    whole = pr.precision_recall(fake, real)
    monkeypatch.setattr(pr, "BLOCK_BYTES", 8 * 130 * 7)  # 7 rows a block
    assert pr.precision_recall(fake, real) == whole
    assert 0 < whole[0] < 1 and 0 < whole[1] < 1
