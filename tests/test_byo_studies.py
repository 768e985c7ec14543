"""Whole studies on models a user brings: a tiny random diffusers UNet2DModel through a diffusers scheduler, a
tiny text-conditioned latent UNet2DConditionModel with its own text encoder (and guidance), a FreeU study and a
combined Skip-Tuning + FreeU study on it, and a network of the user's own handed over by the Python API. Each
goes through export and ``apply`` on a fresh copy of the model, which reproduces the stored FID."""

from __future__ import annotations

import families
import pytest
import torch
import yaml
from conftest import tiny_spec_dict

from skipsearch import api, apply
from skipsearch.errors import UserError
from skipsearch.evaluate import EvalTask, build_evaluator
from skipsearch.exchange import coeffile
from skipsearch.specfile import load_spec

pytest.importorskip("diffusers")


def _study(tmp_path, spec_dict: dict, model=None):
    path = tmp_path / f"{spec_dict['name']}.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = api.run(path, storage=storage, echo=lambda line: None, model=model)
    out = tmp_path / f"{spec_dict['name']}-best.yaml"
    api.export(storage, spec_dict["name"], out, fmt="yaml")
    return load_spec(path), result, coeffile.read(out), out


def _reproduce(spec, cf, out) -> float:
    """The exported trial's FID, from a fresh model with the file applied (as ``verify`` does)."""
    p = cf.provenance
    task = EvalTask(model=spec.model, sampler=spec.sampler.config(), extractor=spec.metric.extractor,
                    dataset=spec.metric.reference, n=p.search.n, seed_start=p.search.seed_start,
                    batch_size=spec.metric.batch_size, kid_subset_size=spec.metric.kid_subset_size)
    ev = build_evaluator(task.model, task.extractor, task.dataset, "cpu")
    with apply(ev.loaded.denoiser, out):
        return ev(task).fid


def test_skip_study_on_a_diffusers_unet2d_through_ddim(tmp_path):
    folder = families.ddpm_folder(tmp_path / "ddpm")
    spec_dict = tiny_spec_dict("byo-unet2d", model={"family": "diffusers", "path": str(folder)},
                               sampler={"name": "ddim", "steps": 3}, search={"family": "per_level", "trials": 3})
    spec, result, cf, out = _study(tmp_path, spec_dict)
    frame = result.trials
    assert (frame.state == "COMPLETE").sum() == 3 and (frame.nfe == 3).all()
    assert frame.model_id.iloc[0] == "ddpm"
    assert [s.level for s in cf.provenance.skips] == [0, 0, 1, 1, 2, 2]  # every skip point, expanded
    assert cf.provenance.model.spec.path == str(folder)
    assert _reproduce(spec, cf, out) == pytest.approx(cf.provenance.search.fid, rel=1e-6)
    # the plain-user path: a diffusers pipeline object, the file applied in one line
    from diffusers import DDIMPipeline

    pipe = DDIMPipeline.from_pretrained(folder, use_safetensors=True)
    with apply(pipe, out):
        images = pipe(batch_size=2, num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 16, 16, 1)


def test_skip_study_on_a_text_latent_model_with_guidance(tmp_path):
    folder = families.latent_text_folder(tmp_path / "sd")
    spec_dict = tiny_spec_dict("byo-text", model={"family": "diffusers", "path": str(folder),
                                                  "prompts": str(folder / "prompts.txt")},
                               sampler={"name": "dpmpp_2m", "steps": 3, "guidance_scale": 2.0},
                               search={"trials": 3})
    spec, result, cf, out = _study(tmp_path, spec_dict)
    frame = result.trials
    assert (frame.state == "COMPLETE").sum() == 3 and (frame.nfe == 6).all()  # two passes per step
    assert _reproduce(spec, cf, out) == pytest.approx(cf.provenance.search.fid, rel=1e-6)


@pytest.mark.parametrize("combine", [False, True], ids=["freeu", "skip+freeu"])
def test_freeu_study(tmp_path, combine):
    folder = families.latent_text_folder(tmp_path / "sd")
    search = {"trials": 3, "sampler": "random", "seed": 1, "combine_skip": combine}
    model = {"family": "diffusers", "path": str(folder), "prompts": str(folder / "prompts.txt")}
    spec_dict = tiny_spec_dict(f"byo-freeu-{int(combine)}", kind="freeu", model=model,
                               sampler={"name": "ddim", "steps": 3})
    spec_dict["search"] = search
    spec, result, cf, out = _study(tmp_path, spec_dict)
    assert (result.trials.state == "COMPLETE").sum() == 3
    assert cf.coefficients.family == ("skip_freeu" if combine else "freeu")
    assert _reproduce(spec, cf, out) == pytest.approx(cf.provenance.search.fid, rel=1e-6)


def test_freeu_on_a_model_without_it_is_refused_before_anything_is_stored(tmp_path):
    folder = families.ddpm_folder(tmp_path / "ddpm")
    spec_dict = tiny_spec_dict("byo-nofreeu", kind="freeu", model={"family": "diffusers", "path": str(folder)},
                               sampler={"name": "ddim", "steps": 3})
    spec_dict["search"] = {"trials": 2}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec_dict))
    with pytest.raises(UserError, match="enable_freeu"):
        api.run(path, storage=f"sqlite:///{tmp_path / 'x.db'}", echo=lambda line: None)
    assert not (tmp_path / "x.db").exists() or "byo-nofreeu" not in api.studies(f"sqlite:///{tmp_path / 'x.db'}")


