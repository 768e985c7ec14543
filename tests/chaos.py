"""A fault injector for the tests: the embedded digits model, made to misbehave.

``install()`` registers two models beside the shipped ones:

- ``chaos-digits`` draws a behaviour each time sampling starts (the first network call, at sigma_max):
  work normally, raise a CUDA out-of-memory error, return NaN, hang for ``HANG_S`` seconds (past the spec's
  trial timeout), or, on a Ray worker, kill its own process with SIGKILL (Ray retries the trial);
- ``chaos-bug-digits`` raises a KeyError on every call: a bug, which must stop the run, not become a FAIL.

Ray workers get it through ``runtime_env={"worker_process_setup_hook": "chaos.install_in_worker"}``; a
driver through ``python tests/chaos.py run SPEC ...`` (the skipsearch CLI with the models installed).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

HANG_S = 4.0
MODES = {"ok": 0.7, "oom": 0.07, "nan": 0.07, "hang": 0.08, "kill": 0.08}  # per sampling run (a rung)
FORCED: list[str] = []  # tests in this process can force the next modes, in order
ENABLED = {"chaos": True, "kill": False}


def _next_mode() -> str:
    if FORCED:
        return FORCED.pop(0)
    if not ENABLED["chaos"]:
        return "ok"
    rng = random.Random(int.from_bytes(os.urandom(8), "little"))
    return rng.choices(list(MODES), weights=list(MODES.values()))[0]


def _chaos_model(bug: bool = False):
    from skipsearch.models import LoadedModel, load_model
    from skipsearch.diffusion.preconditioning import EDMPrecond

    class ChaosPrecond(EDMPrecond):
        mode = "ok"

        def forward(self, x, sigma, class_labels=None):
            if bug:
                raise KeyError("chaos: an injected bug")
            if float(torch.as_tensor(sigma).reshape(-1)[0]) >= 79.0:  # sampling starts: draw a behaviour
                self.mode = _next_mode()
            if self.mode == "oom":
                raise torch.cuda.OutOfMemoryError("chaos: CUDA out of memory (injected)")
            if self.mode == "hang":
                self.mode = "ok"
                time.sleep(HANG_S)
            if self.mode == "kill" and ENABLED["kill"]:
                os.kill(os.getpid(), signal.SIGKILL)
            out = super().forward(x, sigma, class_labels)
            return out * float("nan") if self.mode == "nan" else out

    def load() -> LoadedModel:
        base = load_model("embedded-digits")
        chaos = ChaosPrecond(base.denoiser.net, base.denoiser.sigma_data)
        return LoadedModel(chaos.eval().requires_grad_(False), base.info)

    return load


def section(name: str) -> dict:
    """The spec's model section for a chaos model: a user's own module (family hooked), the embedded UNet's
    three skips named by module."""
    skips = [{"module": f"net.dec.{2 - level}", "level": level, "argument": 1} for level in range(3)]
    return {"family": "hooked", "name": name, "channels": 1, "resolution": 16, "skips": skips}


def install() -> None:
    """The misbehaving models, handed to skipsearch as a user's own modules would be (``skipsearch.run(spec,
    model=net)`` does the same)."""
    from skipsearch.models.hooked import HookedModel, hand_over

    for name, bug in (("chaos-digits", False), ("chaos-bug-digits", True)):
        hand_over(_chaos_model(bug)().denoiser, HookedModel.model_validate(section(name)))


def install_in_worker() -> None:
    """Ray's worker setup hook: the models, with self-kills allowed (Ray retries a killed worker's trial)."""
    install()
    ENABLED["kill"] = True


def runtime_env() -> dict:
    return {"worker_process_setup_hook": "chaos.install_in_worker",
            "env_vars": {"PYTHONPATH": str(Path(__file__).parent)}}


def main() -> None:
    """The skipsearch CLI with the chaos models, joining a Ray cluster with the chaos workers' setup hook.
    The driver itself never misbehaves: its held-out confirmation runs the model undisturbed."""
    install()
    ENABLED["chaos"] = False
    if "--address" in sys.argv:
        import ray

        address = sys.argv[sys.argv.index("--address") + 1]
        ray.init(address=address, runtime_env=runtime_env(), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    from skipsearch.cli import main as cli

    sys.argv[0] = "skipsearch"
    cli()


if __name__ == "__main__":
    main()
