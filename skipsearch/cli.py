"""Command line: parses arguments and calls the public API; user mistakes exit 2 with one clear message."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from skipsearch.errors import UserError
from skipsearch.spec import DEFAULT_STORAGE

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Search Skip-Tuning coefficients that lower a diffusion model's FID.")
STORAGE = typer.Option(DEFAULT_STORAGE, "--storage", help="SQLAlchemy database URL (SQLite file or PostgreSQL).")


def friendly(fn):
    """Turn user mistakes into 'error: ...' and exit code 2; an interrupt keeps what was recorded."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: every completed trial is saved; run the same command again to continue.",
                       err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@friendly
def run(spec: Path = typer.Argument(..., help="Study spec (YAML), e.g. studies/demo-skip.yaml."),
        storage: Optional[str] = typer.Option(None, help="Database URL; overrides the spec's storage."),
        trials: Optional[int] = typer.Option(None, min=1,
                                             help="Trial budget (baseline included); overrides the spec."),
        workers: Optional[int] = typer.Option(None, min=1, help="Run K trials at a time on Ray workers."),
        address: Optional[str] = typer.Option(None, help="Join this Ray cluster (e.g. 10.0.0.5:6379) "
                                                         "instead of starting a local one."),
        cpus_per_trial: float = typer.Option(1.0, min=0.01, help="CPUs Ray reserves per trial."),
        gpus_per_trial: float = typer.Option(0.0, min=0.0, help="GPUs per trial; fractions share a GPU."),
        max_failures: int = typer.Option(2, min=0, help="Retries of a trial whose Ray worker was lost.")):
    """Run (or continue) a study, then confirm the best trials on held-out seeds.

    In this process by default; on Ray with --workers or --address.

    Example: skipsearch run studies/demo-skip.yaml --trials 40 --workers 2
    """
    from skipsearch import api, report
    from skipsearch.spec import load_spec
    from skipsearch.storage import safe_url
    from skipsearch.tune import Placement

    loaded = load_spec(spec)
    placement = None
    if workers is not None or address is not None:
        placement = Placement(workers or 2, address, cpus_per_trial, gpus_per_trial, max_failures)
    where = "in this process" if placement is None else f"on Ray, {placement.workers} trial(s) at a time"
    typer.echo(f"study {loaded.name}: {where}; results go to {safe_url(storage or loaded.storage)} "
               f"(Optuna storage and skipsearch tables)")
    result = api.run(loaded, storage, trials, placement)
    s = loaded.sampler
    header = (f"Study {result.study}: model {loaded.model.name}, {s.name} {s.steps} steps = {s.config().nfe} NFE, "
              f"FID/KID in the {loaded.metric.extractor} feature space vs {loaded.metric.reference}")
    if loaded.kind == "diff_tuning":
        f = loaded.finetune
        header += (f"\nDiff-Tuning: fine-tuned on {f.n_images or 'all'} images of {f.data}; the baseline is plain "
                   f"fine-tuning (s = 0, r = 0) for {f.steps} steps at lr {f.lr:g}; source FID vs "
                   f"{f.source_reference} measures forgetting")
    report.print_summary(header, result.trials, result.confirmation, pareto=result.pareto)
    typer.echo(f"stored in {result.storage}; export with: skipsearch export {result.study} --storage "
               f"{result.storage} --format yaml -o {result.study}.yaml")


