"""One rule for the paths a spec names (issue 26, item 1).

``metric.reference: npz:../digits16.npz`` once worked in-process, then failed on every Ray worker, in ``verify``
from another folder, and a rerun with the absolute path was refused as "a different metric.reference". Now every
relative path a spec file writes is taken from the file's folder, checked, and stored absolute; the same spec run
from another folder is the same study; and a Ray node that does not see a file the driver sees is refused before
the study is stored.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_spec_dict

import skipsearch
from skipsearch import data
from skipsearch.errors import UserError
from skipsearch.fields import Section, _marker
from skipsearch.methods import METHODS
from skipsearch.models import FAMILIES
from skipsearch.paths import PATH_KINDS, SpecPath
from skipsearch.search.stored_spec import stored_form
from skipsearch.specfile import load_spec, parse_spec
from skipsearch.storage import Store

# Text fields that are not paths: names, free text, a database URL (read like --storage, from the working
# directory), a feature network, and a folder name inside the model's folder. A new text field must be added
# here or typed as a path (fields.FilePath, OutputFolder, DataName): this test makes that a decision.
NOT_PATHS = {"name", "description", "storage", "extractor", "subfolder", "negative_prompt"}


def _text_fields(cls: type[Section], seen: set) -> list[tuple[str, bool]]:
    def text(a: object) -> bool:
        union = typing.get_origin(a) in (typing.Union, types.UnionType)
        return a is str or (union and any(text(x) for x in typing.get_args(a)))

    out = []
    for name, info in cls.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section):
            if info.annotation not in seen:
                seen.add(info.annotation)
                out += _text_fields(info.annotation, seen)
        elif text(info.annotation):
            out.append((name, _marker(info) is not None))
    return out


def test_every_text_field_of_every_section_is_a_path_or_declared_not_one():
    seen: set = set()
    fields = [f for cls in [*(m.spec_class for m in METHODS.values()), *(f.spec_class for f in FAMILIES)]
              for f in _text_fields(cls, seen)]
    assert {name for name, marked in fields if not marked} == NOT_PATHS
    assert {name for name, marked in fields if marked} == {"reference", "data", "source_reference", "weights_dir",
                                                          "path", "prompts", "prompt_embeds", "code"}
    assert set(PATH_KINDS) == set(data.PATH_DATASETS)


def test_a_spec_files_relative_paths_are_taken_from_its_folder(tmp_path, monkeypatch):
    spec_dir, cwd = tmp_path / "x", tmp_path / "y"
    spec_dir.mkdir(), cwd.mkdir()
    monkeypatch.chdir(cwd)
    (spec_dir / "dt.yaml").write_text(yaml.safe_dump({
        "name": "dt", "kind": "diff_tuning", "metric": {"reference": "npz:../ref.npz"},
        "finetune": {"data": "folder:imgs", "source_reference": "digits-0to4", "weights_dir": "./w"}}))
    spec = load_spec(Path("..") / "x" / "dt.yaml")
    assert spec.metric.reference == f"npz:{tmp_path / 'ref.npz'}"  # '..' from the spec's folder, normalised
    assert spec.finetune.data == f"folder:{spec_dir / 'imgs'}" and spec.finetune.weights_dir == str(spec_dir / "w")
    assert spec.finetune.source_reference == "digits-0to4"  # a built-in set's name is no path
    assert [p.field for p in spec.paths()] == ["metric.reference", "finetune.data", "finetune.weights_dir"]
    assert spec.anchored(Path("/elsewhere")) == spec  # anchoring twice changes nothing

    (spec_dir / "edm.yaml").write_text(yaml.safe_dump({"name": "e", "model": {
        "family": "edm", "path": "net.pkl", "code": "~/edm"}}))
    edm = load_spec(spec_dir / "edm.yaml").model
    assert (edm.path, edm.code) == (str(spec_dir / "net.pkl"), os.path.expanduser("~/edm"))


def test_a_path_left_at_its_default_or_given_in_python_is_read_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x" / "dt.yaml").write_text(yaml.safe_dump({"name": "dt", "kind": "diff_tuning"}))
    assert load_spec("x/dt.yaml").finetune.weights_dir == str(tmp_path / "skipsearch-weights")
    spec = parse_spec(tiny_spec_dict("py", metric={"reference": "npz:ref.npz"})).anchored(Path.cwd())
    assert spec.paths() == [SpecPath("metric.reference", str(tmp_path / "ref.npz"))]


@pytest.fixture
def spec_beside_its_reference(tmp_path) -> Path:
    """X/spec.yaml whose metric.reference is npz:ref.npz, a file beside it holding 64 distinct digits."""
    folder = tmp_path / "x"
    folder.mkdir()
    np.savez(folder / "ref.npz", images=data.load("digits", resolution=16)[:64].numpy())
    spec = tiny_spec_dict("rel", metric={"reference": "npz:ref.npz", "n": 16, "batch_size": 16, "kid_subset_size": 8},
                          sampler={"steps": 1}, search={"trials": 2}, confirm={"top_k": 0, "n": 16, "seed_sets": 1})
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
    return folder / "spec.yaml"


def test_relative_reference_stored_absolute_reruns_and_verifies_from_other_folders(tmp_path, monkeypatch,
                                                                                  spec_beside_its_reference):
    url = f"sqlite:///{tmp_path / 's.db'}"
    reference = f"npz:{tmp_path / 'x' / 'ref.npz'}"
    for folder in ("y", "z", "w"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "y")
    skipsearch.run("../x/spec.yaml", storage=url)
    assert Store(url).study_spec("rel")["metric"]["reference"] == reference

    monkeypatch.chdir(tmp_path / "z")  # the same spec from elsewhere is the same study: it continues
    result = skipsearch.run(spec_beside_its_reference, storage=url, trials=3)
    assert len(result.trials) == 3 and set(result.trials.state) == {"COMPLETE"}
    exported = skipsearch.export(url, "rel", tmp_path / "z" / "best.yaml")
    assert yaml.safe_load(exported.read_text())["provenance"]["metric"]["reference"] == reference

    monkeypatch.chdir(tmp_path / "w")
    check = skipsearch.verify(exported)
    assert check.ok and check.reference_hash_match, check


def test_a_study_stored_with_relative_text_opens_from_the_folder_it_ran_in(tmp_path, monkeypatch,
                                                                           spec_beside_its_reference):
    """A study stored before paths were anchored kept ``npz:ref.npz``, meant from the folder it ran in."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    raw = yaml.safe_load(spec_beside_its_reference.read_text())
    Store(url).save_study("rel", stored_form(parse_spec(raw)))  # as an older skipsearch stored it
    monkeypatch.chdir(spec_beside_its_reference.parent)
    assert len(skipsearch.run(parse_spec(raw), storage=url).trials) == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    np.savez(elsewhere / "ref.npz", images=data.load("digits", resolution=16)[64:128].numpy())
    monkeypatch.chdir(elsewhere)  # there, npz:ref.npz is another file, which the study's hashes tell apart
    with pytest.raises(UserError, match="stored with other files than the spec names now"):
        skipsearch.run(parse_spec(raw), storage=url, trials=3)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc/self/fd")
def test_a_ray_node_that_cannot_see_a_file_is_refused_before_the_study_is_stored(tmp_path, ray_address):
    """``/proc/self/fd/N`` names a file that this process holds open at N, and nothing in another process: a
    real path that the driver sees and a Ray worker does not, as with a disk only the driver's machine mounts."""
    from skipsearch.search.ray_tune import Placement

    np.savez(tmp_path / "ref.npz", images=data.load("digits", resolution=16)[:64].numpy())
    with open(tmp_path / "ref.npz", "rb") as held:
        fd = os.dup2(held.fileno(), 917)
        try:
            spec = parse_spec(tiny_spec_dict("unseen", metric={"reference": f"npz:/proc/self/fd/{fd}"}))
            db = tmp_path / "ray.db"
            with pytest.raises(UserError) as err:
                skipsearch.run(spec, storage=f"sqlite:///{db}", placement=Placement(workers=1))
        finally:
            os.close(fd)
    text = str(err.value)
    size = (tmp_path / "ref.npz").stat().st_size
    assert f"  metric.reference: /proc/self/fd/{fd} is nothing on Ray node " in text, text
    assert f", a file of {size} bytes here" in text and "file system that every node mounts" in text
    assert not db.exists()
