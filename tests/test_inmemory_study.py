"""A study of a model handed over in memory is complete without the model: ``best``, ``export`` and ``report``
read the model's facts (its skip points, resolution, conditions) from the database, where the study's first open
stored them, so they run in a new process that never saw the object. Only re-sampling (``verify``) needs it, and
``skipsearch verify`` says so in one message. Shown on a text pipeline object (a combined FreeU + Skip-Tuning
study) and on a user's own network (family hooked); the stored facts' fallback and check at open on real SQLite.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys

import families
import pytest
import yaml
from conftest import tiny_spec_dict
from sqlalchemy import create_engine, text

from skipsearch import api
from skipsearch.errors import UserError
from skipsearch.exchange import coeffile
from skipsearch.modelfacts import from_json
from skipsearch.models import model_info
from skipsearch.specfile import load_spec
from skipsearch.storage import Store
from skipsearch.storage.facts import record_facts

pytest.importorskip("diffusers")


@dataclasses.dataclass
class Study:
    name: str
    storage: str
    spec_path: object
    model: object
    folder: object


def _run(tmp_path, spec_dict: dict, model) -> Study:
    spec_path = tmp_path / f"{spec_dict['name']}.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict))
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    api.run(spec_path, storage=storage, echo=lambda line: None, model=model)
    return Study(spec_dict["name"], storage, spec_path, model, tmp_path)


@pytest.fixture(scope="module")
def text_study(tmp_path_factory) -> Study:
    """A combined FreeU + Skip-Tuning study of a StableDiffusionPipeline that exists only in this process."""
    from diffusers import StableDiffusionPipeline

    tmp = tmp_path_factory.mktemp("inmemory-text")
    folder = families.latent_text_folder(tmp / "sd")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    model = {"family": "diffusers", "name": "tiny-sd", "prompts": str(folder / "prompts.txt")}
    spec_dict = tiny_spec_dict("inmemory-freeu", kind="freeu", model=model, sampler={"name": "ddim", "steps": 3})
    spec_dict["search"] = {"trials": 2, "sampler": "random", "seed": 1, "combine_skip": True}
    return _run(tmp, spec_dict, pipe)


@pytest.fixture(scope="module")
def hooked_study(tmp_path_factory) -> Study:
    """A Skip-Tuning study of a user's own network (family hooked), handed over in this process."""
    tmp = tmp_path_factory.mktemp("inmemory-hooked")
    spec_dict = tiny_spec_dict("inmemory-hooked", model=families.user_section("my-inmemory-unet"),
                               search={"trials": 2}, confirm={"top_k": 0})
    return _run(tmp, spec_dict, families.UserUNet().eval())


NEW_PROCESS = """
import contextlib, io, json, sys
from skipsearch.cli import main
done = {}
for key, argv in json.loads(sys.argv[1]).items():
    sys.argv, out, err = ["skipsearch", *argv], io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
    done[key] = {"rc": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(done))
"""


def _no_facts(study: Study, path) -> str:
    """A copy of the study's database as one from before the facts table was, once upgraded (a reader opens
    nothing older: ``skipsearch upgrade`` makes the facts table, empty): the study has no stored facts."""
    source, copy = sqlite3.connect(study.storage.removeprefix("sqlite:///")), sqlite3.connect(path)
    source.backup(copy)  # with what the write-ahead log holds still
    source.close()
    copy.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM skipsearch_study_facts"))
    engine.dispose()
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def readers(text_study, hooked_study, tmp_path_factory) -> dict[str, dict]:
    """``export``, ``best --json``, ``report`` and ``verify`` of both studies through the CLI's ``main``, in ONE
    fresh interpreter that never saw either object (one start instead of ten keeps the suite fast); and an
    ``export`` of the text study from a copy of its database without stored facts."""
    commands = {}
    for study in (text_study, hooked_study):
        out, page = study.folder / f"{study.name}-best.yaml", study.folder / f"{study.name}.html"
        commands |= {f"{study.name} export": ["export", study.name, "--storage", study.storage, "-o", str(out)],
                     f"{study.name} best": ["best", study.name, "--storage", study.storage, "--json"],
                     f"{study.name} report": ["report", study.name, "--storage", study.storage, "-o", str(page)],
                     f"{study.name} verify": ["verify", str(out)]}
    old = _no_facts(text_study, tmp_path_factory.mktemp("no-facts") / "old.db")
    commands["old export"] = ["export", text_study.name, "--storage", old, "-o", str(text_study.folder / "old.yaml")]
    done = subprocess.run([sys.executable, "-c", NEW_PROCESS, json.dumps(commands)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]) | {"old": {"storage": old}}


