"""Every bad input gets one clear message (a UserError naming what is wrong), never a traceback or a hang.

Property-based: at least 1,000 malformed specs, 300 malformed coefficient files and 300 junk texts,
validation only (no sampling). Then the hand-made cases: YAML bombs, deep nesting, reference data that
cannot be used, storage URLs that cannot work.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import yaml
from hostile import COEFFICIENT_FILES, RAW_TEXTS, SPECS
from hypothesis import HealthCheck, given, settings
from test_spec import cli

from skipsearch import data
from skipsearch.exchange import verify as exporting
from skipsearch.errors import UserError
from skipsearch.resolve import check_names
from skipsearch.specfile import load_spec, parse_spec
from skipsearch.storage import Store, urls

def fuzz(examples: int) -> settings:
    """Seeded (the same examples in every run, as CI needs), no deadline, no health checks on slow draws."""
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                    database=None)
FIELD_LINE = re.compile(r"^  ([^\s:][^:]*): \S", re.MULTILINE)
SCRATCH = Path(tempfile.mkdtemp(prefix="skipsearch-fuzz-"))  # hypothesis's examples cannot take tmp_path


@pytest.fixture(scope="module", autouse=True)
def _scratch_goes_with_the_module():
    yield
    shutil.rmtree(SCRATCH, ignore_errors=True)


def spec_answer(text: str | bytes) -> str | None:
    """None for a valid spec, else the UserError's message; anything else raised fails the test."""
    path = SCRATCH / "spec.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    try:
        check_names(load_spec(path), str(path))
        return None
    except UserError as err:
        return str(err)


@fuzz(1000)
@given(SPECS)
def test_malformed_specs_are_answered_naming_a_field(doc):
    message = spec_answer(yaml.safe_dump(doc, allow_unicode=True))
    if message is not None:
        assert "invalid spec" in message and FIELD_LINE.search(message), message


@fuzz(300)
@given(RAW_TEXTS)
def test_junk_text_is_answered_cleanly(text):
    message = spec_answer(text)
    assert message is None or message.strip(), "an error needs a message"


def coefficient_answer(doc: dict, fmt: str) -> str | None:
    path = SCRATCH / f"c.{fmt}"
    try:
        text = {"yaml": yaml.safe_dump, "json": lambda d: __import__("json").dumps(d), "toml": tomli_w.dumps}[fmt](doc)
    except (TypeError, ValueError):  # TOML cannot hold None or NaN keys: write it as JSON instead
        path, text = SCRATCH / "c.json", __import__("json").dumps(doc)
    path.write_text(text)
    try:
        exporting.check(path)
        return None
    except UserError as err:
        return str(err)


@fuzz(300)
@given(COEFFICIENT_FILES)
def test_malformed_coefficient_files_are_answered_naming_a_field(doc_fmt):
    message = coefficient_answer(*doc_fmt)
    if message is not None:
        named = FIELD_LINE.search(message) or "not a skipsearch coefficient file" in message
        assert named, message


@pytest.mark.parametrize("text, expected", [
    ("a: &x [1]\nb: *x\n", "aliases"),
    ("[" * 5000 + "]" * 5000, "nested more than 32"),
    ("name: x\nname: y\n", "given twice"),
    ("kind: [x]\n", "kind: must be one of"),
    (b"name: \xff\xfe\n", "not UTF-8"),
    ("name: x\nmetric:\n  seed: 1.0e20\n", "metric.seed"),
    ("name: x\nmetric:\n  n: .nan\n", "metric.n"),
    ("name: x\nsearch:\n  rho_range: [0.5, .inf]\n", "search.rho_range"),
    ("name: x\nsampler:\n  sigma_max: 1e999\n", "sampler.sigma_max"),
    ("name: x\nmetric:\n  n: 64\n  kid_subset_size: 100\n", "kid_subset_size (100) must not exceed"),
    ("name: x\nmodel:\n  name: embeded-digits\n", "model.name: unknown model 'embeded-digits'; valid:"),
    ("name: x\nmetric:\n  extractor: inception\n", "metric.extractor: unknown feature extractor"),
    ("name: x\nmetric:\n  reference: digitz\n", "metric.reference: unknown data set 'digitz'"),
    ("x" * (2 << 20), "larger than"),
])
def test_hand_made_hostile_specs(text, expected):
    message = spec_answer(text)
    assert message is not None and expected in message, message


def test_the_billion_laughs_bomb_does_not_hang(tmp_path):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    message = spec_answer("\n".join(lines) + "\n")
    assert "aliases" in message


def test_a_typo_locks_nothing(tmp_path):
    """An unknown model is found before the study is stored: fixing the typo then just works."""
    spec = tmp_path / "t.yaml"
    spec.write_text(yaml.safe_dump({"name": "typo", "model": {"name": "embeded-digits"}}))
    proc = cli("run", str(spec), "--storage", f"sqlite:///{tmp_path / 't.db'}")
    assert proc.returncode == 2 and "model.name: unknown model" in proc.stderr and "embedded-digits" in proc.stderr
    assert not (tmp_path / "t.db").exists()  # nothing was stored


