"""Ray Tune placement: the same trials as the in-process driver, run on Ray workers.

Workers only compute: they run the method's trial (``trial_steps.trial_ladder``: its ``trial_batch`` with
K = 1, the generator the in-process driver runs) and report one ``Rung`` per rung, as JSON. The driver's
``StudySearcher`` (Optuna ask/tell; not Ray's OptunaSearch, whose semantics lose PRUNED and FAIL states) is the
only database writer. The method's fidelity gives the scheduler (ASHA or the median rule, ``search.fidelity``),
which stops trials by the in-process rule (``fidelity.stops``: never the baseline); a trial it stops becomes
PRUNED in Optuna, with its intermediate values at step = progress.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from skipsearch.errors import UserError
from skipsearch.progress import Progress
from skipsearch.results import Rung
from skipsearch.scratch import scratch_folder
from skipsearch.search.context import StudyContext
from skipsearch.search.budget import POLL_S, WAIT, Waiting, counted, evaluated, reserve
from skipsearch.search.driver import say_budget_reached, trial_line
from skipsearch.search.stored_spec import stored_form
from skipsearch.search.trial_steps import Finished, ask, stop_reason
from skipsearch.search.fidelity import scheduler
from skipsearch.search.recording import record_failure, record_result, record_rung

# Set only while a Ray run is in progress (importing this module changes nothing): skipsearch prints its own
# per-trial lines, and only the JSON logger that search_on_ray adds writes trial results.
RAY_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


class WorkerBug(RuntimeError):
    """A bug in skipsearch hit a trial on a Ray worker; the message carries the worker's traceback."""


@dataclass(frozen=True, kw_only=True)
class Placement:
    workers: int = 2
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2


@dataclass(frozen=True, kw_only=True)
class WorkerTrial:
    """A trial this Ray run finished: how it ended, and where it ran."""

    finished: Finished
    pid: int
    cuda_visible_devices: str
    torch_threads: int
    started: float
    ended: float


def worker_trial(config: dict) -> None:
    """Runs on a Ray worker: run the method's trial and report each rung; never touches the database.

    Each rung is reported as JSON under ``rung``, with ``fid`` (the metric) and ``progress`` (the
    scheduler's time attribute: samples or training steps, the method's fidelity unit). A trial that writes a
    file writes it where the driver chose (a filesystem the driver can read: local Ray or a shared disk).
    A trial's own failure is reported as ``failed`` (recorded FAIL); a user mistake found here (a data set
    missing on this machine) as ``stop``, and a bug as ``bug`` with its traceback: both stop the run.
    Progress goes to the worker's own stderr (Ray's log files, not the driver's output): as lines, the trial's
    first rung and end, and in between about one line per ``$SKIPSEARCH_PROGRESS_S`` (``skipsearch.progress``).
    """
    import traceback
    from pathlib import Path

    import torch
    from ray import tune

    from skipsearch.evaluate import TRIAL_ERRORS, failure_reason
    from skipsearch.methods import method_for, parse_coefficients
    from skipsearch.search.trial_steps import trial_ladder
    from skipsearch.search.integrity import check_scores
    from skipsearch.specfile import parse_spec

    started = time.time()
    threads = os.environ.get("OMP_NUM_THREADS", "")  # Ray's share of CPUs for this trial; applied here too,
    if threads.isdigit() and int(threads) > 0:  # since torch may have sized its pool before Ray set it
        torch.set_num_threads(int(threads))
    where = {"pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
             "torch_threads": torch.get_num_threads(), "started": started}
    artifact = Path(config["artifact"]) if config.get("artifact") else None
    progress = 0
    ending = {"fid": float("inf"), **where}
    try:
        spec = parse_spec(config["spec"], "the driver's spec")
        fidelity = method_for(spec.kind).fidelity(spec)
        with Progress(fidelity.top, f"Ray trial {config.get('number', '?')}", fidelity.unit) as bar:
            for rung in trial_ladder(spec, parse_coefficients(config["coefficients"]), artifact, progress=True):
                # a file changed on this machine since the study was stored: a stop (UserError), never a result
                check_scores(spec, config.get("hashes", {}), rung.score, rung.references,
                             f"trial {config.get('number', '?')}")
                bar.update(rung.progress - progress)
                progress = rung.progress
                tune.report({"fid": rung.score.fid, "progress": progress, "rung": rung.to_json(), **where,
                             "finished": time.time()})
        return
    except TRIAL_ERRORS as err:  # the trial's own fault: recorded as FAIL, not retried
        ending["failed"] = failure_reason(err)
    except UserError as err:
        ending["stop"] = str(err)
    except Exception as err:  # noqa: BLE001 - a bug: reported with its traceback, so the driver stops and shows it
        ending["bug"] = "".join(traceback.format_exception(err))
    tune.report({**ending, "progress": progress, "finished": time.time()})