def _read_back(study: Study, readers: dict) -> tuple[coeffile.CoefficientFile, dict]:
    """The new process's export and ``best --json`` of a study, each having exited 0, and its report written."""
    for verb in ("export", "best", "report"):
        assert readers[f"{study.name} {verb}"]["rc"] == 0, readers[f"{study.name} {verb}"]["stderr"]
    page = study.folder / f"{study.name}.html"
    assert page.is_file() and "rho over depth" in page.read_text()  # the winner's profile, drawn from the facts
    return (coeffile.read(study.folder / f"{study.name}-best.yaml"),
            json.loads(readers[f"{study.name} best"]["stdout"]))


def _skips_of(study: Study) -> list[tuple[int, int, str]]:
    """The model's skip points as its family finds them on the object (this process still holds it)."""
    return [(s.index, s.level, s.path) for s in model_info(load_spec(study.spec_path).model).skips]


def test_a_text_pipeline_studied_in_memory_exports_and_reports_in_a_new_process(text_study, readers):
    cf, best = _read_back(text_study, readers)
    assert cf.coefficients.family == "skip_freeu" and cf.provenance.confirmation is not None
    listed = [(s.index, s.level, s.path) for s in cf.provenance.skips]
    assert listed == _skips_of(text_study) and len(listed) == 4
    assert all(path.startswith("up_blocks.") and ":res_hidden_states_tuple[" in path for _, _, path in listed)
    assert [s["path"] for s in best["skips"]] == [path for _, _, path in listed]
    assert cf.provenance.model.spec.path is None and cf.provenance.model.spec.name == "tiny-sd"
    # re-sampling needs the object: the CLI says where to hand it over, and Python with it reproduces the FID
    out = text_study.folder / f"{text_study.name}-best.yaml"
    verify = readers[f"{text_study.name} verify"]
    assert verify["rc"] == 2 and "Traceback" not in verify["stderr"]
    assert verify["stderr"].strip() == (f"error: model 'tiny-sd' was handed over in memory; verify it from Python: "
                                        f"skipsearch.verify({str(out)!r}, model=pipe)")
    check = api.verify(out, model=text_study.model)
    assert check.ok, check


def test_a_hooked_network_studied_in_memory_exports_and_reports_in_a_new_process(hooked_study, readers):
    cf, best = _read_back(hooked_study, readers)
    assert [(s.index, s.level, s.path) for s in cf.provenance.skips] == _skips_of(hooked_study)
    assert [s["path"] for s in best["skips"]] == ["dec.0", "dec.1"]
    verify = readers[f"{hooked_study.name} verify"]
    assert verify["rc"] == 2 and "was handed over in memory; verify it from Python" in verify["stderr"]
    assert "model=net)" in verify["stderr"]


def test_a_study_stored_before_its_facts_were_says_how_to_store_them(text_study, readers, tmp_path):
    """Without the facts table (a database from before it), readers look the model up as they did: for a model
    handed over in memory that fails with the way out; opening the study again with the object stores them."""
    refused = readers["old export"]
    assert refused["rc"] == 2 and "stored before skipsearch kept its model's facts" in refused["stderr"]
    assert "skipsearch.run(spec, model=...)" in refused["stderr"] and "Traceback" not in refused["stderr"]
    storage = readers["old"]["storage"]
    api.run(text_study.spec_path, storage=storage, echo=lambda line: None, model=text_study.model)  # budget met
    assert Store(storage, create=False).study_facts(text_study.name) is not None
    cf = coeffile.read(api.export(storage, text_study.name, tmp_path / "again.yaml"))
    assert [s.path for s in cf.provenance.skips] == [path for _, _, path in _skips_of(text_study)]


def test_facts_are_stored_once_compared_at_open_and_deleted_with_the_study(tmp_path):
    """``record_facts`` keeps the first facts, returns them, and refuses other ones, naming each difference."""
    info = model_info("embedded-digits")
    store = Store(f"sqlite:///{tmp_path / 'facts.db'}")
    store.save_study("s", {"name": "s"})
    assert record_facts(store, "s", info) == info
    assert from_json(store.study_facts("s")) == info
    assert record_facts(store, "s", info) == info  # the same facts again: nothing changes
    moved = dataclasses.replace(info, resolution=32, skips=info.skips[:2])
    with pytest.raises(UserError) as err:
        record_facts(store, "s", moved)
    assert "resolution: stored 16, now 32" in str(err.value) and "skips: stored" in str(err.value)
    assert from_json(store.study_facts("s")) == info  # the stored facts stand
    store.delete_study("s")
    assert store.study_facts("s") is None


def test_the_facts_json_ignores_a_field_it_does_not_know():
    """A database written by a newer skipsearch (a fact this one lacks) still reads."""
    info = model_info("embedded-digits")
    raw = json.loads(json.dumps(dataclasses.asdict(info)))
    assert from_json(json.dumps(raw | {"a_later_fact": 3})) == info
