"""The network evaluations a benchmark repeat spent, counted where the models see them: a check on the
samples x NFE arithmetic that ``bench --versus-plain`` compares both sides by."""

from __future__ import annotations

import torch

from skipsearch.diffusion.family_sampling import network_of
from skipsearch.evaluate import Evaluator, evaluator_for
from skipsearch.methods.sampled import eval_task
from skipsearch.search.second_opinion import opinion_spec
from skipsearch.spec import Spec


class NetworkCounter:
    """Samples passed through the networks' forwards, summed over calls and copies: network evaluations as the
    models see them, to check the samples x NFE arithmetic of both sides."""

    def __init__(self, *models: torch.nn.Module):
        self.count = 0
        distinct = {id(m): m for m in models}.values()  # one copy named twice is still counted once
        self._handles = [m.register_forward_pre_hook(self._hook, with_kwargs=True) for m in distinct]

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(x, torch.Tensor):
            self.count += int(x.shape[0])

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def sampling_copies(spec: Spec, ev: Evaluator, second: str | None) -> list[torch.nn.Module]:
    """Every copy of the model a repeat samples through, each once: the objective's evaluator's, and the second
    opinion's. The cached evaluators share one copy per device (``evaluate.loaded_on``), but a copy the opinion
    did not share would pass its samples unseen (a warning of exactly their samples x NFE, before the copies were
    shared), and one hooked twice would count them twice. Each copy is counted at its network (``network_of``):
    diffusers' schedulers call the UNet, not the denoiser wrapper."""
    copies = [network_of(ev.loaded.denoiser)]
    if second is not None:
        opinion = opinion_spec(spec, second, 0)
        task = eval_task(opinion, n=opinion.confirm.n, seed_start=opinion.confirm.seed, heldout=True)
        copies.append(network_of(evaluator_for(task).loaded.denoiser))
    return list({id(c): c for c in copies}.values())
