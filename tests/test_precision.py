"""Feature-extraction precisions: fp32 stays what it was (label, cache key, bits); every faster precision is a
feature space of its own label, close to fp32's; tf32 is refused where it cannot exist."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml
from torch_fidelity.utils import create_feature_extractor

from skipsearch import data
from skipsearch.bench.precision import bench_precision, spaced
from skipsearch.errors import UserError
from skipsearch.files import file_sha256
from skipsearch.metrics import EXTRACTORS, FeatureExtractor, extractor_fingerprint, fid, reference, statistics
from skipsearch.metrics import inception
from skipsearch.metrics.digits import DIGITS_EXTRACTOR, DIGITS_FEATURE, DIGITS_WEIGHTS
from skipsearch.metrics.features import supported_precisions, tf32
from skipsearch.precisions import PRECISIONS, extractor_label, split_label
from skipsearch.resolve import check_names, resolve
from skipsearch.spec import science
from skipsearch.specfile import changed_science, parse_spec

from conftest import tiny_spec_dict

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 and strict fp32 on CUDA need a GPU")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return data.digits(16)


@pytest.fixture(scope="module")
def fp32_features(images) -> torch.Tensor:
    return FeatureExtractor(DIGITS_EXTRACTOR)(images)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_each_precision_has_its_own_label_and_fp32_keeps_the_plain_name():
    labels = [extractor_label(DIGITS_EXTRACTOR, p) for p in PRECISIONS]
    assert labels[0] == DIGITS_EXTRACTOR and len(set(labels)) == len(PRECISIONS)
    assert labels[1:] == [f"{DIGITS_EXTRACTOR}@{p}" for p in PRECISIONS[1:]]
    assert all(split_label(label) == (DIGITS_EXTRACTOR, p) for label, p in zip(labels, PRECISIONS))
    assert all(label in EXTRACTORS for label in labels)
    assert FeatureExtractor(DIGITS_EXTRACTOR).name == DIGITS_EXTRACTOR
    assert FeatureExtractor(f"{DIGITS_EXTRACTOR}@bf16").name == f"{DIGITS_EXTRACTOR}@bf16"
    fingerprints = {extractor_fingerprint(label) for label in labels}
    assert len(fingerprints) == len(labels)


def test_a_bad_precision_is_refused_naming_the_field():
    for bad, why in ((f"{DIGITS_EXTRACTOR}@fp16", "unknown precision 'fp16'"),
                     (f"{DIGITS_EXTRACTOR}@fp32", "fp32 is the default")):
        with pytest.raises(UserError) as err:
            parse_spec(tiny_spec_dict(metric={"extractor": bad}))
        assert "metric.extractor" in str(err.value) and why in str(err.value)
        with pytest.raises(UserError, match=why):
            FeatureExtractor(bad)


def test_the_precision_is_science_and_passes_the_name_checks():
    fp32 = parse_spec(tiny_spec_dict())
    bf16 = parse_spec(tiny_spec_dict(metric={"extractor": f"{DIGITS_EXTRACTOR}@bf16"}))
    assert bf16.metric.precision == "bf16" and fp32.metric.precision == "fp32"
    assert changed_science(science(fp32), bf16) == ["metric.extractor"]
    check_names(bf16)  # the registry knows every label, so a study (and a coefficient file) may name one


def test_fp32_features_are_bit_for_bit_those_of_before(images, fp32_features):
    """The loop FeatureExtractor ran before precisions existed: torch-fidelity's network on 3-channel uint8."""
    net = create_feature_extractor(DIGITS_EXTRACTOR, [DIGITS_FEATURE], cuda=False, verbose=False)
    with torch.no_grad():
        before = torch.cat([net(batch.expand(-1, 3, -1, -1))[0].to(torch.float64) for batch in images.split(500)])
    assert torch.equal(fp32_features, before)


