"""Benchmarks measured side by side in one run, printed as ratios so a noisy machine does not mislead.

A method may bring its own (``Method.bench``); these two time any method's trials.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from skipsearch.evaluate import evaluator, resolve_device
from skipsearch.search import driver as _study
from skipsearch.search.context import StudyContext
from skipsearch.spec import load_spec


def bench_trial(spec_path: Path, n_trials: int = 3) -> dict:
    """Wall time of whole trials (ask, evaluate, record, tell) against their network + feature time."""
    spec = load_spec(spec_path)
    with tempfile.TemporaryDirectory() as tmp:
        spec = spec.model_copy(update={"name": "bench", "storage": f"sqlite:///{Path(tmp) / 'bench.db'}"})
        ctx = _study.open_study(spec, spec.storage, echo=lambda line: None)
        try:
            # warm-up: model, extractor and reference statistics load once per worker
            _study.run_trial(ctx, _study.reserve(ctx, n_trials + 1))
            rows = []
            for _ in range(n_trials):
                start = time.perf_counter()
                done = _study.run_trial(ctx, _study.reserve(ctx, n_trials + 1))
                wall = time.perf_counter() - start
                if done.rung is None:
                    raise RuntimeError(f"benchmark trial failed: {done.reason}")
                timings = done.rung.timings
                rows.append((wall, timings.get("network", 0.0), timings.get("features", 0.0)))
        finally:
            ctx.close()
    wall, net, feat = (statistics.median(col) for col in zip(*rows))
    other = wall - net - feat
    print(f"trial benchmark: {spec.model.model_id}, {spec.sampler.name} {spec.sampler.steps} steps "
          f"({spec.sampler.config().nfe} NFE), N={spec.metric.n}, device {resolve_device(spec.device)}, "
          f"median of {n_trials} trials")
    print(f"  trial wall time            {wall:8.3f} s")
    print(f"  network forward passes     {net:8.3f} s")
    print(f"  feature extraction         {feat:8.3f} s")
    print(f"  everything else            {other:8.3f} s  (Optuna, database, FID/KID, bookkeeping)")
    print(f"  (network + features)/wall  {(net + feat) / wall:8.3f}")
    verdict = "met" if other / wall < 0.10 else "MISSED"
    print(f"  everything else / wall     {other / wall:8.3f}  target < 0.10: {verdict}")
    return {"wall_s": wall, "network_s": net, "features_s": feat, "other_fraction": other / wall}


def bench_ray(spec_path: Path, m: int = 8) -> dict[str, float]:
    """The same M trials in-process and on a local Ray with 1 and 2 workers (1 CPU, so 1 thread, each)."""
    import ray

    from skipsearch.search.ray_tune import Placement, search_on_ray

    spec = load_spec(spec_path)
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"trials": m})})
    quiet = lambda line: None  # noqa: E731
    walls: dict[str, float] = {}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        def study(name: str) -> StudyContext:
            return _study.open_study(spec.model_copy(update={"name": name}), f"sqlite:///{Path(tmp) / name}.db",
                                     echo=quiet)

        for n_threads in (1, threads):
            torch.set_num_threads(n_threads)
            evaluator.cache_clear()  # each run loads the model once, as each Ray worker does
            ctx, start = study(f"inproc{n_threads}"), time.perf_counter()
            _study.search(ctx, m)
            walls[f"in-process, {n_threads} thread(s)"] = time.perf_counter() - start
            ctx.close()
        torch.set_num_threads(threads)
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray_start = time.perf_counter() - start
        try:
            for workers in (1, 2):
                ctx, start = study(f"ray{workers}"), time.perf_counter()
                search_on_ray(ctx, m, Placement(workers=workers, cpus_per_trial=1.0))
                walls[f"Ray, {workers} worker(s) x 1 CPU"] = time.perf_counter() - start
                ctx.close()
        finally:
            ray.shutdown()
    one, inproc1 = walls["Ray, 1 worker(s) x 1 CPU"], walls["in-process, 1 thread(s)"]
    print(f"Ray benchmark: {m} trials of {spec.name} ({spec.sampler.name} {spec.sampler.steps} steps, "
          f"N={spec.metric.n}) on this machine; Ray's own start ({ray_start:.1f} s) is not counted")
    for name, wall in walls.items():
        print(f"  {name:32s} {wall:8.1f} s")
    print(f"  Ray 1 worker / in-process (1 thread each)  {one / inproc1:6.3f}   target <= 1.15")
    print(f"  Ray 1 worker / 2 workers (speed-up)         {one / walls['Ray, 2 worker(s) x 1 CPU']:6.3f}"
          f"   target >= 1.6")
    return walls


HEAVY = ("optuna", "ray", "sqlalchemy", "typer", "pandas")


def bench_imports(repeats: int = 5) -> dict[str, float]:
    """What a user's sampling code pays for ``skipsearch.apply``: its import time against torch's alone, each
    in a fresh interpreter, interleaved (medians), and which of the driver's heavy libraries it loads."""
    import json
    import subprocess
    import sys

    report = f"import json, sys; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    codes = {"torch": "import torch", "skipsearch.apply": "import skipsearch; skipsearch.apply"}
    walls: dict[str, list[float]] = {name: [] for name in codes}
    outputs: dict[str, str] = {}
    for _ in range(repeats):
        for name, code in codes.items():
            start = time.perf_counter()
            outputs[name] = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], capture_output=True,
                                           text=True, check=True).stdout
            walls[name].append(time.perf_counter() - start)
    loaded = json.loads(outputs["skipsearch.apply"].strip().splitlines()[-1])
    torch_s, apply_s = (statistics.median(walls[name]) for name in codes)
    print(f"import benchmark: fresh interpreters, median of {repeats} interleaved runs")
    print(f"  python -c 'import torch'                          {torch_s:6.2f} s")
    print(f"  python -c 'import skipsearch; skipsearch.apply'   {apply_s:6.2f} s")
    verdict = "met" if apply_s / torch_s <= 1.5 else "MISSED"
    print(f"  skipsearch.apply / torch                          {apply_s / torch_s:6.2f}   target <= 1.5: {verdict}")
    print(f"  heavy libraries loaded by skipsearch.apply: {', '.join(loaded) or 'none'} (of {', '.join(HEAVY)})")
    return {"torch_s": torch_s, "apply_s": apply_s, "ratio": apply_s / torch_s}


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
    demo = Path(__file__).resolve().parents[1] / "studies" / "models" / "digits-ddpm"
    if (demo / "model_index.json").is_file():
        loaded = load_model(DiffusersModel(path=str(demo)))
        cases.append(("diffusers digits-ddpm (UNet2DModel)", loaded.denoiser, loaded.info.shape, batch))
    code = os.environ.get("SKIPSEARCH_EDM_CODE")
    if code and (Path(code) / "training" / "networks.py").is_file():
        cases += _edm_cases(Path(code), device)
    else:
        print("  (edm family skipped: set SKIPSEARCH_EDM_CODE to a checkout of NVlabs/edm to time its networks)")
    return [(label, model.to(device), shape, b) for label, model, shape, b in cases]


