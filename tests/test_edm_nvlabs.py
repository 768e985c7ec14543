"""The edm family (NVlabs EDM network pickles): an untrusted pickle is never opened; a checkout without NVlabs'
modules is named; and, with NVlabs' code (``SKIPSEARCH_EDM_CODE``: a checkout of NVlabs/edm), tiny SongUNets
and DhariwalUNets built with NVlabs' own classes and pickled as NVlabs saves them load, sample, and have
skip points whose channel slices are exactly the tensors their encoders made."""

from __future__ import annotations

import importlib
import math
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from skipsearch import apply
from skipsearch.diffusion.generation import SamplerConfig, generate
from skipsearch.errors import UserError
from skipsearch.methods.skip_tuning.schedules import LinearSkip, TimeWindowSkip
from skipsearch.models import family_of, load_model, model_info
from skipsearch.models import edm_nvlabs
from skipsearch.models.edm_nvlabs import NVlabsDenoiser, NVlabsFamily, NVlabsModel

REASON = "NVlabs EDM code not available (set SKIPSEARCH_EDM_CODE to a checkout of NVlabs/edm)"
REPO = Path(__file__).resolve().parents[1]


def edm_code() -> Path | None:
    """The NVlabs/edm checkout named by SKIPSEARCH_EDM_CODE, if it has dnnlib, torch_utils and training."""
    folder = os.environ.get("SKIPSEARCH_EDM_CODE")
    if not folder:
        return None
    path = Path(folder).expanduser().resolve()
    return path if all((path / name).is_dir() for name in ("dnnlib", "torch_utils", "training")) else None


needs_edm = pytest.mark.skipif(edm_code() is None, reason=REASON)


def nvlabs_networks():
    """NVlabs' ``training.networks``, imported from the checkout (skipped without one)."""
    code = edm_code()
    if code is None:
        pytest.skip(REASON)
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))
    return importlib.import_module("training.networks")


# Tiny configurations of NVlabs' architectures at 16x16, one channel.
TINY: dict[str, dict] = {
    "songunet": dict(precond="EDMPrecond", model_type="SongUNet", model_channels=16, channel_mult=[1, 2],
                     num_blocks=1, attn_resolutions=[8], dropout=0),
    "dhariwal": dict(precond="EDMPrecond", model_type="DhariwalUNet", model_channels=32, channel_mult=[1, 2],
                     num_blocks=1, attn_resolutions=[8], dropout=0),
    # NCSN++: residual encoder and skip decoder, whose *_aux_* modules sit between the blocks
    "ncsnpp": dict(precond="VEPrecond", model_type="SongUNet", model_channels=16, channel_mult=[1, 2, 2],
                   num_blocks=1, attn_resolutions=[8], dropout=0, embedding_type="fourier", channel_mult_noise=2,
                   encoder_type="residual", decoder_type="skip", resample_filter=[1, 3, 3, 1]),
    "vp": dict(precond="VPPrecond", model_type="SongUNet", model_channels=16, channel_mult=[1, 2], num_blocks=1,
               attn_resolutions=[8], dropout=0),
    "iddpm": dict(precond="iDDPMPrecond", model_type="DhariwalUNet", model_channels=32, channel_mult=[1, 2],
                  num_blocks=1, attn_resolutions=[8], dropout=0),
}