def _searcher_class():
    from ray.tune.search import Searcher

    class StudySearcher(Searcher):
        """Optuna ask/tell in the driver, with skipsearch's bookkeeping for each Ray trial."""

        def __init__(self, ctx: StudyContext, budget: int):
            super().__init__(metric="fid", mode="min")
            self.ctx, self.budget, self.echo = ctx, budget, ctx.echo
            self.spec = stored_form(ctx.spec)  # what workers get: the spec without a database password
            self.live: dict[str, tuple] = {}
            self.recorded: dict[str, set] = {}  # rungs already written, so a retried trial never writes twice
            self.results: list[WorkerTrial] = []
            self.fatal: tuple[str, str] | None = None  # ("stop" | "bug", text): the run stops after this
            self.next_look = 0.0
            self.waiting = Waiting(ctx)
            self.bar = Progress(budget, f"study {ctx.spec.name}", "trials", initial=evaluated(ctx, budget))

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
            artifact = self.ctx.method.artifact(self.ctx.spec, trial.number)
            return {"spec": self.spec, "coefficients": coeffs.model_dump_json(), "number": trial.number,
                    "role": role, "artifact": None if artifact is None else str(artifact),
                    "hashes": dict(self.ctx.hashes)}  # the worker checks its scores against the study's files

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            trial, role, cj, _ = self.live[trial_id]
            self.live[trial_id] = (trial, role, cj, result)
            done = self.recorded.setdefault(trial_id, set())
            if not result.keys() & ENDINGS and result["progress"] not in done:
                done.add(result["progress"])
                record_rung(self.ctx, trial, Rung.from_json(result["rung"]))

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
            rung = Rung.from_json(last["rung"])
            done = Finished(number=trial.number, state=record_result(self.ctx, trial.number, role, cj, rung),
                            rung=rung)
            self.results.append(WorkerTrial(finished=done, pid=last["pid"],
                                            cuda_visible_devices=last["cuda_visible_devices"],
                                            torch_threads=last["torch_threads"], started=last["started"],
                                            ended=last["finished"]))
            self._done(trial_line(self.ctx, done))

        def fail(self, trial_id: str, reason: str, evaluated: bool = True) -> None:
            if trial_id in self.live:
                trial, role, cj, _ = self.live.pop(trial_id)
                self.fail_number(trial.number, role, cj, reason, evaluated)

        def fail_number(self, number: int, role: str, cj: str, reason: str, evaluated: bool = True) -> None:
            record_failure(self.ctx, number, role, cj, reason, evaluated)
            self._done(trial_line(self.ctx, Finished(number=number, state="FAIL", reason=reason)))

        def _done(self, line: str) -> None:
            self.echo(line)
            self.bar.advance_to(evaluated(self.ctx, self.budget))  # the study's count (driver.evaluated)

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


@contextmanager
def _ray_environment() -> Iterator[None]:
    """``RAY_ENV`` for the duration of a run (values the user set are kept), then the environment as it was."""
    before = {k: os.environ.get(k) for k in RAY_ENV}
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)


def require_ray() -> None:
    """Ray is an optional extra; say how to get it instead of an ImportError."""
    try:
        import ray.tune  # noqa: F401
    except ImportError:
        raise UserError("--workers and --address run trials on Ray, which is not installed here: "
                        "pip install 'skipsearch[ray]' (or run without --workers, in this process)") from None


def search_on_ray(ctx: StudyContext, budget: int, placement: Placement) -> list[WorkerTrial]:
    """Run trials on Ray until the study holds ``budget`` evaluated trials; returns this run's last results.

    A trial that reported a bug or a user mistake stops the run: every trial is stopped, and the bug is
    raised with the worker's traceback (exit 1), the mistake as a UserError (exit 2).
    """
    require_ray()
    used, in_flight = counted(ctx)
    if used >= budget and not in_flight:
        say_budget_reached(ctx, used, budget)
        return []
    with _ray_environment():
        return _search(ctx, budget, placement)


def _search(ctx: StudyContext, budget: int, placement: Placement) -> list[WorkerTrial]:
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback  # Tune reads its results back; no TensorBoard or CSV files

    started = _init_ray(placement)
    searcher = _searcher_class()(ctx, budget)
    workdir = scratch_folder("skipsearch-ray-")
    resources = {"cpu": placement.cpus_per_trial, "gpu": placement.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(worker_trial, resources),
        tune_config=tune.TuneConfig(search_alg=searcher,
                                    scheduler=scheduler(ctx.method.fidelity(ctx.spec), ctx.multi_objective),
                                    metric="fid", mode="min",
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
