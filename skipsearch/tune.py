"""Ray Tune placement: the same trials as the in-process driver, run on Ray workers.

Workers only compute: they run ``evaluate_ladder`` and report one result per rung. The driver's
``StudySearcher`` (Optuna ask/tell; not Ray's OptunaSearch, whose semantics lose PRUNED and FAIL states)
is the only database writer. ASHA stops weak trials at the rungs; those become PRUNED in Optuna with
their intermediate values at step = N.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

from tqdm.auto import tqdm

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # skipsearch prints its own per-trial lines
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # only the JSON logger (search_on_ray adds it)

from skipsearch.errors import UserError
from skipsearch.context import StudyContext
from skipsearch.recording import record_failure, record_result, record_rung
from skipsearch.study import (POLL_S, WAIT, Waiting, ask, counted, reserve, say_budget_reached, stop_reason,
                              trial_line)


class WorkerBug(RuntimeError):
    """A bug in skipsearch hit a trial on a Ray worker; the message carries the worker's traceback."""


@dataclass(frozen=True)
class Placement:
    workers: int = 2
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2


def worker_trial(config: dict) -> None:
    """Runs on a Ray worker: evaluate the ladder and report each rung; never touches the database.

    The rung is ``samples`` (N) for Skip-Tuning and ``step`` (fine-tuning steps) for Diff-Tuning; both are
    reported under ``progress``, the scheduler's time attribute. A Diff-Tuning worker writes its fine-tuned
    weights to the path the driver chose (a filesystem the driver can read: local Ray or a shared disk).
    A trial's own failure is reported as ``failed`` (recorded FAIL); a user mistake found here (a data set
    missing on this machine) as ``stop``, and a bug as ``bug`` with its traceback: both stop the run.
    """
    import traceback

    import torch
    from ray import tune

    from pathlib import Path

    from skipsearch import coefficients
    from skipsearch.evaluate import TRIAL_ERRORS, EvalTask, failure_reason
    from skipsearch.finetuning import FinetuneTask
    from skipsearch.study import trial_ladder

    started = time.time()
    threads = os.environ.get("OMP_NUM_THREADS", "")  # Ray's share of CPUs for this trial; applied here too,
    if threads.isdigit() and int(threads) > 0:  # since torch may have sized its pool before Ray set it
        torch.set_num_threads(int(threads))
    where = {"pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
             "torch_threads": torch.get_num_threads(), "started": started}
    diff_tuning = config.get("kind") == "diff_tuning"
    task = (FinetuneTask if diff_tuning else EvalTask).from_dict(config["task"])
    weights_path = Path(config["weights_path"]) if config.get("weights_path") else None
    progress = 0 if diff_tuning else task.ladder[0]
    ending = {"fid": float("inf"), **where}
    try:
        ladder = trial_ladder(task, coefficients.parse(config["coefficients"]), weights_path,
                              timeout_s=config.get("timeout_s"))
        for r in ladder:
            progress = r.get("step", r["n"])
            tune.report({**r, **where, "samples": r["n"], "progress": progress, "finished": time.time()})
        return
    except TRIAL_ERRORS as err:  # the trial's own fault: recorded as FAIL, not retried
        ending["failed"] = failure_reason(err)
    except UserError as err:
        ending["stop"] = str(err)
    except Exception as err:  # noqa: BLE001 - a bug: reported with its traceback, so the driver stops and shows it
        ending["bug"] = "".join(traceback.format_exception(err))
    tune.report({**ending, "samples": progress, "progress": progress, "finished": time.time()})


