"""Command line: parses arguments and calls the public API.

Exit codes: 0 done; 1 a bug (a traceback, passwords scrubbed) or ``verify`` found a different FID; 2 a
user mistake or a machine failure such as a full disk (one clear message, no traceback); 130 interrupted (Ctrl-C);
143 terminated (SIGTERM).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from skipsearch.cli_bench import bench
from skipsearch.cli_errors import friendly
from skipsearch.errors import UserError
from skipsearch.interrupts import exit_code, sigterm_as_interrupt
from skipsearch.storage import urls

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Search coefficients (Skip-Tuning, Diff-Tuning) that lower a diffusion model's FID.")
STORAGE = typer.Option(None, "--storage", show_default=False,
                       help=f"Database URL (SQLite file or PostgreSQL); default ${urls.STORAGE_ENV}, else "
                            f"sqlite:///skipsearch.db. Put a password in ${urls.STORAGE_ENV}, not here.")


@app.command()
@friendly
def run(spec: Path = typer.Argument(..., help="Study spec (YAML), e.g. studies/demo-skip.yaml."),
        storage: Optional[str] = typer.Option(None, help=f"Database URL; overrides ${urls.STORAGE_ENV} and the "
                                                         f"spec's storage."),
        trials: Optional[int] = typer.Option(None, min=1, help="Study-wide budget of evaluated trials (baseline "
                                                               "included); overrides the spec."),
        workers: Optional[int] = typer.Option(None, min=1, max=4096, help="Run K trials at a time on Ray workers."),
        address: Optional[str] = typer.Option(None, help="Join this Ray cluster (e.g. 10.0.0.5:6379) "
                                                         "instead of starting a local one."),
        cpus_per_trial: float = typer.Option(1.0, min=0.01, max=1024, help="CPUs Ray reserves per trial."),
        gpus_per_trial: float = typer.Option(0.0, min=0.0, max=64, help="GPUs per trial; fractions share a GPU."),
        max_failures: int = typer.Option(2, min=0, max=100, help="Retries of a trial whose Ray worker was lost.")):
    """Run (or continue) a study, then confirm the best trials on held-out seeds.

    In this process by default; on Ray with --workers or --address. Several runs (on one or several
    machines) may share a study: the budget is study-wide, and each trial runs once.

    Example: skipsearch run studies/demo-skip.yaml --trials 40 --workers 2
    """
    from skipsearch import api, terminal_tables
    from skipsearch.methods import method_for
    from skipsearch.search.ray_tune import Placement
    from skipsearch.specfile import load_spec

    loaded = load_spec(spec)
    url = urls.choose(storage, loaded.storage)
    urls.check_writable(url)  # parses it too; a read-only database is refused before the model is loaded
    if urls.password(loaded.storage) and not storage:
        typer.echo(f"warning: {spec} holds a database password; put the URL in ${urls.STORAGE_ENV} instead",
                   err=True)
    placement = None
    if workers is not None or address is not None:
        placement = Placement(workers=workers or 2, address=address, cpus_per_trial=cpus_per_trial,
                              gpus_per_trial=gpus_per_trial, max_failures=max_failures)
    where = "in this process" if placement is None else f"on Ray, {placement.workers} trial(s) at a time"
    typer.echo(f"study {loaded.name}: {where}; results go to {urls.shown(url)} (Optuna storage and skipsearch "
               f"tables)")
    result = api.run(spec, url, trials, placement)
    s, method = loaded.sampler, method_for(loaded.kind)
    header = (f"Study {result.study} ({method.display_name(loaded)}): model {loaded.model.model_id}, {s.name} "
              f"{s.steps} steps = {s.config().nfe} NFE, "
              f"FID/KID in the {loaded.metric.extractor} feature space vs {loaded.metric.reference}")
    extra = method.header(loaded)
    header += f"\n{extra}" if extra else ""
    terminal_tables.print_summary(header, result.trials, result.confirmation, pareto=result.pareto,
                                  readout=result.readout)
    from skipsearch.search.verdict import edge_note

    edge = edge_note(result.edges)
    if edge:
        typer.echo(edge)
    command = (f"skipsearch export {result.study} --storage {urls.for_command_line(url)} --format yaml "
               f"-o {result.study}.yaml")
    judged = result.verdict
    if judged.trial is not None and not judged.win:
        typer.echo(f"stored in {result.storage}; no win is claimed, so the model as it is (the baseline) stays "
                   f"the choice this study supports; trial {judged.trial}, the best candidate, can still be "
                   f"exported (the file says no win was claimed): {command}")
    else:
        typer.echo(f"stored in {result.storage}; export with: {command}")


@app.command()
@friendly
def best(study: str = typer.Argument(..., help="Study name."), storage: Optional[str] = STORAGE,
         as_json: bool = typer.Option(False, "--json", help="Print the full record as JSON.")):
    """Show a study's winner (confirmed on held-out seeds if it was), with provenance.

    Example: skipsearch best demo-skip --storage sqlite:///skipsearch.db
    """
    from skipsearch import api
    from skipsearch.methods import method_of

    won = api.best(storage, study)
    if as_json:
        typer.echo(json.dumps(won.to_json(), indent=2))
        return
    p = won.provenance
    s, c = p.search, p.confirmation
    named = f" ({won.method})" if won.method else ""
    typer.echo(f"study {study}{named}: trial {p.trial} ({p.role}) {won.coefficients.describe()}")
    delta = "" if s.delta_fid is None else f" (dFID {s.delta_fid:+.4f})"
    typer.echo(f"  search  N={s.n}: FID {s.fid:.4f}{delta}, KID {s.kid:.5f} [{p.metric.extractor}]")
    if c:
        interval = "" if c.delta_fid_low is None else f" (95% paired interval [{c.delta_fid_low:+.4f}, " \
                                                      f"{c.delta_fid_high:+.4f}])"
        if c.race is not None:  # the race judged the debiased FID: say which number is which
            bounds = "" if c.race.low is None else f" [{c.race.low:+.4f}, {c.race.high:+.4f}]"
            interval = (f" (plain FID means); the race's debiased dFID {c.race.delta:+.4f}{bounds} over "
                        f"{c.race.seed_sets} seed sets")
        typer.echo(f"  held-out N={c.n} x {len(c.seed_sets)} seed sets: FID {c.heldout_fid:.4f}, "
                   f"dFID {c.delta_fid:+.4f}{interval}")
        if c.second_opinion is not None:
            o = c.second_opinion
            bounds = "" if o.low is None else f" [{o.low:+.4f}, {o.high:+.4f}]"
            typer.echo(f"  second opinion in {o.extractor} (debiased FID, N={o.n} x {o.seed_sets} seed sets): "
                       f"dFID {o.delta:+.4f}{bounds}")
    else:
        typer.echo("  not confirmed on held-out seeds yet")
    evidence, files = method_of(won.coefficients).provenance_lines(p)  # what the method adds to provenance
    for line in evidence:
        typer.echo(f"  {line}")
    if won.verdict is not None:
        typer.echo(f"  verdict: {won.verdict.text}")
    from skipsearch.search.verdict import edge_note

    edge = edge_note(won.edges)
    if edge:
        typer.echo(f"  {edge}")
    for line in files:
        typer.echo(f"  {line}")
    if won.pareto_front:
        from rich.console import Console

        from skipsearch.search.readout import Readout
        from skipsearch.terminal_tables import pareto_table

        Console(width=180).print(pareto_table(api.pareto(storage, study), won.readout or Readout()))


@app.command()
@friendly
def export(study: str = typer.Argument(..., help="Study name."), storage: Optional[str] = STORAGE,
           fmt: Optional[str] = typer.Option(None, "--format", help="yaml, json or toml (default: from -o)."),
           output: Path = typer.Option(..., "-o", "--output", help="File to write."),
           trial: Optional[int] = typer.Option(None, min=0, help="Export this trial instead of the winner.")):
    """Write the winning coefficients, with provenance, to a YAML/JSON/TOML file.

    Example: skipsearch export demo-skip --storage sqlite:///skipsearch.db --format toml -o best.toml
    """
    from skipsearch import api

    done = api.exported(storage, study, output, fmt, trial)
    typer.echo(f"wrote {done.path}")
    caution = done.caution()
    if caution is not None:  # the file says so too (provenance.verdict); a user about to apply it should know
        typer.echo(f"note: {caution}", err=True)


@app.command()
@friendly
def verify(file: Path = typer.Argument(..., help="A coefficient file written by export."),
           device: str = typer.Option("cpu", help="cpu or cuda."),
           tolerance: float = typer.Option(1e-4, min=0.0, max=0.999,
                                           help="Allowed difference, relative to max(1, recorded FID)."),
           trust_pickles: bool = typer.Option(False, "--trust-pickles",
                                              help="Load the pickled model file the provenance names (a pickle "
                                                   "runs code when loaded); a file's own trust_pickles is never "
                                                   "honoured.")):
    """Re-sample with a coefficient file applied and compare with the FID it records.

    Exits 1 when the reproduced FID differs from the recorded one by more than the tolerance, or when the file
    disagrees with itself (its coefficients against the rho per skip or the recipe its provenance records).

    Example: skipsearch verify best.yaml
    """
    from skipsearch import api
    from skipsearch.exchange.apply_file import disagreeing

    r = api.verify(file, device, tolerance, trust_pickles=trust_pickles)
    if r.disagreements:
        typer.echo(f"verify: {disagreeing(file, list(r.disagreements))}\nverify: nothing was sampled", err=True)
        raise typer.Exit(1)
    typer.echo(f"recorded FID {r.recorded_fid:.8f}, reproduced {r.reproduced_fid:.8f} (|diff| {r.difference:.2e}, "
               f"tolerance {r.allowed:.2e})")
    if r.reference_hash_match is False:
        typer.echo("warning: the reference data changed since the FID was recorded", err=True)
    if not r.ok:
        typer.echo("verify: the reproduced FID differs from the recorded one beyond the tolerance", err=True)
        raise typer.Exit(1)


@app.command()
@friendly
def sample(source: Path = typer.Argument(..., help="A study spec (YAML), or a coefficient file alone (its provenance "
                                                   "names the model and the sampler)."),
           coefficients: Optional[Path] = typer.Option(None, "--coefficients", "-c",
                                                       help="A coefficient file to apply (default: none, the "
                                                            "study's baseline)."),
           n: int = typer.Option(64, "-n", help="How many images."),
           output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                 help="File prefix: writes PREFIX.png and PREFIX.npz."),
           output_dir: Optional[Path] = typer.Option(None, "--output-dir",
                                                     help="Folder for NAME-samples.png and NAME-samples.npz "
                                                          "(default: the working folder)."),
           seed_start: Optional[int] = typer.Option(None, "--seed-start",
                                                    help="First seed (default: the study's metric.seed, as its "
                                                         "trials)."),
           device: Optional[str] = typer.Option(None, help="cpu, cuda or auto (default: the spec's device; cpu for "
                                                           "a coefficient file alone)."),
           trust_pickles: bool = typer.Option(False, "--trust-pickles",
                                              help="Load the pickled model file a coefficient file names (a pickle "
                                                   "runs code when loaded); a file's own trust_pickles is never "
                                                   "honoured.")):
    """Write N images of a study's model as a PNG grid and an .npz (key images, uint8, NHWC), with a coefficient
    file applied or without: the study's own sampler, seeds (from metric.seed) and conditioning (seed s: class
    label or prompt s mod count), so they are the images its trials scored.

    Example: skipsearch sample studies/demo-skip.yaml -c best.yaml -n 64 -o winner;  skipsearch sample best.yaml
    """
    from skipsearch.exchange.sample import sample as draw

    s = draw(source, coefficients, n, output=output, output_dir=output_dir, seed_start=seed_start, device=device,
             trust_pickles=trust_pickles, echo=lambda line: typer.echo(line, err=True))
    applied = f"with {s.coefficients} applied" if s.coefficients is not None else "without coefficients (baseline)"
    shown = ", ".join(map(str, s.conditions[:10])) + (", ..." if len(s.conditions) > 10 else "")
    labels = f", seed s conditioned on [{shown}][s mod {len(s.conditions)}]" if s.conditions else ""
    typer.echo(f"{len(s.images)} samples of {s.model_id} {applied}: {s.sampler}, seeds {s.seeds.start}.."
               f"{s.seeds.stop - 1}{labels}, on {s.device}, {s.wall_s:.1f} s")
    typer.echo(f"wrote {s.grid} (grid of the first {s.grid_count}) and {s.npz} (npz:{s.npz} reads it as a data set)")


@app.command()
@friendly
def upgrade(storage: Optional[str] = STORAGE):
    """Bring a database written by an older skipsearch to this one's schema, in one transaction that keeps every
    number (``best``, ``export`` and ``report`` read it after; an older skipsearch may not).

    Example: skipsearch upgrade --storage sqlite:///skipsearch.db
    """
    from skipsearch.storage.migrations import HEAD
    from skipsearch.storage.upgrading import upgrade_database

    url = urls.choose(storage)
    done = upgrade_database(url)
    shown = urls.shown(url)
    if done is None:
        typer.echo(f"{shown} is already at this skipsearch's schema (revision {HEAD})")
        return
    found = done.found or (f"{done.stamped} (stamped: it predates revisions)" if done.stamped else "none")
    typer.echo(f"upgraded {shown} from revision {found} to {done.to} ({', '.join(done.path())})")


@app.command()
@friendly
def studies(storage: Optional[str] = STORAGE):
    """List the studies in a database, with their trials counted by state.

    Example: skipsearch studies --storage sqlite:///skipsearch.db
    """
    from skipsearch import api

    found = api.study_summaries(storage)  # typed rows: listing studies needs no pandas
    if not found:
        typer.echo(f"no studies in {urls.shown(urls.choose(storage))}")
        return
    typer.echo(f"{'study':40s} {'complete':>8s} {'pruned':>8s} {'fail':>8s}  created")
    for r in found:
        typer.echo(f"{r.study_name:40s} {r.complete:8d} {r.pruned:8d} {r.fail:8d}  {r.created_at:%Y-%m-%d %H:%M}")


@app.command()
@friendly
def delete(study: str = typer.Argument(..., help="Study name."), storage: Optional[str] = STORAGE,
           yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")):
    """Delete a study: Optuna's records and skipsearch's (trials, rungs, confirmations) together.

    Fine-tuned weights files stay on disk. Asks first, unless --yes.

    Example: skipsearch delete demo-skip --storage sqlite:///skipsearch.db --yes
    """
    from skipsearch import api

    where = urls.shown(urls.choose(storage))
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"delete needs --yes when there is no terminal to ask on (study {study!r} in {where})")
        typer.confirm(f"delete study {study!r} and all its trials from {where}?", abort=True)
    rows = api.delete(storage, study)
    typer.echo(f"deleted study {study!r} ({rows} skipsearch rows and its Optuna trials) from {where}")


app.command()(bench)  # skipsearch/cli_bench.py: the longest command, in its own module


@app.command()
@friendly
def dashboard(storage: Optional[str] = STORAGE,
              port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: dashboards/dashboard.toml, "
                                                            "8080).")):
    """Serve optuna-dashboard on 127.0.0.1 for the studies in a database, with their sample grids and plots.

    Example: skipsearch dashboard --storage sqlite:///skipsearch.db --port 8080
    """
    from skipsearch.dashboard_server import serve

    serve(storage, port, echo=lambda line: typer.echo(line, err=True))


@app.command()
@friendly
def report(studies: list[str] = typer.Argument(..., help="One or more study names."),
           storage: Optional[str] = STORAGE,
           output: Path = typer.Option(Path("report.html"), "-o", "--output", help="HTML file to write.")):
    """Write one self-contained HTML page (plotly) on one or more studies: dFID per trial, the winner's
    profile, FID against 1/N with FID-infinity, the held-out intervals, parameter importances, sample grids.

    Example: skipsearch report demo-skip -o report.html
    """
    from skipsearch import api

    path = api.report(storage, studies, output)
    typer.echo(f"wrote {path}")


def main() -> None:
    """Run the CLI; a bug's traceback is printed with every known password scrubbed out (exit 1). SIGTERM stops a
    command as Ctrl-C does (``skipsearch.interrupts``): exit 143, nothing left RUNNING."""
    try:
        with sigterm_as_interrupt():
            app(prog_name="skipsearch")
    except SystemExit:
        raise
    except KeyboardInterrupt as err:  # arrived outside a command's own handling (while starting, or ending)
        sys.exit(exit_code(err))
    except BaseException as err:  # noqa: BLE001 - the last place to keep a password out of a traceback
        sys.stderr.write(urls.scrub("".join(traceback.format_exception(err))))
        sys.exit(1)


if __name__ == "__main__":
    main()