def tiny_network(kind: str, label_dim: int = 0, seed: int = 0) -> nn.Module:
    """A tiny NVlabs precond + UNet with random weights everywhere (NVlabs initialises the last layers to zero,
    which would make the output blind to the skips)."""
    networks = nvlabs_networks()
    config = dict(TINY[kind])
    precond = getattr(networks, config.pop("precond"))
    torch.manual_seed(seed)
    net = precond(img_resolution=16, img_channels=1, label_dim=label_dim, **config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return net.eval().requires_grad_(False)


def save_snapshot(net: nn.Module, path: Path) -> Path:
    """Pickled as NVlabs' training loop saves a snapshot."""
    with open(path, "wb") as f:
        pickle.dump({"ema": net, "loss_fn": None, "augment_pipe": None, "dataset_kwargs": {"resolution": 16}}, f)
    return path


def edm_section(path: Path, **extra) -> NVlabsModel:
    return NVlabsModel(path=str(path), code=str(edm_code()), trust_pickles=True, **extra)


def load_tiny(tmp_path: Path, kind: str, label_dim: int = 0):
    return load_model(edm_section(save_snapshot(tiny_network(kind, label_dim), tmp_path / f"{kind}.pkl")))


def encoder_tensors(unet: nn.Module, run: Callable[[], object]) -> list[torch.Tensor]:
    """The tensors the encoder pushes for the decoder, in order, found by hooking its modules: each block's
    output, which an NCSN++ aux_skip / aux_residual module then replaces as NVlabs' forward does."""
    pushed: list[torch.Tensor] = []

    def hook(key: str):
        def grab(module, args, out):
            if "aux_skip" in key:
                pushed[-1] = pushed[-1] + out
            elif "aux_residual" in key:
                pushed[-1] = (pushed[-1] + out) / math.sqrt(2)
            elif "aux" not in key:
                pushed.append(out.clone())
        return grab

    handles = [m.register_forward_hook(hook(k)) for k, m in unet.enc.items()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return pushed


def contract_parts(tmp_path: Path, kind: str):
    """For tests/test_families.py: (denoiser, one evaluation at sigma, each skip's resolution in encoder order)."""
    loaded = load_tiny(tmp_path, kind)
    d = loaded.denoiser
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))

    def call(s: float) -> torch.Tensor:
        return d(x, torch.full((2,), s))

    def expected() -> list[int]:
        return [t.shape[-1] for t in encoder_tensors(d.net.model, lambda: call(1.0))]

    return d, call, expected


class Payload:
    """A pickle payload: unpickling it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def malicious(tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps({"ema": Payload(marker)}))
    return path


def fake_checkout(folder: Path) -> Path:
    """A folder with empty dnnlib and torch_utils packages (enough for the file checks, nothing more)."""
    for name in ("dnnlib", "torch_utils"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text("")
    return folder


# ---- without NVlabs' code -------------------------------------------------------------------------------


def test_an_untrusted_pickle_is_never_opened(tmp_path):
    marker = tmp_path / "payload-ran"
    section = NVlabsModel(path=str(malicious(tmp_path, marker)), code=str(fake_checkout(tmp_path / "edm")))
    family = NVlabsFamily()
    for attempt in (lambda: load_model(section), lambda: model_info(section), lambda: family.lookup(section)):
        with pytest.raises(UserError, match="a pickle runs code when loaded; set model.trust_pickles: true if you "
                                            "trust it"):
            attempt()
    assert not marker.exists()
    live = tmp_path / "control"  # the payload is live: unpickling it does create its marker
    pickle.loads(pickle.dumps(Payload(live))).close()
    assert live.exists()


def test_a_checkout_without_dnnlib_is_named_before_unpickling(tmp_path):
    marker = tmp_path / "payload-ran"
    (tmp_path / "not-edm").mkdir()
    section = NVlabsModel(path=str(malicious(tmp_path, marker)), code=str(tmp_path / "not-edm"), trust_pickles=True)
    with pytest.raises(UserError, match=r"model\.code: .*not-edm has no dnnlib or torch_utils; model\.code must be "
                                        r"a checkout of NVlabs/edm"):
        load_model(section)
    missing = section.model_copy(update={"code": str(tmp_path / "nowhere")})
    with pytest.raises(UserError, match="model.code: .* is not a folder"):
        model_info(missing)
    assert not marker.exists()


def test_a_module_missing_while_unpickling_names_model_code(tmp_path):
    """The pickle imports dnnlib.util, which the (fake) checkout lacks; in a fresh process, so no dnnlib that
    another test imported is found instead."""
    code = fake_checkout(tmp_path / "edm")
    path = tmp_path / "net.pkl"
    path.write_bytes(b"(dp0\nVema\np1\ncdnnlib.util\nEasyDict\np2\n)Rp3\ns.")  # {'ema': dnnlib.util.EasyDict()}
    code_needing = fake_checkout(tmp_path / "edm-needing")  # its dnnlib imports a package not installed
    (code_needing / "dnnlib" / "__init__.py").write_text("import not_installed_anywhere_xyz\n")
    script = textwrap.dedent(f"""
        import sys
        from skipsearch.errors import UserError
        from skipsearch.models import load_model
        from skipsearch.models.edm_nvlabs import NVlabsModel
        for code in ({str(code)!r}, {str(code_needing)!r}):
            try:
                load_model(NVlabsModel(path={str(path)!r}, code=code, trust_pickles=True))
            except UserError as err:
                print(err)
            for name in [m for m in sys.modules if m.split(".")[0] == "dnnlib"]:
                del sys.modules[name]
        print("on path:", any({str(tmp_path)!r} in p for p in sys.path))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()[:2]
    assert "model.code: unpickling" in first and "'dnnlib.util'" in first
    assert "must be a checkout of NVlabs/edm" in first
    assert "imports 'not_installed_anywhere_xyz', which is not installed in this Python environment" in second
    assert "on path: False" in out.stdout  # model.code is on sys.path only while unpickling