def _searcher_class():
    from ray.tune.search import Searcher

    class StudySearcher(Searcher):
        """Optuna ask/tell in the driver, with skipsearch's bookkeeping for each Ray trial."""

        def __init__(self, ctx: StudyContext, budget: int):
            super().__init__(metric="fid", mode="min")
            self.ctx, self.budget, self.echo = ctx, budget, ctx.echo
            self.live: dict[str, tuple] = {}
            self.recorded: dict[str, set] = {}  # rungs already written, so a retried trial never writes twice
            self.results: list[dict] = []
            self.fatal: tuple[str, str] | None = None  # ("stop" | "bug", text): the run stops after this
            self.next_look = 0.0
            self.waiting = Waiting(ctx)
            self.bar = tqdm(total=max(0, budget - counted(ctx)[0]), desc=f"study {ctx.spec.name}", unit="trial",
                            file=sys.stderr, disable=None)

        def __getstate__(self) -> dict:
            """Tune pickles its searcher for Tuner.restore, which skipsearch never uses (it resumes by study
            name from the database); the live driver state stays out of that pickle."""
            return {k: v for k, v in self.__dict__.items() if k not in ("ctx", "bar", "echo", "live", "waiting")}

        def save(self, checkpoint_path: str) -> None:  # resume is by study name, never Tuner.restore
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

        def suggest(self, trial_id: str):
            if self.fatal is not None:
                return Searcher.FINISHED
            if time.monotonic() < self.next_look:
                return None  # Tune asks again soon; the database is not polled every time
            self.ctx.driver.check_heartbeat()
            trial = reserve(self.ctx, self.budget)
            if trial is None:
                return Searcher.FINISHED
            if trial == WAIT:
                if not self.live:
                    self.waiting.announce()
                self.next_look = time.monotonic() + POLL_S
                return None
            self.waiting.reset()
            role, coeffs = ask(self.ctx, trial)
            self.live[trial_id] = (trial, role, coeffs.model_dump_json(), None)
            weights_path = self.ctx.weights_path(trial.number)
            return {"task": self.ctx.trial_task.to_dict(), "coefficients": coeffs.model_dump_json(),
                    "number": trial.number, "role": role, "kind": self.ctx.spec.kind,
                    "timeout_s": self.ctx.trial_timeout_s,
                    "weights_path": None if weights_path is None else str(weights_path)}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            trial, role, cj, _ = self.live[trial_id]
            self.live[trial_id] = (trial, role, cj, result)
            done = self.recorded.setdefault(trial_id, set())
            if not result.keys() & ENDINGS and result["progress"] not in done:
                done.add(result["progress"])
                record_rung(self.ctx, trial, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if error:
                return  # finished by fail(), once Ray's error text is known (the callback below)
            if result and "fid" in result:  # a result that stopped the trial reaches only this call
                self.on_trial_result(trial_id, result)
            trial, role, cj, last = self.live.pop(trial_id)
            self.recorded.pop(trial_id, None)
            if last is not None and last.keys() & FATAL:
                kind = "stop" if "stop" in last else "bug"
                self.fatal = (kind, last[kind])
                err = UserError(last[kind]) if kind == "stop" else WorkerBug(last[kind].strip().splitlines()[-1])
                self.fail_number(trial.number, role, cj, stop_reason(err), evaluated=False)
                return
            if last is None or "failed" in last:
                reason = last["failed"] if last else "the trial ended without reporting a result"
                self.fail_number(trial.number, role, cj, reason)
                return
            state = record_result(self.ctx, trial.number, role, cj, last)
            self.results.append(last | {"state": state, "number": trial.number})
            self._done(trial_line(self.ctx, trial.number, state, last, None))

        def fail(self, trial_id: str, reason: str, evaluated: bool = True) -> None:
            if trial_id in self.live:
                trial, role, cj, _ = self.live.pop(trial_id)
                self.fail_number(trial.number, role, cj, reason, evaluated)

        def fail_number(self, number: int, role: str, cj: str, reason: str, evaluated: bool = True) -> None:
            record_failure(self.ctx, number, role, cj, reason, evaluated)
            self._done(trial_line(self.ctx, number, "FAIL", None, reason))

        def _done(self, line: str) -> None:
            self.bar.update()
            self.echo(line)

    return StudySearcher


FATAL = {"stop", "bug"}  # what a worker reports that stops the whole run
ENDINGS = {"failed", *FATAL}  # a worker's last report, not a rung


def _stopper(searcher):
    from ray.tune import Stopper

    class StopOnFatal(Stopper):
        """Every trial stops once a trial reported a bug or a user mistake: the run ends and says why."""

        def __call__(self, trial_id: str, result: dict) -> bool:
            return bool(result.keys() & FATAL)

        def stop_all(self) -> bool:
            return searcher.fatal is not None

    return StopOnFatal()


def _error_callback(searcher):
    from ray.tune import Callback

    class RecordErrors(Callback):
        """A trial that errored past its retries: record Ray's error text as the FAIL reason."""

        def on_trial_recover(self, iteration, trials, trial, **info):
            searcher.echo(f"trial {trial.config.get('number', trial.trial_id):3d}  its Ray worker was lost "
                          f"(failure {trial.num_failures}); retrying it")

        def on_trial_error(self, iteration, trials, trial, **info):
            text = trial.get_error() or "the trial's worker failed (no error text from Ray)"
            lines = [line for line in str(text).strip().splitlines() if line.strip()]
            searcher.fail(trial.trial_id, lines[-1] if lines else str(text))

    return RecordErrors()


class _QuietTrialFailures(logging.Filter):
    """Ray logs a lost worker's trial with a traceback of its own internals; skipsearch says it in one line
    (``on_trial_recover``, and the FAIL reason once the retries are spent)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Trial task failed for trial")


def _keeping_baseline(scheduler_class, top: int):
    """The baseline always finishes: every trial's dFID is measured against it at the top rung."""
    from ray.tune.schedulers import TrialScheduler

    class BaselineKeeping(scheduler_class):
        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            action = super().on_trial_result(tune_controller, trial, result)
            if trial.config.get("role") == "baseline" and result.get("progress", 0) < top:
                return TrialScheduler.CONTINUE
            return action

    return BaselineKeeping


def _scheduler(ctx: StudyContext):
    """ASHA on the spec's sample rungs (time attribute: samples so far) for Skip-Tuning. For Diff-Tuning,
    the median stopping rule on fine-tuning steps, as the in-process MedianPruner; none with two objectives."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if ctx.diff_tuning:
        f = ctx.spec.finetune
        if not f.eval_steps or ctx.multi_objective:
            return FIFOScheduler()
        return _keeping_baseline(MedianStoppingRule, f.steps)(time_attr="progress", grace_period=f.eval_steps[0],
                                                              min_samples_required=5, hard_stop=True)
    m = ctx.spec.metric
    if not m.rungs:
        return FIFOScheduler()
    return _keeping_baseline(ASHAScheduler, m.n)(time_attr="progress", max_t=m.n, grace_period=m.rungs[0],
                                                 reduction_factor=m.reduction_factor)


def _init_ray(placement: Placement) -> bool:
    """Join a cluster, reuse a running local Ray, or start one; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if placement.address:
        ray.init(address=placement.address, **kwargs)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, int(placement.workers * placement.cpus_per_trial + 0.999)),
                 **kwargs)
    return True


