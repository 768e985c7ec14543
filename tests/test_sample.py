"""``skipsearch sample`` / ``skipsearch.sample``: images of a study's model, with a coefficient file applied or not.

One tiny real study on a class-conditional diffusers UNet2DModel (random weights, DDIM, 2 trials) is shared by the
module. Its recorded FIDs are the check that ``sample`` draws the trials' very images: the FID of the written
samples, recomputed against the study's reference, equals the baseline's and the exported trial's FID. Labels are
read where they enter the network (the UNet's class embedding), not from what ``sample`` says it did.
"""

from __future__ import annotations

import families
import numpy as np
import pytest
import torch
import yaml
from class_labels import labels_seen
from conftest import tiny_dt_spec_dict, tiny_spec_dict
from PIL import Image
from typer.testing import CliRunner

from skipsearch import api, data
from skipsearch.errors import UserError
from skipsearch.exchange import coeffile
from skipsearch.exchange.sample import sample
from skipsearch.specfile import load_spec

pytest.importorskip("diffusers")

N = 32
CLASSES = 10


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A class-conditional DDPM folder, a 2-trial study of it (baseline + one random rho), trial 1 exported."""
    root = tmp_path_factory.mktemp("sample")
    folder = families.ddpm_folder(root / "cond-ddpm", num_class_embeds=CLASSES)
    spec_dict = tiny_spec_dict("cond", model={"family": "diffusers", "path": str(folder)},
                               sampler={"name": "ddim", "steps": 3}, search={"family": "per_level", "trials": 2},
                               metric={"n": N, "kid_subset_size": 16},
                               confirm={"top_k": 0, "n": N, "seed_sets": 2})
    spec_path = root / "cond.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict))
    storage = f"sqlite:///{root / 'study.db'}"
    result = api.run(spec_path, storage=storage, echo=lambda line: None)
    best = api.export(storage, "cond", root / "best.yaml", fmt="yaml", trial=1)
    fids = dict(zip(result.trials.trial_number, result.trials.fid))
    return {"root": root, "spec": spec_path, "best": best, "fids": fids}


def _fid(spec_path, images: torch.Tensor) -> float:
    """FID of ``images`` in the study's feature space against its reference, as a trial computes it."""
    from skipsearch.evaluate import build_evaluator
    from skipsearch.metrics import fid

    spec = load_spec(spec_path)
    ev = build_evaluator(spec.model, spec.metric.extractor, spec.metric.reference, "cpu")
    return fid(ev.extractor(images, batch_size=spec.metric.batch_size), ev.reference.stats)


def test_same_seeds_give_the_trials_own_images(study, tmp_path):
    plain = sample(study["spec"], n=N, output_dir=tmp_path, progress=False)
    tuned = sample(study["spec"], study["best"], n=N, output_dir=tmp_path, progress=False)
    assert plain.images.dtype == torch.uint8 and plain.images.shape == (N, 1, 16, 16)
    assert _fid(study["spec"], plain.images) == pytest.approx(study["fids"][0], rel=1e-9)  # the baseline trial
    assert _fid(study["spec"], tuned.images) == pytest.approx(study["fids"][1], rel=1e-9)  # the exported trial
    assert coeffile.read(study["best"]).provenance.search.fid == pytest.approx(study["fids"][1], rel=1e-12)
    assert not torch.equal(plain.images, tuned.images)  # the coefficients change the images
    assert plain.grid.read_bytes() != tuned.grid.read_bytes()
    assert (plain.grid.name, tuned.grid.name) == ("cond-samples.png", "cond-best-samples.png")
    # the coefficient file alone: its provenance names the model, sampler and seeds; the same images
    alone = sample(study["best"], n=N, output=tmp_path / "alone", progress=False)
    assert torch.equal(alone.images, tuned.images) and alone.coefficients == study["best"]
    grid = Image.open(plain.grid)
    side = 6 * 64 + 7 * 2  # 32 images in rows of 6 (ceil sqrt), 16 px shown at 64 px, 2 px padding
    assert grid.size == (side, side)


def test_class_labels_reach_the_network(study, tmp_path):
    """seed s samples label s mod 10, read from what the UNet's class embedding receives in every call."""
    with labels_seen(CLASSES) as seen:
        r = sample(study["spec"], n=12, seed_start=5, output=tmp_path / "labels", progress=False)
    expected = [s % CLASSES for s in range(5, 17)]
    assert seen == [expected] * 3  # one batch, 3 DDIM steps
    assert r.labels == tuple(expected) and r.conditions == tuple(range(CLASSES)) and r.seeds == range(5, 17)


