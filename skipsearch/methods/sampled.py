"""Evaluation tasks from a spec: what every method's trial and held-out evaluation score with."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence

from skipsearch.batch_layout import BatchLayout
from skipsearch.diffusion.trajectories import Sharing
from skipsearch.errors import TrialError
from skipsearch.evaluate import EvalTask, Evaluator
from skipsearch.methods.method import Coefficients, Fidelity, Removable
from skipsearch.results import HeldOut, Rung, Score
from skipsearch.rungs import alone
from skipsearch.spec import Spec

# A method's shared-trajectory plan for one evaluation (skipsearch.diffusion.trajectories), or None.
ShareFor = Callable[[Evaluator, EvalTask], Sharing | None]


RACE_JUDGES = "fid_debiased"  # what a raced confirmation judges (``search.racing``), in the objective's space


def eval_task(spec: Spec, *, n: int, seed_start: int, rungs: tuple[int, ...] = (), dataset: str | None = None,
              classes: tuple[int, ...] = (), heldout: bool = False) -> EvalTask:
    """The spec's model, sampler and metric at ``n`` samples from ``seed_start`` (against ``dataset``,
    by default the spec's reference). ``heldout``: a held-out evaluation, which in a raced confirmation also
    computes what the race judges."""
    m = spec.metric
    report = m.reported()
    judged = (RACE_JUDGES, m.extractor)
    if heldout and spec.confirm.race and judged not in report:
        report = (*report, judged)
    return EvalTask(model=spec.model, sampler=spec.sampler.config(), extractor=m.extractor,
                    dataset=dataset or m.reference, n=n, seed_start=seed_start, batch_size=m.batch_size,
                    kid_subset_size=m.kid_subset_size, device=spec.device, rungs=rungs, classes=classes,
                    report=report)


def sample_fidelity(spec: Spec) -> Fidelity:
    """Sample counts: ``metric.rungs`` below ``metric.n``, by one whole factor (successive halving); for the
    training-free methods, whose trials only sample."""
    m = spec.metric
    if not m.rungs:
        return Fidelity(unit="samples", top=m.n)
    return Fidelity(rule="halving", unit="samples", first=m.rungs[0], top=m.n, factor=m.reduction_factor)


def sampled_trials(apply: Callable[..., Removable], apply_batch: Callable[..., Removable] | None, spec: Spec,
                   coefficients: Sequence[Coefficients], progress: bool = False,
                   share_for: Sequence[ShareFor | None] | None = None,
                   ) -> Generator[dict[int, Rung | TrialError], set[int] | None, None]:
    """Training-free trials, K >= 1 sharing network batches (``Evaluator.trials``): the ladder of sample counts
    with their coefficients on the model. A lone trial's go on through ``apply`` (the hooks a user's model gets),
    several trials' at once through ``apply_batch``, each sample reading its trial from the layout. Send back,
    after each rung, the trials to stop; closing the generator takes the change off. ``share_for``: per trial,
    the steps it shares with the baseline (a batch starts where the earliest of its trials must)."""
    from skipsearch.evaluate import evaluator_for

    m = spec.metric
    task = eval_task(spec, n=m.n, seed_start=m.seed, rungs=tuple(m.rungs))
    ev = evaluator_for(task)
    layout = BatchLayout(alive=list(range(len(coefficients))))
    shares = None if share_for is None else [None if f is None else f(ev, task) for f in share_for]
    if len(coefficients) == 1:
        change = apply(ev.loaded.denoiser, coefficients[0], None)
    elif apply_batch is None:
        raise NotImplementedError("these trials do not share batches")
    else:
        change = apply_batch(ev.loaded.denoiser, coefficients, layout)
    with change:
        ladder = ev.trials(task, layout, progress, shares)
        try:
            stopped = None
            while True:
                results = ladder.send(stopped)
                stopped = yield {k: r if isinstance(r, TrialError) else sampled_rung(r, task)
                                 for k, r in results.items()}
        except StopIteration:
            return
        finally:
            ladder.close()


def sampled_ladder(apply: Callable[..., Removable], spec: Spec, coefficients: Coefficients,
                   progress: bool = False, share_for: ShareFor | None = None) -> Iterator[Rung]:
    """A lone training-free trial: ``sampled_trials`` with K = 1, its failure raised; closing the iterator early
    (a pruned trial) takes the change off. ``share_for``: the steps it shares with the baseline."""
    return alone(sampled_trials(apply, None, spec, [coefficients], progress, [share_for]))


def sampled_rung(score: Score, task: EvalTask) -> Rung:
    """A training-free trial's rung: its progress is the sample count; it is final at the task's N."""
    return Rung(score=score, progress=score.n, final=score.n == task.n, wall_s=score.wall_s, timings=score.timings)


def sampled_heldout(apply: Callable[..., Removable], spec: Spec, coefficients: Coefficients,
                    seed_set: int, share_for: ShareFor | None = None) -> HeldOut:
    """A training-free candidate on held-out seed set ``seed_set``, at ``confirm.n``."""
    from skipsearch.evaluate import evaluator_for

    task = eval_task(spec, n=spec.confirm.n, seed_start=heldout_seed_start(spec, seed_set), heldout=True)
    ev = evaluator_for(task)
    share = None if share_for is None else share_for(ev, task)
    with apply(ev.loaded.denoiser, coefficients, None):
        score = ev(task, share=share)
    return HeldOut(score=score, wall_s=score.wall_s)


def heldout_seed_start(spec: Spec, seed_set: int) -> int:
    """The first seed of held-out seed set ``seed_set``: sets are disjoint, ``confirm.n`` seeds each."""
    return spec.confirm.seed + seed_set * spec.confirm.n