def _trial_dirname(trial) -> str:
    return f"trial-{trial.config.get('number', trial.trial_id)}"


def search_on_ray(ctx: StudyContext, budget: int, placement: Placement) -> list[dict]:
    """Run trials on Ray until the study holds ``budget`` evaluated trials; returns this run's last results.

    A trial that reported a bug or a user mistake stops the run: every trial is stopped, and the bug is
    raised with the worker's traceback (exit 1), the mistake as a UserError (exit 2).
    """
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback  # Tune reads its results back; no TensorBoard or CSV files

    used, in_flight = counted(ctx)
    if used >= budget and not in_flight:
        say_budget_reached(ctx, used, budget)
        return []
    started = _init_ray(placement)
    searcher = _searcher_class()(ctx, budget)
    workdir = tempfile.mkdtemp(prefix="skipsearch-ray-")
    resources = {"cpu": placement.cpus_per_trial, "gpu": placement.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(worker_trial, resources),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=_scheduler(ctx), metric="fid", mode="min",
                                    num_samples=-1, max_concurrent_trials=placement.workers, reuse_actors=True,
                                    trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_dirname),
        run_config=tune.RunConfig(name=ctx.spec.name, storage_path=workdir, verbose=0, stop=_stopper(searcher),
                                  failure_config=tune.FailureConfig(max_failures=placement.max_failures),
                                  callbacks=[_error_callback(searcher), JsonLoggerCallback()]),
    )
    quiet, controller_log = _QuietTrialFailures(), logging.getLogger("ray.tune.execution.tune_controller")
    controller_log.addFilter(quiet)
    try:
        tuner.fit()
    finally:
        controller_log.removeFilter(quiet)
        for trial_id in list(searcher.live):
            searcher.fail(trial_id, "the trial did not finish before the Ray run ended", evaluated=False)
        searcher.bar.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if started:
            ray.shutdown()
    if searcher.fatal is not None:
        kind, text = searcher.fatal
        if kind == "stop":
            raise UserError(text)
        raise WorkerBug(f"a trial on a Ray worker hit a bug in skipsearch; the worker's traceback:\n{text}")
    return searcher.results
