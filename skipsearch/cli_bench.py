"""``skipsearch bench``: the performance record and the benchmarks (``skipsearch.bench``), its options and
the dispatch to the one benchmark asked for. Kept apart from ``cli`` because it is the longest command by far;
``cli`` registers it with the others, in its place in ``--help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from skipsearch.cli_errors import friendly


@friendly
def bench(spec: Path = typer.Option(Path("studies/demo-skip.yaml"), help="Spec whose trial is timed."),
          trials: Optional[int] = typer.Option(None, min=1, max=1000, show_default=False,
                                               help="Timed trials, after one warm-up (default 3); with "
                                                    "--versus-plain or --pruners, the study's trial budget "
                                                    "(default: the spec's)."),
          use_ray: bool = typer.Option(False, "--ray", help="Compare in-process with Ray at 1 and 2 workers."),
          imports: bool = typer.Option(False, "--imports", help="Time `skipsearch.apply`'s import against torch's, "
                                                                 "and the CLI's --help and read-only verbs against "
                                                                 "`import optuna`."),
          hooks: bool = typer.Option(False, "--hooks", help="Time Skip-Tuning's hooks per network call against the "
                                                           "bare model, for each model family."),
          device: str = typer.Option("auto", help="Device for --hooks (cpu, cuda, auto)."),
          quick: bool = typer.Option(False, "--quick", help="Leave out two timings of a trial's parts: FID on "
                                                             "2048-d Gaussian features against torch-fidelity's (N = "
                                                             "1000 and 4096; about a minute on a CPU) and the "
                                                             "extractor precisions (each one this device computes "
                                                             "against fp32: speed and FID deviation; minutes with "
                                                             "Inception on a CPU). A diff_tuning spec's bench has "
                                                             "neither."),
          versus_plain: bool = typer.Option(False, "--versus-plain",
                                            help="The spec's study against a plain Optuna + torch-fidelity loop with "
                                                 "the same network evaluations: held-out dFID of each winner and "
                                                 "the evaluations each needed to reach it."),
          calibration: bool = typer.Option(False, "--calibration",
                                           help="Many short studies on a null space (the baseline on shifted "
                                                "seeds: true dFID 0) and on a known effect: the rate of claimed "
                                                "wins on the null and the coverage of the claimed intervals, for "
                                                "skipsearch's race and the plain loop's 'best trial beats the "
                                                "baseline'."),
          pruners: bool = typer.Option(False, "--pruners",
                                       help="Early stopping compared on the same trials: successive halving on "
                                            "rungs, Optuna's WilcoxonPruner on paired per-chunk FIDs, and none "
                                            "(samples spent, and the top candidates each hands on)."),
          chunks: int = typer.Option(10, "--chunks", min=4, max=1000,
                                     help="With --pruners: the chunks of metric.n the Wilcoxon rule pairs."),
          studies: int = typer.Option(40, "--studies", min=2, max=10000,
                                      help="With --calibration: null studies (the known effect gets half as "
                                           "many)."),
          repeats: Optional[int] = typer.Option(None, min=1, max=100, show_default=False,
                                                help="With --versus-plain or --pruners: how many repeats "
                                                     "(sampler seeds 0, 1, ...; default 3); with --imports: runs of "
                                                     "each command "
                                                     "(default 5)."),
          first_repeat: int = typer.Option(0, "--first-repeat", min=0, max=99,
                                           help="With --versus-plain: the first repeat's sampler seed (repeats "
                                                "run from it). A repeat gives the same figures alone or in a "
                                                "longer run, so repeats can be run apart."),
          plain_budget: float = typer.Option(3.0, "--plain-budget", min=1.0, max=10.0,
                                             help="With --versus-plain: the plain loop runs on to this many times "
                                                  "skipsearch's network evaluations, to find when its winner is "
                                                  "first as good as skipsearch's on the held-out sets (its "
                                                  "equal-budget winner is the same run cut at 1x)."),
          json_out: Optional[Path] = typer.Option(
              None, "--json", help="Also write the records to this JSON file ({name, value, target, met, device}).")):
    """The performance record: whole trials and the share outside network passes and features, then a trial's
    parts side by side with their bare equivalents (sampler vs a bare loop of its network calls, features vs
    torch-fidelity's extractor, FID and KID vs torch-fidelity's, common random numbers).

    With --ray: also the same trials in-process and on a local Ray with 1 and 2 workers.
    A spec's method may time what matters to it instead (a method that fine-tunes: training steps/s
    against a bare loop). With --imports: what `skipsearch.apply` costs to import, against torch, and the
    CLI's --help, studies, best and export against `import optuna` (fresh interpreters, medians). With
    --hooks: the hooks' cost per network call against the bare model, per model family. With --versus-plain:
    the spec's study (rungs, baseline, confirmation) against the loop a user would write with Optuna and
    torch-fidelity (TPE, N = confirm.n fresh seeds per trial), on the same budget of network evaluations
    (samples x NFE), both winners judged on the spec's held-out seed sets, --repeats times; the plain loop runs on
    to --plain-budget times that budget, to find when its winner first matches skipsearch's on those sets. With
    --calibration: --studies null studies (the baseline on shifted seeds raced as candidates) and half as many on
    a known Skip-Tuning effect, real samples of the embedded model: claimed-win rates and coverage, both rules.
    With --pruners: the spec's sampler proposes --trials points once (on every search seed), and each early-stopping
    rule is replayed on them through Optuna's pruner: search samples spent, and the top candidates handed on.

    Example: skipsearch bench --trials 3;  skipsearch bench --ray --trials 8;
    skipsearch bench --spec studies/demo-difftuning.yaml;  skipsearch bench --imports;  skipsearch bench --hooks;
    skipsearch bench --json bench.json;  skipsearch bench --versus-plain --trials 12 --repeats 3;
    skipsearch bench --versus-plain --first-repeat 1 --repeats 2;
    skipsearch bench --calibration --studies 40;  skipsearch bench --pruners --repeats 3
    """
    from skipsearch.bench import show, write_json

    if imports:
        from skipsearch.bench.imports import bench_imports

        records = bench_imports(repeats or 5)
    elif hooks:
        from skipsearch.bench.hooks import bench_hooks

        records = bench_hooks(device)
    elif calibration:
        from skipsearch.bench.calibration import bench_calibration

        records = bench_calibration(studies)
    elif pruners:
        from skipsearch.bench.pruners import bench_pruners

        records = bench_pruners(spec, repeats or 3, trials, chunks)
    elif versus_plain:
        from skipsearch.bench.versus_plain import bench_versus_plain

        records = bench_versus_plain(spec, repeats or 3, trials, plain_budget, first_repeat)
    else:
        from skipsearch.bench.suites import bench_spec

        records = bench_spec(spec, trials or 3, use_ray, quick)
    show(records, "benchmark record:")
    if json_out is not None:
        write_json(json_out, records)
        typer.echo(f"wrote {len(records)} records to {json_out}")