@pytest.mark.parametrize("content", [b"not a pickle at all", pickle.dumps([1, 2]), pickle.dumps({"ema": 3}),
                                     pickle.dumps({"ema": nn.Linear(2, 2)})],
                         ids=["garbage", "a-list", "ema-not-a-module", "ema-not-nvlabs"])
def test_what_is_not_an_nvlabs_network_is_refused(tmp_path, content):
    path = tmp_path / "net.pkl"
    path.write_bytes(content)
    section = NVlabsModel(path=str(path), code=str(fake_checkout(tmp_path / "edm")), trust_pickles=True)
    with pytest.raises(UserError, match="model.path: .*net.pkl"):
        load_model(section)


def test_the_section_resolves_relative_paths(tmp_path):
    section = NVlabsModel(path="nets/edm-cifar10-32x32-uncond-vp.pkl", code="../edm", name=None)
    anchored = section.anchored(tmp_path)
    assert anchored.path == str(tmp_path / "nets/edm-cifar10-32x32-uncond-vp.pkl")
    assert anchored.code == str(tmp_path.parent / "edm")  # normalised: skipsearch.paths
    assert anchored.model_id == "edm-cifar10-32x32-uncond-vp"
    assert NVlabsModel(path="a.pkl", code="c", name="mine").model_id == "mine"
    with pytest.raises(UserError, match="model.path: .* not found"):
        NVlabsFamily().lookup(anchored)


# ---- with NVlabs' code ----------------------------------------------------------------------------------

# (index, level, consuming module, channel slice) of the tiny networks, worked out by hand from NVlabs' code:
# encoder outputs 16x16_conv, 16x16_block0, 8x8_down, 8x8_block0 are popped innermost first by the decoder's
# blocks that concatenate (the *_in0/_in1/_up blocks take none).
TABLES = {
    "songunet": [(0, 0, "model.dec.16x16_block1", 16, 32), (1, 0, "model.dec.16x16_block0", 32, 48),
                 (2, 1, "model.dec.8x8_block1", 32, 48), (3, 1, "model.dec.8x8_block0", 32, 64)],
    "dhariwal": [(0, 0, "model.dec.16x16_block1", 32, 64), (1, 0, "model.dec.16x16_block0", 64, 96),
                 (2, 1, "model.dec.8x8_block1", 64, 96), (3, 1, "model.dec.8x8_block0", 64, 128)],
}


