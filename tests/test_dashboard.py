"""What optuna-dashboard shows of a study, served for real on 127.0.0.1, and the HTML report, both opened in
headless Chromium. The study facts, trial numbers, notes and pictures are read back from the Optuna study."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import browser
import optuna
import pytest
from conftest import tiny_spec_dict
from PIL import Image
from test_spec import cli

import skipsearch
from skipsearch.diffusion.generation import SamplerConfig, generate
from skipsearch.errors import UserError
from skipsearch.previews import PREVIEW_COUNT, grid_png
from skipsearch.specfile import parse_spec
from skipsearch.storage.artifacts import artifact_store

needs_chromium = pytest.mark.skipif(browser.chromium() is None,
                                    reason="Debian's chromium is not installed (.ci/run installs it)")
STUDY_FACTS = {"method", "model", "model_hash", "sampler", "nfe", "extractor", "reference", "reference_hash", "n",
               "rungs", "baseline_fid", "confirm", "verdict", "heldout", "winner"}


def _run_studies(url: str) -> None:
    rungs = tiny_spec_dict("dash-rungs", metric={"n": 64, "rungs": [32]}, search={"trials": 8, "seed": 3})
    window = tiny_spec_dict("dash-window", search={"family": "time_window", "trials": 4})
    for raw in (rungs, window):
        skipsearch.run(parse_spec(raw), storage=url)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{folder / 'study.db'}"
    _run_studies(url)
    return url, folder


def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def test_the_study_itself_holds_what_a_reader_needs(studies):
    url, folder = studies
    study = _load(url, "dash-rungs")
    assert study.metric_names == ["FID"]
    attrs = study.user_attrs
    assert STUDY_FACTS <= set(attrs), STUDY_FACTS - set(attrs)
    frame = skipsearch.trials(url, "dash-rungs")
    base = frame[frame.role == "baseline"].iloc[0]
    assert attrs["baseline_fid"] == base.fid and attrs["model_hash"] == base.model_hash
    assert attrs["reference_hash"] == base.ref_hash and attrs["nfe"] == int(base.nfe) and attrs["rungs"] == [32]
    for trial in study.trials:
        row = frame[frame.trial_number == trial.number].iloc[0]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert {"kid", "delta_fid", "n", "nfe", "wall_s"} <= set(trial.user_attrs)
            assert trial.user_attrs["n"] == 64 and trial.user_attrs["delta_fid"] == pytest.approx(row.delta_fid)
        if trial.state == optuna.trial.TrialState.PRUNED:  # at its own N, never the full one
            assert trial.user_attrs["n"] == 32 and "delta_fid" not in trial.user_attrs
    assert (frame.state == "PRUNED").any(), "the ladder study should prune at least one trial"


def test_notes_carry_the_spec_the_verdict_and_each_candidates_interval(studies):
    from optuna_dashboard import get_note

    url, _ = studies
    study = _load(url, "dash-rungs")
    note = get_note(study)
    assert "## Verdict" in note and study.user_attrs["verdict"] in note and "name: dash-rungs" in note
    from skipsearch.search.verdict import edge_note

    edges = study.user_attrs["edges"]  # a claimed winner's rho at an end of rho_range: the note says so, as best does
    assert (edge_note(edges) in note) if edges else ("widen the range" not in note)
    won = skipsearch.best(url, "dash-rungs")
    if won.provenance.trial == study.user_attrs["winner"]:
        assert list(won.edges) == edges
    conf = skipsearch.confirmations(url, "dash-rungs")
    held = study.user_attrs["heldout"]
    assert set(held) == {str(n) for n in conf.trial_number}
    for r in conf.itertuples():
        assert held[str(r.trial_number)]["heldout_fid"] == pytest.approx(r.heldout_fid)
        assert held[str(r.trial_number)]["delta_fid_low"] == pytest.approx(r.delta_fid_low)
    trial = next(t for t in study.trials if t.number == int(conf.trial_number.iloc[-1]))
    from skipsearch.search.annotations import _TrialNote

    assert "95% paired interval" in get_note(_TrialNote(study, trial._trial_id))


def _artifacts(url: str, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, bytes]:
    store = artifact_store(url, create=False)
    out = {}
    for meta in optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage):
        with store.open_reader(meta.artifact_id) as reader:
            out[meta.filename] = reader.read()
    return out


def test_every_evaluated_trial_has_a_sample_grid_of_the_same_seeds_and_its_profile(studies, digits_model):
    url, folder = studies
    assert (folder / "study-artifacts").is_dir()
    study = _load(url, "dash-window")
    for trial in study.trials:
        files = _artifacts(url, study, trial)
        assert {f"samples-trial-{trial.number:04d}.png", f"profile-0-trial-{trial.number:04d}.png",
                f"profile-1-trial-{trial.number:04d}.png"} == set(files)  # rho over depth, and over sigma
        for data in files.values():
            Image.open(io.BytesIO(data)).verify()
    # the baseline's grid is its first samples: regenerate them (same seeds and batch) and compare
    base = next(t for t in study.trials if t.user_attrs.get("role") == "baseline")
    spec = parse_spec(tiny_spec_dict("x"))
    info = digits_model.info
    images = generate(digits_model.denoiser, range(0, 64), (info.img_channels, info.resolution, info.resolution),
                      SamplerConfig("heun", spec.sampler.steps), batch_size=64)
    stored = _artifacts(url, study, base)[f"samples-trial-{base.number:04d}.png"]
    assert base64.b64decode(grid_png(images[:PREVIEW_COUNT])) == stored
    assert base64.b64decode(grid_png(images[:PREVIEW_COUNT] // 2)) != stored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


@pytest.fixture(scope="module")
def served(studies):
    """``skipsearch dashboard`` in a subprocess, until the module ends."""
    url, folder = studies
    port = _free_port()
    # Ctrl-C at a terminal: a runner that started pytest in the background (nohup, `&` without job control) has
    # SIGINT ignored, which children inherit, and Python then never raises KeyboardInterrupt: give it back
    proc = subprocess.Popen([sys.executable, "-m", "skipsearch", "dashboard", "--storage", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(f"{base}/api/studies")
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the dashboard did not come up: {proc.stdout.read()}")
            time.sleep(0.3)
    yield base, port
    proc.send_signal(signal.SIGINT)  # Ctrl-C is how a user stops it: a clean exit, not "interrupted"
    try:  # seconds on a quiet machine
        out = proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the dashboard did not stop within 120 s of Ctrl-C: {proc.communicate()[0]}")
    assert proc.returncode == 0 and "Traceback" not in out, out


def test_the_dashboard_serves_names_attributes_and_pictures_over_http(served, studies):
    base, _ = served
    summaries = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
    ids = {s["study_name"]: s["study_id"] for s in summaries}
    assert {"dash-rungs", "dash-window"} <= set(ids)
    detail = json.loads(_get(f"{base}/api/studies/{ids['dash-rungs']}"))
    assert detail["objective_names"] == ["FID"]
    attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert STUDY_FACTS <= set(attrs)
    assert "## Verdict" in detail["note"]["body"]
    trial = next(t for t in detail["trials"] if t["state"] == "Complete")
    keys = {a["key"] for a in trial["user_attrs"]}
    assert {"kid", "delta_fid", "n", "nfe", "wall_s"} <= keys
    grid = next(a for a in trial["artifacts"] if a["filename"].startswith("samples-trial-"))
    png = _get(f"{base}/artifacts/{ids['dash-rungs']}/{trial['trial_id']}/{grid['artifact_id']}")
    assert png.startswith(b"\x89PNG")


def test_a_taken_port_is_one_clear_message(served, studies):
    url, _ = studies
    _, port = served
    proc = cli("dashboard", "--storage", url, "--port", str(port))
    assert proc.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dashboard_refuses_a_missing_database(tmp_path):
    proc = cli("dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--port", str(_free_port()))
    assert proc.returncode == 2 and "no database" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "none.db").exists()


@needs_chromium
def test_the_dashboard_page_renders_in_chromium(served, tmp_path):
    base, _ = served
    summaries = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
    study_id = next(s["study_id"] for s in summaries if s["study_name"] == "dash-rungs")
    page = f"{base}/dashboard/studies/{study_id}"
    shot = browser.screenshot(page, tmp_path / "dashboard.png")
    assert browser.blank_fraction(shot) < 0.95 and browser.spread(shot) > 10
    dom = browser.rendered_text(page)
    assert "dash-rungs" in dom and "FID" in dom


def test_report_is_one_self_contained_page_on_several_studies(studies, tmp_path):
    url, _ = studies
    out = tmp_path / "report.html"
    proc = cli("report", "dash-rungs", "dash-window", "--storage", url, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    assert "src=\"http" not in page and "src='http" not in page  # plotly.js and the pictures are inline
    for div in ("comparison", "delta-fid-dash-rungs", "profile-dash-window", "fid-inf-dash-rungs",
                "heldout-dash-rungs", "importances-dash-rungs"):
        assert f'id="{div}"' in page, div
    assert page.count("<img src='data:image/png;base64,") == 4  # baseline and winner grids of both studies
    assert skipsearch.best(url, "dash-rungs").verdict.text.split(".")[0] in page
    from skipsearch.search.verdict import edge_note

    for name in ("dash-rungs", "dash-window"):  # the range-end note as the study's note carries it, or none
        edges = optuna.load_study(study_name=name, storage=url).user_attrs["edges"]
        assert (html.escape(edge_note(edges)) in page) if edges else ("widen the range" not in page)
    from dataclasses import replace

    from skipsearch.htmlreport import _section, gather

    at_floor = replace(gather(url, "dash-rungs"), edges=("rho_bottom = 0.5029 at the lower end of search.rho_range "
                                                          "[0.5, 1.5]",))  # the README demo's winner, as it is said
    assert html.escape(edge_note(at_floor.edges)) in _section(at_floor)


@needs_chromium
def test_the_report_renders_in_chromium(studies, tmp_path):
    url, _ = studies
    out = skipsearch.report(url, ["dash-rungs"], tmp_path / "r.html")
    shot = browser.screenshot(out.as_uri(), tmp_path / "report.png")
    assert browser.blank_fraction(shot) < 0.95 and browser.spread(shot) > 10
    assert "plotly" in browser.rendered_text(out.as_uri())


def test_report_mistakes_are_clear(studies, tmp_path):
    url, _ = studies
    with pytest.raises(UserError, match="no study named 'nope'"):
        skipsearch.report(url, ["nope"], tmp_path / "r.html")
    with pytest.raises(UserError, match="folder"):
        skipsearch.report(url, ["dash-rungs"], tmp_path)
    proc = cli("report", "nope", "--storage", url, "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_the_same_holds_on_postgresql(postgres, tmp_path, monkeypatch):
    """Attributes, notes and artifacts through PostgreSQL (the artifact store comes from the environment)."""
    monkeypatch.setenv("SKIPSEARCH_ARTIFACTS", str(tmp_path / "artifacts"))
    url = postgres.create_database("dashboard")
    skipsearch.run(parse_spec(tiny_spec_dict("pg-dash")), storage=url)
    study = optuna.load_study(study_name="pg-dash", storage=url)
    assert study.metric_names == ["FID"] and STUDY_FACTS <= set(study.user_attrs)
    assert all(any(m.filename.startswith("samples-trial-") for m in optuna.artifacts.get_all_artifact_meta(
        t, storage=study._storage)) for t in study.trials)
    out = skipsearch.report(url, ["pg-dash"], tmp_path / "r.html")
    assert out.read_text().count("<img src='data:image/png;base64,") == 2


def test_the_package_list_names_every_package_folder():
    """pyproject lists packages (dashboards/ installs as skipsearch.dashboards): a new folder must be added."""
    import tomllib

    root = Path(__file__).parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "skipsearch").rglob("__init__.py")}
    assert found | {"skipsearch.dashboards"} == listed
    import skipsearch.dashboards as dashboards

    assert os.path.samefile(Path(dashboards.__file__).parent, root / "dashboards")


def test_dashboard_settings_bind_to_loopback():
    from skipsearch.dashboards import dashboard_settings

    assert dashboard_settings().host == "127.0.0.1"


def test_a_two_objective_fine_tuning_study_names_both_metrics_and_draws_its_front(tmp_path):
    from conftest import tiny_dt_spec_dict

    url = f"sqlite:///{tmp_path / 'dt.db'}"
    raw = tiny_dt_spec_dict("dash-dt", weights_dir=str(tmp_path / "weights"),
                            search={"trials": 3, "sampler": "random", "seed": 1,
                                    "objectives": ["target_fid", "source_fid"]})
    skipsearch.run(parse_spec(raw), storage=url)
    study = _load(url, "dash-dt")
    assert study.metric_names == ["target FID", "source FID"]
    trial = study.trials[0]
    assert {"fid", "source_fid", "weights_path"} <= set(trial.user_attrs)
    assert {"samples-trial-0000.png", "profile-0-trial-0000.png"} == set(_artifacts(url, study, trial))
    page = skipsearch.report(url, "dash-dt", tmp_path / "r.html").read_text()
    assert 'id="pareto-dash-dt"' in page and 'id="profile-dash-dt"' in page


def test_readers_work_while_a_study_runs(tmp_path):
    """WAL and a busy timeout: the frames, the report and Optuna's reader (the dashboard's) read a SQLite
    study while its driver writes, and the driver never sees 'database is locked'."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    spec = tmp_path / "live.yaml"
    import yaml

    spec.write_text(yaml.safe_dump(tiny_spec_dict("live", search={"trials": 12})))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "skipsearch", "run", str(spec), "--storage", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            env=env)
    reads = 0
    try:
        while proc.poll() is None:
            try:
                frame = skipsearch.trials(url, "live")
            except UserError:  # not registered yet
                time.sleep(0.2)
                continue
            if len(frame):
                optuna.load_study(study_name="live", storage=url).get_trials(deepcopy=False)
                skipsearch.report(url, ["live"], tmp_path / "live.html")
                reads += 1
    finally:
        out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "locked" not in out and reads >= 2, (reads, out)