def device_syncs(call: Callable[[], object]) -> int:
    """How many times ``call`` makes the host wait for the GPU (torch's sync debug mode); 0 off CUDA."""
    if not torch.cuda.is_available():
        return 0
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def bench_hooks(device: str = "auto", batch: int = 64, block_s: float = 0.25, rounds: int = 9) -> list[dict]:
    """The cost of Skip-Tuning's hooks per network call against the bare model, per family: ``rounds`` rounds
    of bare, constant-profile and time-window blocks (each about ``block_s`` seconds of calls), in an order
    that rotates every round, medians compared. On a GPU, also the host-device synchronisations in one call."""
    from skipsearch import apply
    from skipsearch.methods.skip_tuning.coefficients import LinearSkip, TimeWindowSkip

    dev = torch.device(resolve_device(device))
    arms = {"bare": None, "linear": LinearSkip(rho_top=0.8, rho_bottom=1.2),
            "time_window": TimeWindowSkip(rho_top=0.8, rho_bottom=1.2, sigma_lo=0.1, sigma_hi=10.0)}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(model, x, sigma, calls: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            model(x, sigma)
        sync()
        return (time.perf_counter() - start) / calls

    def arm(model, key: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if arms[key] is None else apply(model, arms[key])

    rows = []
    print(f"hook benchmark: device {dev}, {rounds} rounds of bare / linear / time-window blocks of about "
          f"{block_s:g} s each, order rotating (medians); syncs: host waits for the GPU in one call")
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
                    syncs.append(device_syncs(lambda: model(x, sigma)))  # noqa: B023 (called at once)
            bare = statistics.median(times["bare"])
            costs = {k: statistics.median(times[k]) / bare - 1 for k in arms if k != "bare"}
            met = max(costs.values()) < 0.02 and syncs[1:] == syncs[:1] * 2
            print(f"  {label:48s} {size:5d} {bare * 1e3:8.2f} {costs['linear']:+8.2%} "
                  f"{costs['time_window']:+8.2%} {'/'.join(map(str, syncs)):>7s}   {'met' if met else 'MISSED'}",
                  flush=True)
            rows.append({"model": label, "batch": size, "bare_ms": bare * 1e3, "calls": calls,
                         "syncs": dict(zip(arms, syncs)), **{f"{k}_cost": v for k, v in costs.items()}})
    return rows