@needs_edm
@pytest.mark.parametrize("kind", list(TABLES))
def test_the_skip_table_of_the_tiny_networks(tmp_path, kind):
    loaded = load_tiny(tmp_path, kind)
    points = family_of(loaded.denoiser).skip_points(loaded.denoiser)
    assert [(p.index, p.level, p.path, p.start, p.stop) for p in points] == TABLES[kind]
    assert [(s.index, s.level, s.path) for s in loaded.info.skips] == [t[:3] for t in TABLES[kind]]
    modules = dict(loaded.denoiser.net.named_modules())
    assert all(modules[p.path] is p.module for p in points)
    assert loaded.info.family == "edm" and loaded.info.shape == (1, 16, 16) and loaded.info.conditions == ()


@needs_edm
@pytest.mark.parametrize("kind", list(TINY))
@torch.no_grad()
def test_each_slice_is_the_tensor_the_encoder_made(tmp_path, kind):
    """In a forward pass, channels [start, stop) of each consuming block's input are exactly encoder output
    ``index``."""
    loaded = load_tiny(tmp_path, kind)
    d, unet = loaded.denoiser, loaded.denoiser.net.model
    points = family_of(d).skip_points(d)
    inputs: dict[int, torch.Tensor] = {}
    handles = [p.module.register_forward_pre_hook(lambda m, a, i=p.index: inputs.__setitem__(i, a[0].clone()))
               for p in points]
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    try:
        pushed = encoder_tensors(unet, lambda: d(x, 2.0))
    finally:
        for h in handles:
            h.remove()
    assert len(points) == len(pushed) == len(inputs)
    for p in points:
        assert p.stop - p.start == pushed[p.index].shape[1]
        assert torch.allclose(inputs[p.index][:, p.start:p.stop], pushed[p.index], rtol=0, atol=1e-6)


@needs_edm
@pytest.mark.parametrize("kind", ["songunet", "dhariwal", "ncsnpp", "vp", "iddpm"])
def test_sampling_gives_uint8_images_and_rho_changes_them(tmp_path, kind):
    loaded = load_tiny(tmp_path, kind)
    sampler = SamplerConfig("heun", 3)
    images = generate(loaded.denoiser, range(4), (1, 16, 16), sampler)
    assert images.dtype == torch.uint8 and images.shape == (4, 1, 16, 16)
    assert torch.equal(generate(loaded.denoiser, range(4), (1, 16, 16), sampler), images)
    with apply(loaded.denoiser, LinearSkip(rho_top=0.5, rho_bottom=1.5)):
        scaled = generate(loaded.denoiser, range(4), (1, 16, 16), sampler)
    assert not torch.equal(scaled, images)


@needs_edm
@torch.no_grad()
def test_a_conditional_network_takes_label_indices(tmp_path):
    loaded = load_tiny(tmp_path, "songunet", label_dim=3)
    d = loaded.denoiser
    assert loaded.info.conditions == (0, 1, 2) and loaded.info.num_classes == 0
    x, sigma = torch.randn(2, 1, 16, 16), torch.tensor([1.0, 3.0])
    one_hot = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    by_index = d(x, sigma, torch.tensor([0, 2]))
    assert torch.equal(by_index, d.net(x, sigma, one_hot))
    assert torch.equal(d(x, sigma, one_hot), by_index)
    assert not torch.allclose(by_index, d(x, sigma, torch.tensor([1, 1])))
    images = generate(d, range(4), (1, 16, 16), SamplerConfig("heun", 3), labels=[0, 1, 2, 0])
    assert images.dtype == torch.uint8 and images.shape == (4, 1, 16, 16)
    with pytest.raises(UserError, match="class labels must be 0..2"):
        d(x, sigma, torch.tensor([0, 3]))
    with pytest.raises(UserError, match="guidance_scale 1"):
        generate(d, range(2), (1, 16, 16), SamplerConfig("heun", 3, guidance_scale=2.0), labels=[0, 1])
    unconditional = load_tiny(tmp_path, "dhariwal").denoiser
    with pytest.raises(UserError, match="unconditional"):
        unconditional(x, sigma, torch.tensor([0, 1]))