@app.command()
@friendly
def best(study: str = typer.Argument(..., help="Study name."), storage: str = STORAGE,
         as_json: bool = typer.Option(False, "--json", help="Print the full record as JSON.")):
    """Show a study's winner (confirmed on held-out seeds if it was), with provenance.

    Example: skipsearch best demo-skip --storage sqlite:///skipsearch.db
    """
    from skipsearch import api
    from skipsearch.report import describe

    rec = api.best(storage, study)
    if as_json:
        typer.echo(json.dumps(rec, indent=2))
        return
    s, c = rec["search"], rec["confirmation"]
    typer.echo(f"study {study}: trial {rec['trial']} ({rec['role']}) "
               f"{describe(json.dumps(rec['coefficients']))}")
    typer.echo(f"  search  N={s['n']}: FID {s['fid']:.4f} (dFID {s['delta_fid']:+.4f}), KID {s['kid']:.5f} "
               f"[{rec['metric']['extractor']}]")
    if c:
        typer.echo(f"  held-out N={c['n']} x {len(c['seed_sets'])} seed sets: FID {c['heldout_fid']:.4f}, "
                   f"dFID {c['delta_fid']:+.4f} ± {c['delta_fid_std']:.4f}")
    else:
        typer.echo("  not confirmed on held-out seeds yet")
    if rec.get("source"):
        typer.echo(f"  source FID (forgetting, vs {rec['source']['reference']}): {rec['source']['fid']:.4f}")
    if rec.get("weights"):
        typer.echo(f"  fine-tuned weights: {rec['weights']['path']} (sha256 {rec['weights']['sha256_16']})")
    if rec.get("pareto_front"):
        from rich.console import Console

        from skipsearch.report import pareto_table

        Console(width=180).print(pareto_table(api.pareto(storage, study)))


@app.command()
@friendly
def export(study: str = typer.Argument(..., help="Study name."), storage: str = STORAGE,
           fmt: Optional[str] = typer.Option(None, "--format", help="yaml, json or toml (default: from -o)."),
           output: Path = typer.Option(..., "-o", "--output", help="File to write."),
           trial: Optional[int] = typer.Option(None, help="Export this trial instead of the winner.")):
    """Write the winning coefficients, with provenance, to a YAML/JSON/TOML file.

    Example: skipsearch export demo-skip --storage sqlite:///skipsearch.db --format toml -o best.toml
    """
    from skipsearch import api

    typer.echo(f"wrote {api.export(storage, study, output, fmt, trial)}")


@app.command()
@friendly
def verify(file: Path = typer.Argument(..., help="A coefficient file written by export."),
           device: str = typer.Option("cpu", help="cpu or cuda.")):
    """Re-sample with a coefficient file applied and compare with the FID it records.

    Example: skipsearch verify best.yaml
    """
    from skipsearch import api

    r = api.verify(file, device)
    typer.echo(f"recorded FID {r['recorded_fid']:.8f}, reproduced {r['reproduced_fid']:.8f} "
               f"(|diff| {abs(r['recorded_fid'] - r['reproduced_fid']):.2e})")
    if not r["reference_hash_match"]:
        typer.echo("warning: the reference data changed since the FID was recorded", err=True)


@app.command()
@friendly
def bench(spec: Path = typer.Option(Path("studies/demo-skip.yaml"), help="Spec whose trial is timed."),
          trials: int = typer.Option(3, min=1, help="Timed trials (after one warm-up)."),
          use_ray: bool = typer.Option(False, "--ray", help="Compare in-process with Ray at 1 and 2 workers.")):
    """Time one trial and the share spent in network forward passes and feature extraction.

    With --ray: the same trials in-process and on a local Ray with 1 and 2 workers, with the ratios.
    With a diff_tuning spec: fine-tuning steps/s of a trial against a bare training loop, and the
    knowledge bank's share of the first trial.

    Example: skipsearch bench --trials 3;  skipsearch bench --ray --trials 8;
    skipsearch bench --spec studies/demo-difftuning.yaml
    """
    from skipsearch.bench import bench_difftuning, bench_ray, bench_trial
    from skipsearch.spec import load_spec

    if load_spec(spec).kind == "diff_tuning":
        if use_ray:
            raise UserError("--ray benchmarks Skip-Tuning trials; diff_tuning studies run in-process")
        bench_difftuning(spec)
    elif use_ray:
        bench_ray(spec, trials)
    else:
        bench_trial(spec, trials)


def main() -> None:
    app(prog_name="skipsearch")


if __name__ == "__main__":
    sys.exit(main())
