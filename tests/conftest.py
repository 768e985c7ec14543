"""Shared fixtures: a private cache directory per session, a tiny spec, the embedded model."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside the tests (pgserver, chaos)

OWN_CACHE = "SKIPSEARCH_CACHE" not in os.environ
os.environ.setdefault("SKIPSEARCH_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                       f"skipsearch-test-cache-{os.getpid()}"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache_goes_with_the_session():
    """The session's own cache is removed at its end (Inception's reference statistics alone are 250 MB); a cache
    the caller named through SKIPSEARCH_CACHE stays."""
    yield
    if OWN_CACHE:
        shutil.rmtree(os.environ["SKIPSEARCH_CACHE"], ignore_errors=True)


def tiny_spec_dict(name: str = "tiny", **overrides) -> dict:
    """A spec small enough to run a whole study in seconds on a CPU."""
    spec = {
        "name": name,
        "device": "cpu",
        "sampler": {"name": "heun", "steps": 3},
        "metric": {"n": 64, "seed": 0, "batch_size": 64, "kid_subset_size": 32},
        "search": {"family": "linear", "trials": 4, "rho_range": [0.5, 1.5], "sampler": "random", "seed": 1},
        "confirm": {"top_k": 1, "n": 96, "seed_sets": 2, "seed": 10_000,
                    # Inception's second opinion costs minutes on a CPU: tests/test_second_opinion.py takes one
                    "second_opinion": {"extractor": "none"}},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            spec[key] = {**spec.get(key, {}), **value}
        else:
            spec[key] = value
    return spec


def tiny_dt_spec_dict(name: str = "tiny-dt", weights_dir: str = "weights", **overrides) -> dict:
    """A Diff-Tuning study of a few seconds: 6 fine-tuning steps on 40 images, FID on 64 samples."""
    spec = {
        "name": name, "kind": "diff_tuning", "device": "cpu",
        "sampler": {"name": "heun", "steps": 3},
        "metric": {"n": 64, "seed": 0, "batch_size": 64, "kid_subset_size": 32},
        "finetune": {"steps": 6, "eval_steps": [3], "batch_size": 16, "bank_size": 32, "n_images": 40,
                     "weights_dir": weights_dir},
        "search": {"trials": 4, "sampler": "random", "seed": 1},
        "confirm": {"top_k": 1, "n": 96, "seed_sets": 2, "seed": 10_000,
                    # Inception's second opinion costs minutes on a CPU: tests/test_second_opinion.py takes one
                    "second_opinion": {"extractor": "none"}},
    }
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


@pytest.fixture(scope="session")
def digits_model():
    from skipsearch.models import load_model

    return load_model("embedded-digits")


@pytest.fixture
def fresh_model():
    from skipsearch.models import load_model

    return load_model("embedded-digits")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray cluster for the whole suite: 2 CPUs and 2 fake GPUs (enough to test placement)."""
    ray = pytest.importorskip("ray")
    import chaos

    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env=chaos.runtime_env())  # workers also know the fault-injecting models (tests/chaos.py)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server on 127.0.0.1 for the session (skipped, with the reason, where there is none)."""
    import pgserver

    server = pgserver.start()
    if isinstance(server, str):
        pytest.skip(f"no PostgreSQL server: {server}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request, tmp_path):
    """A fresh, empty database on each backend: the same contract holds on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t_{abs(hash(request.node.nodeid)) % 10**9}")


# the columns of ``skipsearch.trials`` before the coefficients' (README, "Reading results with pandas"), for every
# study: Diff-Tuning's are there (NaN, None) for a study of another method too
TRIALS_COLUMNS = ("id", "study_name", "trial_number", "role", "state", "coefficients_json", "fid", "kid", "kid_std",
                  "delta_fid", "n", "seed_start", "sampler_json", "nfe", "model_id", "model_hash", "extractor",
                  "ref_hash", "versions_json", "wall_s", "error", "source_fid", "source_kid", "weights_path",
                  "weights_hash", "evaluated", "created_at")
