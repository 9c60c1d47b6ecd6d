"""Do bf16 autocast and fp32 train to the same losses? Seed noise at every rate of paper-skip1.

benchmarks/results/sweep.md compared one bf16 lab run per rate against one fp32 baseline run,
with a tolerance measured at a single rate (skips.1=0.025); the high rates (0.2, 0.5) scatter
far more while they escape the loss plateau, so that check could not tell dtype from luck.
Here the lab trains every rate of the series with K seeds in each dtype, batched as it always
trains (`dropres-lab run --headless`), and each rate's mean exact validation loss (the whole
split, no sampling noise) is compared between dtypes against the combined seed noise:
|mean_bf16 - mean_fp32| <= 3 * sqrt(sd_fp32^2 / K + sd_bf16^2 / K).

The store is kept (no --fresh): rerunning the script with the same --store only trains what
is missing and rewrites the report, so an interrupted measurement resumes.

    nice -n -15 python benchmarks/dtype_agreement.py --iters 2500 --seeds 3 --store /tmp/dtype-agree --out benchmarks/results
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import emit_report  # noqa: E402
from lab.experiments import load_experiments  # noqa: E402
from lab.store import Store  # noqa: E402

SUITE = "agree"
DTYPES = ("float32", "bfloat16")


def experiments_file(folder: Path, iters: int, seeds: int, eval_interval: int, eval_iters: int,
                     n_embd: int | None = None) -> Path:
    """paper-skip1 (4 blocks, dropout 0.2, every r1) with K seeds in both dtypes, as one suite.

    The series and its model come from the project's experiments.toml, so this measures the
    configurations users run; only length, evaluation, seeds and (with `n_embd`) the width
    are set here.
    """
    paper = load_experiments(ROOT / "experiments.toml").suites["paper-skip1"]
    rates = sorted({dict(spec.config.skips)[1] for spec in paper.runs})
    seed_list = ", ".join(str(1337 + i) for i in range(seeds))
    path = folder / "agree.toml"
    path.write_text(
        f'default_suite = "{SUITE}"\n[suites.{SUITE}]\nn_layer = 4\ndropout = 0.2\n'
        + (f"n_embd = {n_embd}\n" if n_embd else "")
        + f"max_iters = {iters}\neval_interval = {eval_interval}\neval_iters = {eval_iters}\n"
        f"seeds = [{seed_list}]\n"
        f'grid = {{ "skips.1" = [{", ".join(map(str, rates))}], dtype = ["float32", "bfloat16"] }}\n')
    return path


def train(file: Path, store: Path) -> float:
    """Train what the store lacks; wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lab", "run", "--headless", SUITE, "--file", str(file),
                           "--store", str(store)], cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"lab run failed ({proc.returncode})")
    return time.perf_counter() - t0


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def report(store_dir: Path, iters: int, seeds: int, wall: float, load: str, command: str) -> list[str]:
    store = Store.open(store_dir)
    rows = [r for r in store.runs(SUITE) if r.status == "finished" and r.max_iters == iters]
    by: dict[tuple[float, str], list] = {}
    for r in rows:
        by.setdefault((dict(r.config.skips)[1], r.config.dtype), []).append(r)
    rates = sorted({rate for rate, _ in by})
    cfg = rows[0].config
    lines = [
        "# bf16 autocast vs fp32: seed noise at every rate of paper-skip1 (issue 12)",
        "",
        f"Written by `python benchmarks/dtype_agreement.py {command}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (this invocation: {wall / 60:.0f} min; "
        f"load average at the end: {load}).",
        "",
        f"Each rate trained {seeds} times (seeds 1337..{1336 + seeds}, one data order) in each dtype by the lab "
        f"(`run --headless`, batched): {cfg.n_layer} blocks x {cfg.n_embd}, batch {cfg.batch_size} x "
        f"{cfg.block_size}, dropout {cfg.attn_dropout}, {iters} iterations. Loss: the exact validation loss "
        "(the whole split, every position once). Tolerance: 3 standard errors of the difference of "
        "means, 3 * sqrt(sd_fp32^2 / K + sd_bf16^2 / K).",
        "",
        "| rate r1 | fp32 mean ± sd | bf16 mean ± sd | bf16 - fp32 | tolerance | agree? |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    verdicts = []
    for rate in rates:
        f = [r.exact_val for r in by.get((rate, "float32"), [])]
        b = [r.exact_val for r in by.get((rate, "bfloat16"), [])]
        (fm, fs), (bm, bs) = mean_sd(f), mean_sd(b)
        tol = 3 * math.sqrt(fs**2 / len(f) + bs**2 / len(b))
        agree = abs(bm - fm) <= tol
        verdicts.append(agree)
        lines.append(f"| {rate:g} | {fm:.4f} ± {fs:.4f} | {bm:.4f} ± {bs:.4f} | {bm - fm:+.4f} | {tol:.4f} | "
                     f"{'yes' if agree else '**no**'} |")
    lines += ["", f"{sum(verdicts)} of {len(verdicts)} rates agree within seed noise.", "",
              "Have the high rates left the plateau? Mean evaluation loss on val (eval_iters batches) "
              "over the seeds, by step:", ""]
    steps = sorted({s for r in rows for s, *_ in store.metrics(r.run_id, "val")})
    shown = [s for s in steps if s % 500 == 0 or s == steps[-1]]
    lines += ["| rate r1 | dtype | " + " | ".join(str(s) for s in shown) + " |",
              "|---:|---|" + "---:|" * len(shown)]
    for rate in rates:
        for dtype in DTYPES:
            curves = [dict((s, loss) for s, _, loss, _ in store.metrics(r.run_id, "val")) for r in by.get((rate, dtype), [])]
            cells = [f"{statistics.fmean(c[s] for c in curves if s in c):.3f}" for s in shown]
            lines.append(f"| {rate:g} | {dtype} | " + " | ".join(cells) + " |")
    store.close()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=2500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--eval-iters", type=int, default=50, help="batches per split per evaluation (curves only)")
    ap.add_argument("--n-embd", type=int, default=None,
                    help="width instead of the suite's 128 (4 x 64 costs about half as much per step)")
    ap.add_argument("--store", type=Path, default=Path("/tmp/dtype-agree"))
    ap.add_argument("--out", type=Path, default=None, help="folder for dtype_agreement.md")
    args = ap.parse_args()
    args.store.mkdir(parents=True, exist_ok=True)
    file = experiments_file(args.store, args.iters, args.seeds, args.eval_interval, args.eval_iters, args.n_embd)
    wall = train(file, args.store / "runs")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    emit_report(report(args.store / "runs", args.iters, args.seeds, wall, load, " ".join(sys.argv[1:])), args.out,
                "dtype_agreement.md")


if __name__ == "__main__":
    main()
