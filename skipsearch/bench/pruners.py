"""``skipsearch bench --pruners``: early stopping inside the search, compared on the same trials. Successive
halving on sample-count rungs (the rule a spec with ``metric.rungs`` runs today), Optuna's ``WilcoxonPruner`` on
paired per-chunk FIDs against the incumbent, and no early stopping (the shipped specs have no rungs).

**Why a replay.** Which trials a rule stops changes what TPE proposes next, so two live searches with two
rules differ in their proposals as much as in their rules. Here the spec's own sampler (``PerTrialSeed``, the
baseline first, as the driver enqueues it) proposes ``trials`` points once, each evaluated on all ``metric.n``
search seeds; then each rule is replayed on those same trials, in order, through Optuna's real pruner objects:
what it is told at each step, and whether it stops the trial there, is what a study with that rule would have
done with those points. What a replay cannot show is the second-order effect on TPE of seeing fewer complete
trials.

**What each rule sees.**

- *halving*: the pooled FID of the first N samples at each rung (N = the spec's ``metric.rungs``, or n/4 and
  n/2 as versus-plain adds them), reported at step N, through ``search.fidelity.pruner``: the exact pruner
  a study with those rungs builds.
- *wilcoxon*: the FID of each of ``chunks`` disjoint chunks of the search seeds, reported at step = chunk
  index. Optuna's ``WilcoxonPruner`` (its defaults: p 0.1, 2 startup steps) compares them, chunk by chunk,
  with the incumbent's (the trial with the lowest told FID): a paired test, as the issue asks, since every
  trial samples the same seeds (common random numbers).
- *none*: every trial runs to n.

Every rule tells a trial that ends its pooled FID at n, and never stops the baseline (``fidelity.stops``).

**What is compared.** The samples each rule spends in the search, and what it hands on to the confirmation:
its ``confirm.top_k`` complete candidates with the lowest FID at n (the race's entrants). Against the top-k of
no early stopping: how many of them it kept, whether it kept the unstopped winner, and the FID at n of its own
best candidate (how much it lost, where it lost the winner).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from skipsearch.bench.measurements import Record
from skipsearch.bench.versus_plain import check_comparable, default_rungs, say
from skipsearch.diffusion.generation import generate
from skipsearch.errors import UserError
from skipsearch.evaluate import Evaluator, evaluator_for, resolve_device
from skipsearch.methods import Coefficients, Fidelity, method_for
from skipsearch.methods.sampled import eval_task
from skipsearch.metrics.distance import fid
from skipsearch.progress import Progress
from skipsearch.search.fidelity import pruner, stops
from skipsearch.search.proposals import PerTrialSeed
from skipsearch.spec import MIN_FID_N, TRIALS_MAX, Spec
from skipsearch.specfile import load_spec

RULES = ("none", "halving", "wilcoxon")
DEFAULT_CHUNKS = 10  # WilcoxonPruner needs >= 4 paired chunks to reach p < 0.1 at all; 10 leave it room to stop


@dataclass(frozen=True, kw_only=True)
class Evaluated:
    """One proposed trial, evaluated on every search seed: its pooled FID at each rung of the ladder (the last is
    n) and the FID of each disjoint chunk."""

    number: int
    role: str  # "baseline" or "search"
    coefficients: Coefficients
    rung_fids: tuple[float, ...]
    chunk_fids: tuple[float, ...]

    @property
    def fid(self) -> float:
        return self.rung_fids[-1]


@dataclass(frozen=True, kw_only=True)
class Replay:
    """One rule replayed on one repeat's trials."""

    rule: str
    samples: int  # search samples it spent
    stopped: tuple[int, ...]  # trials it stopped early
    top: tuple[int, ...]  # its confirm.top_k complete candidates, lowest FID at n first

    def best_fid(self, trials: Sequence[Evaluated]) -> float:
        return trials[self.top[0]].fid if self.top else math.nan


@dataclass(frozen=True, kw_only=True)
class PrunerRepeat:
    repeat: int
    trials: tuple[Evaluated, ...]
    ladder: tuple[int, ...]
    chunk: int  # samples per Wilcoxon chunk
    replays: dict[str, Replay]
    wall_s: float

    @property
    def reference(self) -> Replay:
        return self.replays["none"]

    def kept(self, rule: str) -> int:
        """How many of no early stopping's top-k the rule also hands on."""
        return len(set(self.replays[rule].top) & set(self.reference.top))

    def kept_winner(self, rule: str) -> bool:
        return bool(self.reference.top) and self.reference.top[0] in self.replays[rule].top

    def cost(self, rule: str) -> float:
        """The rule's search samples over no early stopping's."""
        return self.replays[rule].samples / max(self.reference.samples, 1)


