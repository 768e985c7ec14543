"""The second opinion's plan: how wide its paired interval is for the same samples split two ways, N per seed
set against seed sets (3 x 200, the default, against 6 x 100, ...), on one real candidate and the baseline.

    python scripts/opinion_plans.py [--spec studies/demo-skip-19nfe.yaml] [--rho 1.033 1.318] [--plans 200x3 100x6]
                                    [--blocks 2]

Each block is a fresh stretch of held-out seeds (far above the spec's confirmation); each plan scores the
candidate and the baseline there through the study's own code (``versus_judge.second_space_fids``: the opinion's
space, debiased FID, paired by seed set) and its Student-t interval (``verdict.paired_interval``). Equal samples
per plan, so the widths compare what the split buys: the t quantile of k - 1 degrees of freedom against the
noise of a smaller N.
"""

from __future__ import annotations

import argparse
import statistics
import time

from skipsearch.bench.versus_judge import second_space_fids
from skipsearch.bench.versus_plain import second_space
from skipsearch.methods.skip_tuning.schedules import LinearSkip
from skipsearch.search.verdict import paired_interval
from skipsearch.specfile import load_spec

BLOCK = 50_000_000  # seeds per block: far above any confirmation's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="studies/demo-skip-19nfe.yaml")
    parser.add_argument("--rho", type=float, nargs=2, default=(1.033, 1.318), metavar=("TOP", "BOTTOM"))
    parser.add_argument("--plans", nargs="+", default=["200x3", "100x6"])
    parser.add_argument("--blocks", type=int, default=2)
    args = parser.parse_args()
    spec = load_spec(args.spec)
    label, why = second_space(spec)
    if label is None:
        raise SystemExit(f"no second space: {why}")
    if getattr(spec.search, "family", None) != "linear":
        raise SystemExit("this script compares a linear Skip-Tuning schedule (--rho) with the baseline")
    baseline = LinearSkip()  # rho = 1 at every skip: the model as it is
    candidate = LinearSkip(rho_top=args.rho[0], rho_bottom=args.rho[1])
    for plan in args.plans:
        n, sets = (int(x) for x in plan.split("x"))
        widths, means = [], []
        for block in range(args.blocks):
            c = spec.confirm.model_copy(update={"n": n, "seed_sets": sets, "seed": BLOCK * (block + 1)})
            o = c.second_opinion.model_copy(update={"n": n, "seed_sets": sets})
            s = spec.model_copy(update={"confirm": c.model_copy(update={"second_opinion": o})})
            start = time.perf_counter()
            mine = second_space_fids(s, label, candidate, f"{plan} block {block}, candidate")
            base = second_space_fids(s, label, baseline, f"{plan} block {block}, baseline")
            iv = paired_interval([mine[j] - base[j] for j in sorted(mine)])
            widths.append((iv.high - iv.low) / 2)
            means.append(iv.mean)
            print(f"{plan} block {block}: dFID {iv.mean:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}] "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        print(f"{plan}: mean half-width {statistics.fmean(widths):.4f}, dFID per block "
              f"{', '.join(f'{m:+.3f}' for m in means)}", flush=True)


if __name__ == "__main__":
    main()
