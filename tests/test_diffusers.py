"""diffusers models in skipsearch: sampling through diffusers' schedulers equals diffusers' own pipeline for the
same initial noise; the EDM wrapper is the network's own prediction turned into x0; pickled weights need the
trust flag; text conditioning and guidance reach the network."""

from __future__ import annotations

import pickle

import families
import pytest
import torch

from skipsearch import apply
from skipsearch.diffusion.generation import SamplerConfig, generate, latents
from skipsearch.models.diffusers_schedulers import sample_scheduler
from skipsearch.errors import UserError
from skipsearch.methods.skip_tuning.schedules import LinearSkip
from skipsearch.models import load_model, model_info
from skipsearch.models.diffusers_unet import DiffusersModel

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    return families.ddpm_folder(tmp_path_factory.mktemp("ddpm") / "pipe")


@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "euler_discrete"])
def test_scheduler_sampling_equals_diffusers_own_pipeline(ddpm, name):
    """The same folder, the same scheduler, the same per-sample seeds: diffusers' pipeline and skipsearch (with
    rho = 1 hooks on) give the same images bit for bit."""
    import diffusers

    from skipsearch.models.diffusers_schedulers import make_scheduler

    loaded = load_model(DiffusersModel(path=str(ddpm)))
    seeds = [3, 11, 12]
    pipe = diffusers.DDIMPipeline.from_pretrained(ddpm, use_safetensors=True)
    pipe.scheduler = make_scheduler(name, loaded.denoiser.scheduler_config)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    if name == "ddim":  # DDIMPipeline itself
        theirs = torch.from_numpy(pipe(batch_size=3, generator=generators, num_inference_steps=6, output_type="np",
                                       eta=0.0).images).permute(0, 3, 1, 2)
    else:  # DDIMPipeline passes eta to step(), which these schedulers do not take: the pipelines' loop, below
        with torch.no_grad():
            theirs = _plain_pipeline_loop(pipe, generators, steps=6)
    with apply(loaded.denoiser, LinearSkip()):
        ours = sample_scheduler(loaded.denoiser.model_output, latents(seeds, (1, 16, 16)), name, 6,
                                loaded.denoiser.scheduler_config)
    assert torch.equal((ours / 2 + 0.5).clamp(0, 1), theirs)


def _plain_pipeline_loop(pipe, generators, steps):
    """What diffusers' pipelines (StableDiffusionPipeline's order: timesteps, then latents) do with a scheduler
    that takes no eta."""
    pipe.scheduler.set_timesteps(steps)
    x = torch.cat([torch.randn((1, 1, 16, 16), generator=g) for g in generators]) * pipe.scheduler.init_noise_sigma
    for t in pipe.scheduler.timesteps:
        out = pipe.unet(pipe.scheduler.scale_model_input(x, t), t).sample
        x = pipe.scheduler.step(out, t, x).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_edm_wrapper_turns_the_prediction_into_x0(tmp_path, prediction):
    """At an integer timestep t, D(x, sigma_t) calls the UNet at t on x * sqrt(abar_t), and maps its output to
    x0 by the prediction type's formula."""
    loaded = load_model(DiffusersModel(path=str(families.ddpm_folder(tmp_path / "p", prediction=prediction))))
    d = loaded.denoiser
    abar = d.alphas_cumprod[400].float()
    sigma = ((1 - abar) / abar).sqrt()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    x_t = x * abar.sqrt()
    with torch.no_grad():
        out = d.unet(x_t, torch.tensor([400.0, 400.0])).sample
        expected = {"epsilon": x - sigma * out, "v_prediction": abar.sqrt() * x_t - (1 - abar).sqrt() * out,
                    "sample": out}[prediction]
        torch.testing.assert_close(d(x, sigma.expand(2)), expected, rtol=1e-5, atol=1e-5)
    t = d.schedule.t(torch.tensor([0.05, 1.0, 30.0], dtype=torch.float64))
    torch.testing.assert_close(d.schedule.sigma(t), torch.tensor([0.05, 1.0, 30.0], dtype=torch.float64))