def test_bf16_and_channels_last_are_close_to_fp32_and_bf16_is_not_equal(images, fp32_features):
    bf16 = FeatureExtractor(f"{DIGITS_EXTRACTOR}@bf16")(images)
    layout = FeatureExtractor(f"{DIGITS_EXTRACTOR}@channels_last")(images)
    assert bf16.dtype == layout.dtype == torch.float64 and bf16.shape == layout.shape == fp32_features.shape
    assert not torch.equal(bf16, fp32_features)
    assert relative(bf16, fp32_features) < 2e-2  # measured 2.8e-3: bfloat16 keeps 8 bits of mantissa
    assert relative(layout, fp32_features) < 1e-5  # measured 1.4e-7: fp32 throughout, another summation order
    halves = [(f[::2], f[1::2]) for f in (fp32_features, bf16)]
    fids = [fid(b, statistics(a, with_sqrt=True)) for a, b in halves]
    assert fids[1] == pytest.approx(fids[0], rel=2e-2)


def test_reference_statistics_of_two_precisions_are_separate_cache_files(tmp_path, monkeypatch, images):
    monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path))
    subset = images[:200]
    fp32, bf16 = FeatureExtractor(DIGITS_EXTRACTOR), FeatureExtractor(f"{DIGITS_EXTRACTOR}@bf16")
    ref_fp32, ref_bf16 = reference(subset, fp32), reference(subset, bf16)
    files = sorted(p.name for p in tmp_path.glob("ref-*.npz"))
    assert files == sorted([f"ref-{DIGITS_EXTRACTOR}-{ref_fp32.key}.npz",
                            f"ref-{DIGITS_EXTRACTOR}@bf16-{ref_bf16.key}.npz"])
    assert not torch.equal(ref_fp32.stats.mu, ref_bf16.stats.mu)
    assert reference(subset, bf16).key == ref_bf16.key and len(list(tmp_path.glob("ref-*.npz"))) == 2
    # fp32's key is computed as before precisions existed, so existing cache entries are still found
    with resources.as_file(resources.files("skipsearch.weights") / DIGITS_WEIGHTS) as shipped:
        raw = f"{data.content_hash(subset)}|{DIGITS_EXTRACTOR}:{file_sha256(shipped)[:16]}|{DIGITS_FEATURE}"
    assert ref_fp32.key == hashlib.sha256(raw.encode()).hexdigest()[:16]


def test_tf32_is_refused_off_cuda():
    """TF32 is a GPU mode: on a CPU it would be fp32 under another label, so it is refused, not run."""
    assert supported_precisions("cpu") == ("fp32", "bf16", "channels_last")
    with pytest.raises(UserError, match="'tf32' is refused: it needs a CUDA device"):
        FeatureExtractor(f"{DIGITS_EXTRACTOR}@tf32", device="cpu")
    with pytest.raises(UserError, match="metric.extractor: precision 'tf32' needs a CUDA device"):
        parse_spec(tiny_spec_dict(device="cpu", metric={"extractor": f"{DIGITS_EXTRACTOR}@tf32"}))
    assert parse_spec(tiny_spec_dict(device="cuda", metric={"extractor": f"{DIGITS_EXTRACTOR}@tf32"}))