# --- reference data ------------------------------------------------------------------------------------

def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a huge image (a decompression bomb's header) and carries no pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND",
                                                                                                           b"")


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


REFERENCE_CASES = {
    "empty folder": lambda d: (d / "empty").mkdir() or f"folder:{d / 'empty'}",
    "40000x40000 PNG": lambda d: ((d / "bomb").mkdir(), (d / "bomb" / "a.png").write_bytes(_png_header(40000, 40000)),
                                  f"folder:{d / 'bomb'}")[-1],
    "not an image": lambda d: ((d / "txt").mkdir(), (d / "txt" / "a.png").write_text("hello"),
                               f"folder:{d / 'txt'}")[-1],
    ".npy given as npz": lambda d: (np.save(d / "a.npy", np.zeros((4, 8, 8), np.uint8)), f"npz:{d / 'a.npy'}")[-1],
    "object array": lambda d: _npz(d / "o.npz", images=np.array([{"a": 1}, None], dtype=object)),
    "float images": lambda d: _npz(d / "f.npz", images=np.zeros((4, 8, 8), np.float32)),
    "zero images": lambda d: _npz(d / "z.npz", images=np.zeros((0, 8, 8), np.uint8)),
    "5-D array": lambda d: _npz(d / "5.npz", images=np.zeros((2, 2, 2, 2, 2), np.uint8)),
    "npz without images": lambda d: _npz(d / "k.npz", a=np.zeros(3), b=np.zeros(3)),
    "missing file": lambda d: f"npz:{d / 'nope.npz'}",
    "garbage npz": lambda d: ((d / "g.npz").write_bytes(b"PK\x03\x04garbage"), f"npz:{d / 'g.npz'}")[-1],
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_unusable_reference_data_is_a_clear_error(tmp_path, case):
    name = REFERENCE_CASES[case](tmp_path)
    with pytest.raises(UserError) as err:
        data.load(name)
    assert str(err.value).strip()


@pytest.mark.parametrize("count", [1, 2])
def test_a_reference_smaller_than_the_kid_subset_is_refused_before_storing(tmp_path, count):
    name = _npz(tmp_path / "few.npz", images=np.full((count, 1, 16, 16), 128, np.uint8))
    spec = tmp_path / "few.yaml"
    spec.write_text(yaml.safe_dump({"name": "few", "device": "cpu", "metric": {"reference": name, "n": 64,
                                                                                 "kid_subset_size": 32}}))
    proc = cli("run", str(spec), "--storage", f"sqlite:///{tmp_path / 'few.db'}")
    assert proc.returncode == 2 and f"has {count} image(s)" in proc.stderr and "metric.reference" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "few.db").exists()


def test_n_above_the_reference_size_warns(tmp_path):
    from skipsearch.resolve import resolve

    name = _npz(tmp_path / "small.npz", images=np.random.default_rng(0).integers(0, 255, (40, 1, 16, 16), np.uint8))
    resolved = resolve(parse_spec({"name": "w", "device": "cpu", "metric": {"reference": name, "n": 64,
                                                                             "kid_subset_size": 32}}))
    assert resolved.reference_size == 40 and any("metric.n (64) is larger than the 40" in w for w in resolved.warnings)


# --- storage URLs --------------------------------------------------------------------------------------

BAD_URLS = {
    "": "empty", "   ": "empty", "foo://x/y": "unsupported database 'foo'", "sqlite://": "in-memory",
    "sqlite:///:memory:": "in-memory", "postgresql://u@h:99999/db": "port 99999 is out of range",
    "postgresql://u@h:abc/db": "not a valid database URL", "not a url": "not a valid database URL",
    "sqlite:////nonexistent-dir/x.db": "does not exist", "mysql://u@h/db": "unsupported database 'mysql'",
}


@pytest.mark.parametrize("url", sorted(BAD_URLS), ids=lambda u: u or "empty")
def test_bad_storage_urls(url):
    with pytest.raises(UserError, match=BAD_URLS[url]):
        Store(url)


def test_bad_storage_url_on_the_command_line_exits_2_and_creates_nothing(tmp_path):
    proc = cli("run", "studies/demo-skip.yaml", "--storage", "sqlite://", cwd=Path(__file__).parents[1])
    assert proc.returncode == 2 and "storage: an in-memory SQLite database" in proc.stderr
    proc = cli("best", "x", "--storage", f"sqlite:///{tmp_path / 'missing.db'}")
    assert proc.returncode == 2 and "no database at" in proc.stderr
    assert not (tmp_path / "missing.db").exists()  # readers never create a database
    assert urls.for_command_line("postgresql://a:b@h/d") == '"$SKIPSEARCH_STORAGE"'


def test_a_url_is_stored_without_its_password():
    assert urls.without_password("postgresql+psycopg://alice:s3cr3t@db:5432/x") == "postgresql+psycopg://alice@db:5432/x"
    assert urls.shown("postgresql+psycopg://alice:s3cr3t@db/x") == "postgresql+psycopg://alice:***@db/x"