def ladder_of(spec: Spec) -> tuple[int, ...]:
    """The halving rungs and n: the spec's own rungs, else n/4 and n/2 (``versus_plain.default_rungs``)."""
    rungs = spec.metric.rungs or default_rungs(spec)
    if not rungs:
        raise UserError(f"--pruners needs rungs below metric.n = {spec.metric.n}: set metric.rungs, or an n "
                        f"divisible by 4 whose quarter is at least kid_subset_size and {MIN_FID_N}")
    return (*rungs, spec.metric.n)


def chunk_size(spec: Spec, chunks: int) -> int:
    size = spec.metric.n // chunks
    if chunks < 4 or size < MIN_FID_N:
        raise UserError(f"--chunks must be at least 4 (a one-sided Wilcoxon test on fewer cannot reach p < 0.1) "
                        f"and leave chunks of at least {MIN_FID_N} of metric.n = {spec.metric.n} samples; got "
                        f"{chunks}")
    return size


def propose_and_evaluate(spec: Spec, ev: Evaluator, repeat: int, trials: int, ladder: tuple[int, ...],
                         chunk: int, chunks: int) -> tuple[Evaluated, ...]:
    """The spec's sampler (seeded with ``repeat``) proposes ``trials`` points, the baseline first; each is sampled
    on the search seeds and told its FID at n, as an unpruned study would be."""
    method, info, m = method_for(spec.kind), ev.loaded.info, spec.metric
    seeds = range(m.seed, m.seed + m.n)
    labels = eval_task(spec, n=m.n, seed_start=m.seed).labels(seeds, info.conditions)
    study = optuna.create_study(direction="minimize", sampler=PerTrialSeed(spec.search.sampler, repeat))
    study.enqueue_trial(method.baseline(spec, info), user_attrs={"role": "baseline"})
    out: list[Evaluated] = []
    with Progress(trials, f"pruners, repeat {repeat}: trials at N={m.n}", "trials") as bar:
        for _ in range(trials):
            trial = study.ask()
            coefficients = method.suggest(trial, spec, info)
            with method.apply(ev.loaded.denoiser, coefficients, None):
                images = generate(ev.loaded.denoiser, seeds, info.shape, spec.sampler.config(),
                                  batch_size=m.batch_size, device=ev.device, labels=labels)
            feats = ev.extractor(images, batch_size=m.batch_size)
            stats = ev.reference.stats
            item = Evaluated(number=trial.number, role=trial.user_attrs.get("role", "search"),
                             coefficients=coefficients,
                             rung_fids=tuple(fid(feats[:n], stats) for n in ladder),
                             chunk_fids=tuple(fid(feats[k * chunk:(k + 1) * chunk], stats) for k in range(chunks)))
            study.tell(trial, item.fid)
            out.append(item)
            bar.update(1)
    return tuple(out)


def replay(rule: str, trials: Sequence[Evaluated], top_k: int, fidelity: Fidelity, ladder: tuple[int, ...],
           chunk: int) -> Replay:
    """``rule`` on the trials in order, through Optuna's pruner: each trial is told what it would have reported,
    and stops where the pruner says so (never the baseline)."""
    pruners: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
        "none": optuna.pruners.NopPruner, "halving": lambda: pruner(fidelity),
        "wilcoxon": lambda: optuna.pruners.WilcoxonPruner()}
    with warnings.catch_warnings():  # WilcoxonPruner is "experimental" in Optuna 5: said once, in the README
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="minimize", pruner=pruners[rule]())
    spent, stopped = 0, []
    for t in trials:
        trial = study.ask()
        if rule == "wilcoxon":
            steps = [(k, value, (k + 1) * chunk) for k, value in enumerate(t.chunk_fids)]
        else:
            steps = [(n, value, n) for n, value in zip(ladder, t.rung_fids)]
        for i, (step, value, used) in enumerate(steps):
            trial.report(value, step)
            last = i == len(steps) - 1
            if not last and stops(t.role, False, trial.should_prune):
                spent += used
                stopped.append(t.number)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            spent += ladder[-1]
            study.tell(trial, t.fid)
    complete = [t for t in trials if t.number not in stopped and t.role != "baseline"]
    top = tuple(t.number for t in sorted(complete, key=lambda t: (t.fid, t.number))[:top_k])
    return Replay(rule=rule, samples=spent, stopped=tuple(stopped), top=top)