def test_a_users_own_network_by_hook(tmp_path):
    net = families.UserUNet().eval()
    spec_dict = tiny_spec_dict("byo-hooked", model=families.user_section("my-unet"), search={"trials": 3})
    spec, result, cf, out = _study(tmp_path, spec_dict, model=net)
    assert (result.trials.state == "COMPLETE").sum() == 3
    assert [s.path for s in cf.provenance.skips] == ["dec.0", "dec.1"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        plain = net(x, torch.ones(2))
        with apply(net, out):  # the network was declared with its skips when it was handed over
            assert not torch.equal(net(x, torch.ones(2)), plain) or cf.coefficients.is_identity()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    storage = f"sqlite:///{tmp_path / 'w.db'}"  # the spec without its network: refused before anything is stored
    unhanded = tmp_path / "unhanded.yaml"
    unhanded.write_text(yaml.safe_dump(tiny_spec_dict("unhanded", model=families.user_section("never-handed"))))
    with pytest.raises(UserError, match="pass it through the Python API"):
        api.run(unhanded, storage=storage, echo=lambda line: None)
    assert not (tmp_path / "w.db").exists()  # resolve refused before the store was opened
    plain_spec = tmp_path / "plain.yaml"  # model= with a spec that is not family hooked: one clear message
    plain_spec.write_text(yaml.safe_dump(tiny_spec_dict("plain")))
    with pytest.raises(UserError, match="family hooked"):
        api.run(plain_spec, storage=f"sqlite:///{tmp_path / 'z.db'}", echo=lambda line: None, model=net)


def test_a_diffusers_pipeline_handed_over_as_an_object(tmp_path):
    """A study on a pipeline in memory is the study of its folder: the folder's fresh model with the exported
    file reproduces the FID recorded for the object, and verify does so with the object handed over again."""
    from diffusers import DDIMPipeline

    folder = families.ddpm_folder(tmp_path / "ddpm")
    pipe = DDIMPipeline.from_pretrained(folder, use_safetensors=True)
    before = _state(pipe.unet)
    spec_dict = tiny_spec_dict("byo-object", model={"family": "diffusers", "name": "my-ddpm"},
                               sampler={"name": "ddim", "steps": 3}, search={"family": "per_level", "trials": 3})
    spec, result, cf, out = _study(tmp_path, spec_dict, model=pipe)
    assert (result.trials.state == "COMPLETE").sum() == 3 and (result.trials.model_id == "my-ddpm").all()
    assert cf.provenance.model.spec.path is None and cf.provenance.model.spec.name == "my-ddpm"
    from_folder = spec.model_copy(update={"model": spec.model.model_copy(update={"path": str(folder), "name": None})})
    assert _reproduce(from_folder, cf, out) == pytest.approx(cf.provenance.search.fid, rel=1e-6)
    assert api.verify(out, model=pipe).ok
    assert not pipe.unet._forward_pre_hooks and all(not m._forward_pre_hooks for m in pipe.unet.modules())
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())


def test_a_text_pipeline_object_encodes_its_prompts_with_its_own_text_encoder(tmp_path):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, PreTrainedTokenizerFast

    folder = families.latent_text_folder(tmp_path / "sd")
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae"), unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
        tokenizer=PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer"),
        scheduler=DDPMScheduler.from_pretrained(folder / "scheduler"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    model = {"family": "diffusers", "name": "my-sd", "prompts": str(folder / "prompts.txt")}
    spec_dict = tiny_spec_dict("byo-text-object", model=model,
                               sampler={"name": "dpmpp_2m", "steps": 3, "guidance_scale": 2.0}, search={"trials": 2})
    spec, result, cf, out = _study(tmp_path, spec_dict, model=pipe)
    assert (result.trials.state == "COMPLETE").sum() == 2 and (result.trials.nfe == 6).all()
    pipe.scheduler.save_pretrained(folder / "scheduler")  # the pipeline sets steps_offset=1: sampled as it would
    from_folder = spec.model_copy(update={"model": spec.model.model_copy(update={"path": str(folder), "name": None})})
    assert _reproduce(from_folder, cf, out) == pytest.approx(cf.provenance.search.fid, rel=1e-6)


def test_handing_over_a_diffusers_object_wrongly_is_one_clear_message(tmp_path):
    folder = families.ddpm_folder(tmp_path / "ddpm")
    storage = f"sqlite:///{tmp_path / 'w.db'}"

    def run(name: str, model_section: dict, model) -> None:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_spec_dict(name, model=model_section, sampler={"name": "ddim", "steps": 3})))
        api.run(path, storage=storage, echo=lambda line: None, model=model)

    with pytest.raises(UserError, match="model.path names a folder and model= hands over a network"):
        run("both", {"family": "diffusers", "path": str(folder)}, families.unet2d())
    with pytest.raises(UserError, match="takes a UNet2DModel or UNet2DConditionModel.*got Linear"):
        run("linear", {"family": "diffusers", "name": "lin"}, torch.nn.Linear(2, 2))
    with pytest.raises(UserError, match="no network handed over in this process"):
        run("unhanded-diffusers", {"family": "diffusers", "name": "nobody"}, None)
    with pytest.raises(UserError, match="family hooked or diffusers"):
        run("embedded-object", {"name": "digits-unet"}, families.unet2d())
    assert not (tmp_path / "w.db").exists()  # every refusal came before the store was opened
    with pytest.raises(Exception, match="give path .* or name"):
        load_spec_dict({"family": "diffusers"})


def load_spec_dict(model: dict):
    from skipsearch.spec import Spec

    return Spec.model_validate(tiny_spec_dict("x", model=model))


def _state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}