def test_edm_samplers_run_on_a_diffusers_model(ddpm):
    loaded = load_model(DiffusersModel(path=str(ddpm)))
    sampler = SamplerConfig("heun", 4, sigma_min=0.02, sigma_max=80.0)
    images = generate(loaded.denoiser, range(5), loaded.info.shape, sampler, batch_size=2)
    assert images.shape == (5, 1, 16, 16) and images.dtype == torch.uint8
    again = generate(loaded.denoiser, range(5), loaded.info.shape, sampler, batch_size=5)
    assert (images.int() - again.int()).abs().max() <= 1  # each sample's noise is its own seed's


def test_pickled_weights_need_the_trust_flag(tmp_path):
    """A .bin (pickle) is refused before anything is unpickled; its payload never runs."""
    folder = families.ddpm_folder(tmp_path / "pipe")
    unet = folder / "unet"
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (unet / "diffusion_pytorch_model.safetensors").unlink()
    (unet / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(UserError, match="trust_pickles"):
        load_model(DiffusersModel(path=str(folder)))
    with pytest.raises(UserError, match="trust_pickles"):
        model_info(DiffusersModel(path=str(folder)))
    assert not marker.exists()
    # with the flag, diffusers itself loads .bin with torch.load(weights_only=True): the payload still cannot run
    with pytest.raises(UserError, match="could not be loaded"):
        load_model(DiffusersModel(path=str(folder), trust_pickles=True))
    assert not marker.exists()


def test_unusable_folders_get_one_clear_message(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        model_info(DiffusersModel(path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json"):
        model_info(DiffusersModel(path=str(tmp_path / "empty")))
    folder = families.latent_text_folder(tmp_path / "sd")
    with pytest.raises(UserError, match="model.prompts"):
        model_info(DiffusersModel(path=str(folder)))
    with pytest.raises(UserError, match="takes no text"):
        model_info(DiffusersModel(path=str(families.ddpm_folder(tmp_path / "p")), prompts=str(folder / "prompts.txt")))


def test_text_conditioning_and_guidance(tmp_path):
    """Prompts reach the network (different prompts, different outputs); guidance counts two passes per step,
    and batching the two passes or not gives the same images."""
    folder = families.latent_text_folder(tmp_path / "sd")
    loaded = load_model(DiffusersModel(path=str(folder), prompts=str(folder / "prompts.txt")))
    info = loaded.info
    assert info.conditions == (0, 1, 2) and info.shape == (2, 8, 8) and info.resolution == 16
    d = loaded.denoiser
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1)
    with torch.no_grad():
        out = d(x, torch.tensor([2.0, 2.0]), class_labels=torch.tensor([0, 1]))
    assert not torch.allclose(out[0], out[1])
    guided = SamplerConfig("ddim", 3, guidance_scale=3.0)
    assert guided.nfe == 6 and SamplerConfig("ddim", 3).nfe == 3
    batched = generate(d, range(4), info.shape, guided, labels=[0, 1, 2, 0])
    split = generate(d, range(4), info.shape, SamplerConfig("ddim", 3, guidance_scale=3.0, cfg_batched=False),
                     labels=[0, 1, 2, 0])
    assert batched.shape == (4, 1, 16, 16)
    assert (batched.int() - split.int()).abs().max() <= 1
    plain = generate(d, range(4), info.shape, SamplerConfig("ddim", 3), labels=[0, 1, 2, 0])
    assert not torch.equal(plain, batched)


def test_precomputed_prompt_embeddings(tmp_path):
    from safetensors.torch import save_file

    folder = families.latent_text_folder(tmp_path / "sd")
    embeds = torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(2))
    save_file({"prompt_embeds": embeds, "negative_prompt_embeds": torch.zeros(6, 16)}, tmp_path / "e.safetensors")
    loaded = load_model(DiffusersModel(path=str(folder), prompt_embeds=str(tmp_path / "e.safetensors")))
    assert loaded.info.conditions == (0, 1, 2, 3)
    assert torch.equal(loaded.denoiser.prompt_embeds, embeds)
    save_file({"wrong": embeds}, tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match="prompt_embeds"):
        model_info(DiffusersModel(path=str(folder), prompt_embeds=str(tmp_path / "bad.safetensors")))