def test_the_npz_is_an_npz_reference(study, tmp_path):
    r = sample(study["best"], n=20, output=tmp_path / "x.png", progress=False)  # a suffix given is taken off
    assert (r.grid, r.npz) == (tmp_path / "x.png", tmp_path / "x.npz")
    with np.load(r.npz, allow_pickle=False) as archive:
        assert archive.files == ["images"]
        assert archive["images"].dtype == np.uint8 and archive["images"].shape == (20, 16, 16, 1)  # NHWC
    assert torch.equal(data.load(f"npz:{r.npz}"), r.images)


def test_difftuning_spec_samples_the_target_classes(tmp_path):
    """A Diff-Tuning study's trials sample the new data's classes (digits 5-9 on digits-0to4): so does sample."""
    from skipsearch.methods.diff_tuning.finetune_task import finetune_task

    path = tmp_path / "dt.yaml"
    path.write_text(yaml.safe_dump(tiny_dt_spec_dict(weights_dir=str(tmp_path / "w"))))
    r = sample(path, n=16, output=tmp_path / "dt", progress=False)
    task = finetune_task(load_spec(path), n=16, seed_start=0, train_seed=0).target
    assert r.conditions == task.classes == (5, 6, 7, 8, 9)
    assert r.labels == tuple(task.labels(range(16)))


def test_bad_inputs_are_one_clear_message(study, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="spec or coefficient file not found"):
        sample(tmp_path / "nope.yaml", output_dir=out)
    with pytest.raises(UserError, match="coefficient file not found"):
        sample(study["spec"], tmp_path / "nope.yaml", output_dir=out)
    for n in (0, -3):
        with pytest.raises(UserError, match="n: the number of samples must be an integer from 1"):
            sample(study["spec"], n=n, output_dir=out)
    with pytest.raises(UserError, match="device: must be cpu, cuda"):
        sample(study["spec"], device="gpu", output_dir=out)
    with pytest.raises(UserError, match="not both"):
        sample(study["spec"], output=out / "a", output_dir=out)
    with pytest.raises(UserError, match="is a coefficient file itself"):
        sample(study["best"], study["best"], output_dir=out)
    other = tmp_path / "other.yaml"  # the same study on another model: the file was not searched on it
    other_dict = yaml.safe_load(study["spec"].read_text())
    other_dict["model"]["path"] = str(families.ddpm_folder(tmp_path / "uncond"))
    other.write_text(yaml.safe_dump(other_dict))
    with pytest.raises(UserError, match="applies only to the model it was searched on") as err:
        sample(other, study["best"], output_dir=out)
    assert str(study["best"]) in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()  # refused before anything was sampled or written


def test_cli(study, tmp_path):
    from skipsearch.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["sample", str(study["spec"]), "-c", str(study["best"]), "-n", "16", "-o",
                             str(tmp_path / "cli")])
    assert ok.exit_code == 0, ok.output
    assert "16 samples of cond-ddpm with" in ok.output and "[s mod 10]" in ok.output
    assert (tmp_path / "cli.png").is_file() and (tmp_path / "cli.npz").is_file()
    bad = runner.invoke(app, ["sample", str(study["spec"]), "-n", "0", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert bad.output.strip().splitlines() == [
        "error: n: the number of samples must be an integer from 1 to 1,000,000, got 0"]


def test_a_file_searched_with_another_sampler_is_applied_with_a_warning(study, tmp_path):
    """The spec decides how to sample; a coefficient file searched otherwise is said, not silently re-scored."""
    spec_dict = yaml.safe_load(study["spec"].read_text())
    spec_dict["sampler"]["steps"] = 4
    other = tmp_path / "steps4.yaml"
    other.write_text(yaml.safe_dump(spec_dict))
    said: list[str] = []
    r = sample(other, study["best"], n=16, output=tmp_path / "s4", progress=False, echo=said.append)
    assert said == [f"warning: {study['best']} was searched with sampler ddim, 3 steps, 3 NFE; sampling with the "
                    f"spec's ddim, 4 steps, 4 NFE"]
    assert r.sampler == "ddim, 4 steps, 4 NFE" and len(r.images) == 16
