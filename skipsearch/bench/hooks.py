"""Skip-Tuning's hooks per network call against the bare model, for each model family."""

from __future__ import annotations

import contextlib
import statistics
from pathlib import Path

import torch

from skipsearch.bench.clock import device_syncs, seconds
from skipsearch.bench.measurements import Record
from skipsearch.evaluate import resolve_device


# NVlabs EDM's CIFAR-10 DDPM++ (the configuration whose re-concatenating pre-hook cost +7.4% in fp16) and an
# ImageNet-64-sized ADM, architecture only (random weights): built with NVlabs' own classes from the user's checkout.
EDM_NETWORKS = {
    "DDPM++ cifar10 32x32 (SongUNet)": dict(img_resolution=32, model_type="SongUNet", embedding_type="positional",
                                            encoder_type="standard", decoder_type="standard", channel_mult_noise=1,
                                            resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2]),
    "ADM imagenet 64x64 (DhariwalUNet)": dict(img_resolution=64, model_type="DhariwalUNet", model_channels=192,
                                              channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[32, 16, 8]),
}


def _edm_cases(code: Path, device: torch.device) -> list[tuple[str, torch.nn.Module, tuple[int, ...], int]]:
    """NVlabs EDM networks from the checkout at ``code``; fp16 too on a GPU (EDM samples in fp16 there)."""
    import importlib

    from skipsearch.models.edm_nvlabs import NVlabsDenoiser, _on_path

    with _on_path(code):
        networks = importlib.import_module("training.networks")
    cases = []
    for label, kwargs in EDM_NETWORKS.items():
        for fp16 in (False, True) if device.type == "cuda" else (False,):
            torch.manual_seed(0)
            precond = networks.EDMPrecond(img_channels=3, label_dim=0, use_fp16=fp16, **kwargs).eval()
            shape = (3, kwargs["img_resolution"], kwargs["img_resolution"])
            cases.append((f"edm       {label}{', fp16' if fp16 else ''}", NVlabsDenoiser(precond), shape,
                          64 if device.type == "cuda" else 2))
    return cases


def _hook_cases(device: torch.device, batch: int) -> list[tuple[str, torch.nn.Module, tuple[int, ...], int]]:
    """(label, denoiser, one sample's shape, batch) for each family that can be built here. The EDM cases need
    NVlabs' code (``$SKIPSEARCH_EDM_CODE``, a checkout of NVlabs/edm); on a CPU they run at batch 2."""
    import os

    from skipsearch.models import load_model
    from skipsearch.models.diffusers_unet import DiffusersModel
    from skipsearch.models.hooked import HookedModel, declare

    cases = []
    for name in ("embedded-digits", "fashion-mnist-unet"):
        loaded = load_model(name)
        cases.append((f"embedded  {name}", loaded.denoiser, loaded.info.shape, batch))
    hooked = load_model("embedded-digits").denoiser
    declare(hooked, HookedModel(name="embedded-as-hooked", channels=1, resolution=16,
                                skips=tuple({"module": f"net.dec.{2 - i}", "level": i, "argument": 1}
                                            for i in range(3))))
    cases.append(("hooked    embedded-digits, skips named", hooked, (1, 16, 16), batch))
    demo = Path(__file__).resolve().parents[2] / "studies" / "models" / "digits-ddpm"
    if (demo / "model_index.json").is_file():
        loaded = load_model(DiffusersModel(path=str(demo)))
        cases.append(("diffusers digits-ddpm (UNet2DModel)", loaded.denoiser, loaded.info.shape, batch))
    else:
        print(f"  (diffusers family skipped: the shipped model {demo} is not there)")
    code = os.environ.get("SKIPSEARCH_EDM_CODE")
    if code and (Path(code) / "training" / "networks.py").is_file():
        cases += _edm_cases(Path(code), device)
    else:
        print("  (edm family skipped: set SKIPSEARCH_EDM_CODE to a checkout of NVlabs/edm to time its networks)")
    return [(label, model.to(device), shape, b) for label, model, shape, b in cases]


def bench_hooks(device: str = "auto", batch: int = 64, block_s: float = 0.25, rounds: int = 9) -> list[Record]:
    """The cost of Skip-Tuning's hooks per network call against the bare model, per family: ``rounds`` rounds
    of bare, constant-profile and time-window blocks (each about ``block_s`` seconds of calls), in an order
    that rotates every round, medians compared. On a GPU, also the host-device synchronisations in one call."""
    from skipsearch.exchange.apply_file import apply
    from skipsearch.methods.skip_tuning.schedules import LinearSkip, TimeWindowSkip

    dev = torch.device(resolve_device(device))
    arms = {"bare": None, "linear": LinearSkip(rho_top=0.8, rho_bottom=1.2),
            "time_window": TimeWindowSkip(rho_top=0.8, rho_bottom=1.2, sigma_lo=0.1, sigma_hi=10.0)}

    def timed(model, x, sigma, calls: int) -> float:
        return seconds(lambda: [model(x, sigma) for _ in range(calls)], dev) / calls

    def arm(model, key: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if arms[key] is None else apply(model, arms[key])

    rows = []
    print(f"hook benchmark: device {dev}, {rounds} rounds of bare / linear / time-window blocks of about "
          f"{block_s:g} s each, order rotating (medians); syncs: host waits for the GPU in one steady-state call")
    print(f"  {'family / model':48s} {'batch':>5s} {'bare ms':>8s} {'linear':>8s} {'window':>8s} {'syncs':>7s}"
          f"   target < 2%")
    with torch.no_grad():
        for label, model, shape, size in _hook_cases(dev, batch):
            x = torch.randn(size, *shape, generator=torch.Generator().manual_seed(0)).to(dev)
            sigma = torch.full((size,), 1.0, device=dev)
            for key in arms:  # warm-up, each arm
                with arm(model, key):
                    one = timed(model, x, sigma, 2)
            calls = max(2, min(500, round(block_s / max(one, 1e-6))))
            times: dict[str, list[float]] = {key: [] for key in arms}
            keys = list(arms)
            for r in range(rounds):
                for key in keys[r % 3:] + keys[: r % 3]:
                    with arm(model, key):
                        times[key].append(timed(model, x, sigma, calls))
            syncs = []
            for key in arms:
                with arm(model, key):
                    model(x, sigma)  # the first call under new coefficients makes their device tables
                    syncs.append(device_syncs(lambda: model(x, sigma)))  # noqa: B023 (called at once)
            bare = statistics.median(times["bare"])
            costs = {k: statistics.median(times[k]) / bare - 1 for k in arms if k != "bare"}
            met = max(costs.values()) < 0.02 and syncs[1:] == syncs[:1] * 2
            print(f"  {label:48s} {size:5d} {bare * 1e3:8.2f} {costs['linear']:+8.2%} "
                  f"{costs['time_window']:+8.2%} {'/'.join(map(str, syncs)):>7s}   {'met' if met else 'MISSED'}",
                  flush=True)
            name = " ".join(label.split())
            rows += [Record.judged(f"hooks: {name}, {k} (cost per call)", v, "< 0.02", str(dev))
                     for k, v in costs.items()]
            rows.append(Record.judged(f"hooks: {name}, extra host-device syncs per call",
                                      max(syncs) - syncs[0], "<= 0", str(dev)))
    return rows
