"""Names that become paths, and FIDs from almost nothing (issue 25, findings 3 and 8).

A study's name names a folder under ``finetune.weights_dir`` and files; a name such as ``..`` once wrote
Diff-Tuning weights into the parent of that folder. A FID from 2 samples, from a reference of 2 or 3 images,
or from a reference of one image copied, was scored and stored. Each is now refused before anything is
stored, naming the spec field; N between the floor and the feature dimension is warned about once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_dt_spec_dict, tiny_spec_dict
from test_spec import STUDIES, cli

from skipsearch.errors import UserError
from skipsearch.spec import MIN_FID_N, NAME_RULE
from skipsearch.specfile import load_spec, parse_spec

BAD_NAMES = ["..", ".", ".hidden", "../up", "a/b", "/abs", "a\\b", " ", "a b", "-flag", "tab\t", "ü", "a:b", "x\n"]


def _npz(path: Path, images: np.ndarray) -> str:
    np.savez(path, images=images)
    return f"npz:{path}"


def _distinct(count: int, copies: int = 0, seed: int = 0) -> np.ndarray:
    """``count`` different 16x16 images followed by ``copies`` copies of the first."""
    images = np.random.default_rng(seed).integers(0, 256, (count, 1, 16, 16), dtype=np.uint8)
    return np.concatenate([images, np.repeat(images[:1], copies, axis=0)])


def _refused(proc, field: str, *words: str) -> None:
    """One clear error naming the field: exit 2, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and f"  {field}: " in proc.stderr, proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr


# --- names that become paths --------------------------------------------------------------------------------

def test_a_study_named_dotdot_writes_nothing_anywhere(tmp_path):
    """The finding: ``name: ..`` put trial weights in the parent of finetune.weights_dir. Now refused, and
    neither the database nor any weights folder comes into being."""
    root = tmp_path / "root"
    root.mkdir()
    spec = tmp_path / "dotdot.yaml"
    spec.write_text(yaml.safe_dump(tiny_dt_spec_dict("..", weights_dir=str(root / "weights"))))
    proc = cli("run", str(spec), "--storage", f"sqlite:///{tmp_path / 'dt.db'}")
    _refused(proc, "name", "'..' cannot be a study name")
    assert not (tmp_path / "dt.db").exists() and list(root.iterdir()) == []


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_names_that_are_not_plain_file_names_are_refused(name):
    with pytest.raises(UserError) as err:
        parse_spec(tiny_spec_dict(name))
    assert "\n  name: " in str(err.value) and "study name" in str(err.value)


def test_an_empty_name_is_refused():
    with pytest.raises(UserError, match=r"\n  name: String should have at least 1 character"):
        parse_spec(tiny_spec_dict(""))


@pytest.mark.parametrize("name", ["a", "demo-skip", "fashion_skip.v2", "0to4", "a..b", "x-", "A.B_C-9"])
def test_plain_file_names_stay_valid(name):
    assert parse_spec(tiny_spec_dict(name)).name == name


def test_every_shipped_spec_name_is_a_plain_file_name():
    assert STUDIES and all(NAME_RULE.fullmatch(load_spec(path).name) for path in STUDIES)


@pytest.mark.parametrize("name", ["..", "../escape", "a/b", "/etc"])
def test_weights_stay_in_their_own_folder_even_past_validation(tmp_path, name):
    """The second guard: a spec changed with ``model_copy`` skips validation, so the weights path itself is
    checked, and resolve refuses it (naming ``name``) before a study is stored."""
    from skipsearch.methods import method_for
    from skipsearch.resolve import resolve

    good = parse_spec(tiny_dt_spec_dict("dt", weights_dir=str(tmp_path / "w")))
    method = method_for(good.kind)
    assert method.artifact(good, 7) == (tmp_path / "w" / "dt" / "trial-0007.pt").resolve()
    bad = good.model_copy(update={"name": name})
    with pytest.raises(UserError, match="outside its own folder in finetune.weights_dir"):
        method.artifact(bad, 7)
    with pytest.raises(UserError, match=r"invalid spec\n  name: the study name"):
        resolve(bad)


@pytest.mark.parametrize("label", ["../../escape", "org/model", "/abs/path", "..", "a\\b c"])
def test_cache_entries_stay_in_the_cache_folder(label):
    """Model and extractor names become cache file names (knowledge banks, reference statistics)."""
    from skipsearch.files import cache_dir
    from skipsearch.metrics.cache import cache_file

    path = cache_file("bank", label, "0123456789abcdef")
    assert path.parent == cache_dir().resolve() and path.name.startswith("bank-")
    assert "/" not in path.name and path.name.endswith("-0123456789abcdef.npz")


def test_safe_labels_keep_their_cache_file_names():
    """Cache entries written before stay found: a registered name is used as it is."""
    from skipsearch.metrics.cache import cache_file

    assert cache_file("ref", "inception-v3-compat@bf16", "k").name == "ref-inception-v3-compat@bf16-k.npz"