def compare_pruners(spec_path: Path | str, repeats: int = 3, trials: int | None = None,
                    chunks: int = DEFAULT_CHUNKS) -> list[PrunerRepeat]:
    """Every rule replayed on the same trials, for sampler seeds 0 .. repeats-1 (see the module's docstring)."""
    if not 1 <= repeats <= 100:
        raise UserError(f"--repeats must be between 1 and 100, got {repeats}")
    spec = load_spec(spec_path)
    check_comparable(spec, "--pruners")
    trials = spec.search.trials if trials is None else trials
    if not 2 <= trials <= TRIALS_MAX:
        raise UserError(f"--trials must be between 2 and {TRIALS_MAX} (the baseline and at least one candidate), "
                        f"got {trials}")
    ladder, chunk = ladder_of(spec), chunk_size(spec, chunks)
    with_rungs = spec.model_copy(update={"metric": spec.metric.model_copy(update={"rungs": ladder[:-1]})})
    fidelity = method_for(spec.kind).fidelity(with_rungs)
    say(f"pruners: {spec.name}, {trials} trials of N={spec.metric.n} per repeat ({spec.search.sampler} proposals, "
        f"replayed under each rule): halving on rungs {list(ladder)} (factor {fidelity.factor}); Wilcoxon on "
        f"{chunks} chunks of {chunk} (p < 0.1, after 2 chunks); none. Handed on: the top {spec.confirm.top_k}")
    ev = evaluator_for(eval_task(spec, n=spec.metric.n, seed_start=spec.metric.seed))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for repeat in range(repeats):
        start = time.perf_counter()
        evaluated = propose_and_evaluate(spec, ev, repeat, trials, ladder, chunk, chunks)
        replays = {rule: replay(rule, evaluated, spec.confirm.top_k, fidelity, ladder, chunk) for rule in RULES}
        result = PrunerRepeat(repeat=repeat, trials=evaluated, ladder=ladder, chunk=chunk, replays=replays,
                              wall_s=time.perf_counter() - start)
        for rule in RULES:
            say(line(result, rule))
        out.append(result)
    return out


def line(r: PrunerRepeat, rule: str) -> str:
    p = r.replays[rule]
    return (f"repeat {r.repeat} {rule:8s}: {p.samples:7,d} samples ({r.cost(rule):5.2f}x none), "
            f"{len(p.stopped):2d} trials stopped, hands on {list(p.top)} (best FID {p.best_fid(r.trials):.4f}); "
            f"kept {r.kept(rule)}/{len(r.reference.top)} of none's, "
            f"its winner {'kept' if r.kept_winner(rule) else 'LOST'}")


def records(results: list[PrunerRepeat], device: str) -> list[Record]:
    out = []
    for r in results:
        for rule in RULES[1:]:
            head = f"pruners, repeat {r.repeat}, {rule}"
            out += [Record.judged(f"{head}: search samples / no early stopping's", r.cost(rule), None, device),
                    Record.judged(f"{head}: no early stopping's top-{len(r.reference.top)} kept", r.kept(rule), None,
                                  device),
                    Record.judged(f"{head}: best candidate's FID at n - no early stopping's",
                                  r.replays[rule].best_fid(r.trials) - r.reference.best_fid(r.trials), None, device)]
    for rule in RULES[1:]:
        out += [Record.judged(f"pruners, {rule}: median search samples / no early stopping's",
                              statistics.median(r.cost(rule) for r in results), None, device),
                Record.judged(f"pruners, {rule}: repeats keeping no early stopping's winner",
                              sum(r.kept_winner(rule) for r in results), None, device)]
    return out


def bench_pruners(spec_path: Path | str, repeats: int = 3, trials: int | None = None,
                  chunks: int = DEFAULT_CHUNKS) -> list[Record]:
    """Replay the rules, print a line per repeat and rule, and return the records (``skipsearch bench
    --pruners``)."""
    results = compare_pruners(spec_path, repeats, trials, chunks)
    return records(results, resolve_device(load_spec(spec_path).device))