@needs_edm
@torch.no_grad()
def test_the_users_own_precond_and_bare_unet(tmp_path):
    """What pickle.load(f)['ema'] gives a user is recognised as it is; its bare UNet takes coefficients that do
    not depend on sigma, and a time window on it is refused with the way out."""
    net = tiny_network("songunet")
    assert isinstance(family_of(net), NVlabsFamily) and isinstance(family_of(net.model), NVlabsFamily)
    x, sigma = torch.randn(2, 1, 16, 16), torch.full((2,), 3.0)
    plain, outside = net(x, sigma), net(x, torch.full((2,), 0.5))
    with apply(net, TimeWindowSkip(rho_top=0.5, rho_bottom=0.5, sigma_lo=2.0, sigma_hi=5.0)):
        assert torch.equal(net(x, torch.full((2,), 0.5)), outside)
        assert not torch.allclose(net(x, sigma), plain)
    with apply(net.model, LinearSkip(rho_top=0.5, rho_bottom=0.5)):
        assert not torch.allclose(net(x, sigma), plain)
    with apply(net.model, TimeWindowSkip(rho_top=0.5, rho_bottom=0.5, sigma_lo=2.0, sigma_hi=5.0)):
        with pytest.raises(UserError, match=r"pickle\['ema'\], not to its \.model"):
            net(x, sigma)
    assert torch.equal(net(x, sigma), plain)
    assert all(not m._forward_pre_hooks for m in net.modules())


@needs_edm
def test_info_unpickles_a_file_once(tmp_path, monkeypatch):
    calls = []
    real = edm_nvlabs._unpickle
    monkeypatch.setattr(edm_nvlabs, "_unpickle", lambda spec: calls.append(1) or real(spec))
    section = edm_section(save_snapshot(tiny_network("dhariwal"), tmp_path / "a.pkl"))
    first = model_info(section)
    assert model_info(section) == first and len(calls) == 1
    loaded = load_model(section)
    assert len(calls) == 2 and loaded.info == first  # a load is a fresh copy, its info read from it
    other = edm_section(save_snapshot(tiny_network("songunet"), tmp_path / "b.pkl"))
    load_model(other)
    assert model_info(other).skips == tuple(load_model(other).info.skips) and len(calls) == 4
    assert first.weights_hash != model_info(other).weights_hash


@needs_edm
def test_a_fresh_process_rebuilds_the_network_from_the_pickle(tmp_path):
    """Unpickled where NVlabs' classes were never imported: the pickle's own source is run, importing dnnlib
    and torch_utils from model.code, which is off sys.path again afterwards."""
    path = save_snapshot(tiny_network("ncsnpp"), tmp_path / "ncsnpp.pkl")
    script = textwrap.dedent(f"""
        import sys, torch
        from skipsearch.models import family_of, load_model
        from skipsearch.models.edm_nvlabs import NVlabsModel
        loaded = load_model(NVlabsModel(path={str(path)!r}, code={str(edm_code())!r}, trust_pickles=True))
        d = loaded.denoiser
        out = d(torch.randn(2, 1, 16, 16), 1.5)
        points = family_of(d).skip_points(d)
        print("finite", bool(torch.isfinite(out).all()), "skips", len(points), loaded.info.n_levels)
        print("classes", type(d.net).__name__, type(d.net).__module__.startswith("_imported_module_"))
        print("training imported", "training.networks" in sys.modules)
        print("on path", {str(edm_code())!r} in sys.path)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "finite True skips 6 3" in out.stdout
    assert "classes VEPrecond True" in out.stdout
    assert "training imported False" in out.stdout and "on path False" in out.stdout


@needs_edm
def test_a_loaded_model_is_a_fresh_copy(tmp_path):
    section = edm_section(save_snapshot(tiny_network("songunet"), tmp_path / "s.pkl"))
    a, b = load_model(section), load_model(section)
    assert isinstance(a.denoiser, NVlabsDenoiser) and a.denoiser.net is not b.denoiser.net
    assert not a.denoiser.training and not any(p.requires_grad for p in a.denoiser.parameters())
    with torch.no_grad():
        next(a.denoiser.parameters()).add_(1.0)
    assert not torch.equal(next(a.denoiser.parameters()), next(b.denoiser.parameters()))