# --- FID from almost nothing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("patch, field", [
    ({"metric": {"n": 2, "kid_subset_size": 2}}, "metric.n"),
    ({"metric": {"n": MIN_FID_N - 1, "kid_subset_size": 2}}, "metric.n"),
    ({"metric": {"n": 64, "rungs": [8, 16, 32], "kid_subset_size": 8}}, "metric.rungs"),
    ({"confirm": {"n": 4}, "metric": {"kid_subset_size": 4}}, "confirm.n"),
])
def test_too_few_samples_for_a_fid_are_refused_naming_the_field(patch, field):
    with pytest.raises(UserError) as err:
        parse_spec(tiny_spec_dict("few", **patch))
    assert f"\n  {field}: " in str(err.value) and f"at least {MIN_FID_N} samples" in str(err.value), str(err.value)


def test_the_floor_itself_is_accepted():
    spec = parse_spec(tiny_spec_dict("floor", metric={"n": 4 * MIN_FID_N, "rungs": [MIN_FID_N, 2 * MIN_FID_N],
                                                      "kid_subset_size": MIN_FID_N}, confirm={"n": MIN_FID_N}))
    assert spec.metric.rungs[0] == MIN_FID_N and spec.confirm.n == MIN_FID_N


def test_two_samples_are_refused_before_storing(tmp_path):
    """The probe's N = 2 (with kid_subset_size 2), through the CLI: nothing stored."""
    spec = tmp_path / "n2.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict("n2", metric={"n": 2, "kid_subset_size": 2})))
    proc = cli("run", str(spec), "--storage", f"sqlite:///{tmp_path / 'n2.db'}")
    _refused(proc, "metric.n", "at least 16 samples, got 2")
    assert not (tmp_path / "n2.db").exists()


@pytest.mark.parametrize("images, words", [
    (_distinct(2), ["has 2 image(s)", "at least 16"]),
    (_distinct(3), ["has 3 image(s)", "at least 16"]),
    (_distinct(1, copies=199), ["200 images but only 1 distinct"]),
    (_distinct(MIN_FID_N - 1, copies=100), [f"only {MIN_FID_N - 1} distinct"]),
], ids=["2 images", "3 images", "200 copies of one", "15 distinct"])
def test_a_reference_too_small_to_mean_anything_is_refused_before_storing(tmp_path, images, words):
    from skipsearch.resolve import resolve

    ref = _npz(tmp_path / "ref.npz", images)
    spec = parse_spec(tiny_spec_dict("ref", metric={"reference": ref, "n": 64, "kid_subset_size": 2}))
    with pytest.raises(UserError) as err:
        resolve(spec)
    assert "\n  metric.reference: " in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_a_reference_of_copies_is_refused_by_the_cli_and_nothing_is_stored(tmp_path):
    ref = _npz(tmp_path / "same.npz", _distinct(1, copies=499))
    spec = tmp_path / "same.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict("same", metric={"reference": ref, "kid_subset_size": 2})))
    proc = cli("run", str(spec), "--storage", f"sqlite:///{tmp_path / 'same.db'}")
    _refused(proc, "metric.reference", "500 images but only 1 distinct")
    assert not (tmp_path / "same.db").exists()


def test_a_diff_tuning_source_reference_of_copies_is_refused(tmp_path):
    from skipsearch.resolve import resolve

    ref = _npz(tmp_path / "src.npz", _distinct(2, copies=300))
    spec = parse_spec(tiny_dt_spec_dict("dt-src", weights_dir=str(tmp_path / "w"),
                                        finetune={"source_reference": ref}))
    with pytest.raises(UserError, match=r"\n  finetune.source_reference: .* only 2 distinct"):
        resolve(spec)
    assert not (tmp_path / "w").exists()


def test_n_and_reference_below_the_feature_dimension_warn_once(tmp_path):
    """Between the floor and the feature dimension (128 for skipsearch-digits) a FID is allowed, with one
    warning naming every field below it."""
    from skipsearch.resolve import resolve

    ref = _npz(tmp_path / "ref.npz", _distinct(40))
    resolved = resolve(parse_spec(tiny_spec_dict("warn", metric={"reference": ref, "n": 32, "kid_subset_size": 16},
                                                 confirm={"n": 64})))
    about = [w for w in resolved.warnings if "dimensions" in w]
    assert len(about) == 1, resolved.warnings
    assert about[0].startswith("metric.n (32 samples), confirm.n (64 samples) and metric.reference (40 images) are "
                               "below the 128 dimensions of skipsearch-digits's features"), about


def test_no_dimension_warning_at_or_above_it():
    from skipsearch.resolve import resolve

    resolved = resolve(parse_spec(tiny_spec_dict("enough", metric={"n": 128, "rungs": [64], "kid_subset_size": 32},
                                                 confirm={"n": 256})))
    assert not [w for w in resolved.warnings if "dimensions" in w], resolved.warnings  # rungs only screen


def test_versus_plain_adds_no_rung_below_the_floor():
    """The benchmark's default ladder (n/4, n/2) keeps only rungs a spec accepts."""
    from skipsearch.bench.versus_plain import default_rungs

    assert default_rungs(parse_spec(tiny_spec_dict("vp", metric={"n": 48, "kid_subset_size": 4}))) == (24,)
    assert default_rungs(parse_spec(tiny_spec_dict("vp", metric={"n": 64, "kid_subset_size": 4}))) == (16, 32)