def test_tf32_with_device_auto_on_a_cpu_is_refused_before_the_study_is_stored(tmp_path):
    """``auto`` is known only where the study runs: on a CPU, ``@tf32`` must fail up front naming the field and
    the device, not at the first trial's extractor once the study has taken its name in the database."""
    spec_path, db = tmp_path / "tf32.yaml", tmp_path / "tf32.db"
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict("tf32", device="auto",
                                                       metric={"extractor": f"{DIGITS_EXTRACTOR}@tf32"})))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a CPU-only machine, also where the tests have a GPU
    proc = subprocess.run([sys.executable, "-m", "skipsearch", "run", str(spec_path), "--storage", f"sqlite:///{db}"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert (f"metric.extractor: '{DIGITS_EXTRACTOR}@tf32' on device auto (resolved to cpu): precision 'tf32' is "
            f"refused: it needs a CUDA device") in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not db.exists()  # no study stored: the same spec without the suffix just runs


def test_tf32_on_ray_trials_given_no_gpu_is_refused_before_the_study_is_stored(tmp_path):
    """Ray hides the GPUs from a trial given none: its extractor would run on the worker's CPU, whatever the
    driver's device, so ``@tf32`` with ``--gpus-per-trial 0`` is refused up front."""
    pytest.importorskip("ray")
    spec_path, db = tmp_path / "tf32.yaml", tmp_path / "tf32.db"
    spec_path.write_text(yaml.safe_dump(tiny_spec_dict("tf32", device="cuda",
                                                       metric={"extractor": f"{DIGITS_EXTRACTOR}@tf32"})))
    proc = subprocess.run([sys.executable, "-m", "skipsearch", "run", str(spec_path), "--storage", f"sqlite:///{db}",
                           "--workers", "1"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert (f"metric.extractor '{DIGITS_EXTRACTOR}@tf32' with --gpus-per-trial 0: Ray trials given no GPU run on "
            f"the CPU, where precision 'tf32' is refused") in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not db.exists()


def test_tf32_on_a_pre_ampere_gpu_is_refused_by_resolve(monkeypatch):
    """``device: cuda`` passes the spec's own check; a GPU without TF32 is found by resolve, naming it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    spec = parse_spec(tiny_spec_dict(device="cuda", metric={"extractor": f"{DIGITS_EXTRACTOR}@tf32"}))
    with pytest.raises(UserError) as err:
        resolve(spec)
    assert str(err.value) == (f"spec: invalid spec\n  metric.extractor: '{DIGITS_EXTRACTOR}@tf32' on device cuda: "
                              f"precision 'tf32' is refused: it needs a GPU of compute capability 8.0 (Ampere) or "
                              f"newer, and Tesla T4 would compute plain fp32; drop the '@tf32' suffix for fp32")


def test_tf32_flags_are_scoped_to_the_block():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, conv.allow_tf32
    try:
        matmul.allow_tf32, conv.allow_tf32 = False, True  # PyTorch's defaults
        with tf32(True):
            assert matmul.allow_tf32 and conv.allow_tf32
        assert (matmul.allow_tf32, conv.allow_tf32) == (False, True)
        with pytest.raises(RuntimeError, match="inside"), tf32(False):
            assert not matmul.allow_tf32 and not conv.allow_tf32
            raise RuntimeError("inside")
        assert (matmul.allow_tf32, conv.allow_tf32) == (False, True)
    finally:
        matmul.allow_tf32, conv.allow_tf32 = before


@needs_cuda
def test_tf32_on_cuda_has_its_label_and_leaves_the_flags_as_they_were(images):
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("this GPU has no TF32 (compute capability below 8.0)")
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    strict = FeatureExtractor(DIGITS_EXTRACTOR, device="cuda")
    fast = FeatureExtractor(f"{DIGITS_EXTRACTOR}@tf32", device="cuda")
    a, b = strict(images), fast(images)
    assert fast.name == f"{DIGITS_EXTRACTOR}@tf32" and relative(b, a) < 1e-2
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
    assert "tf32" in supported_precisions("cuda")


def _inception_weights() -> Path | None:
    """The Inception weights already on this machine (never converted here: that writes 96 MB)."""
    home = Path.home() / ".cache" / "skipsearch"
    found = sorted(home.glob(f"{inception.CONVERTED_PREFIX}*.pt")) + [inception.torch_hub_weights()]
    return next((p for p in found if p.is_file()), None)


@pytest.mark.skipif(_inception_weights() is None, reason="no Inception weights in ~/.cache/skipsearch or torch.hub")
def test_inception_bf16_features_are_close_to_fp32():
    imgs = data.digits(32)[:4]
    fp32 = FeatureExtractor(inception.INCEPTION_EXTRACTOR, weights=_inception_weights())(imgs)
    bf16 = FeatureExtractor(f"{inception.INCEPTION_EXTRACTOR}@bf16", weights=_inception_weights())(imgs)
    assert not torch.equal(bf16, fp32) and relative(bf16, fp32) < 0.1  # measured 5e-2 on 64 digits


def test_bench_reports_each_cpu_precision_against_fp32_without_targets(images):
    records = bench_precision(DIGITS_EXTRACTOR, images[::2], images[1::2], "cpu", batch_size=200, limit=200,
                              rounds=1)
    assert [r.name.split(":")[1].split()[0] for r in records] == ["FID", *[f"{DIGITS_EXTRACTOR}@{p}" for p in
                                                                         ("bf16", "bf16", "channels_last",
                                                                          "channels_last")]]
    assert all(r.target is None and r.met is None and math.isfinite(r.value) for r in records)
    assert "200 samples vs 200 reference images" in records[0].name
    assert 0 < records[2].value < 2e-2 and records[4].value < 1e-4  # bf16's FID moves, channels_last's hardly
    assert torch.equal(spaced(images, 3), images[[0, 898, 1796]])
