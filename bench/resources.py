"""Declared CPUs versus none: a parallel group of CPU-heavy steps, measured in one run.

Each step multiplies matrices with numpy, whose BLAS uses every core unless told otherwise. The
same group of N steps runs three ways on the local back end:
  none     no `cpus`: all steps at once (max_workers = the CPU count), each with every core;
  all      `cpus` = the machine's CPUs: one step at a time, each with every core;
  one      `cpus=1`: as many at once as there are CPUs, each single-threaded (OMP_NUM_THREADS=1).
Goals: total time with `cpus` no worse than without, and no step slower than alone by more than 10%.
Also prints the CPU time and peak memory every step recorded in MLflow.

Beside each group, the same scripts run as plain `python -P` subprocesses scheduled the same way
(as many at once, the same OMP_NUM_THREADS), with no engine and no tracking: what the steps
themselves make of the machine. The engine's share is the difference; where the plain group misses
a goal too, the steps (their serial parts, the memory bus) miss it, not the engine.

Each group runs --repeat times, engine and plain in turn; the medians are printed (one run's
slowest step is mostly noise).

Usage: python bench/resources.py [--steps N] [--size N] [--rounds N] [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

STEP = """\
import numpy as np
rng = np.random.default_rng(0)
a = rng.random(({size}, {size}))
for _ in range({rounds}):
    a = a @ a
    a /= np.abs(a).max()
"""


def run(app, name: str):
    result = app.run(name, echo=False, force=True)
    assert result.ok, result.summary()
    return result


def plain(scripts: list[Path], width: int, threads: str | None, cwd: Path) -> tuple[float, list[float]]:
    """The scripts as plain subprocesses, `width` at once: (total, each one's wall time)."""
    env = {**os.environ, **({"OMP_NUM_THREADS": threads} if threads else {})}

    def one(script: Path) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-P", str(script)], check=True, cwd=cwd, env=env)
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        durations = list(pool.map(one, scripts))
    return time.perf_counter() - started, durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps in the parallel group (default 4)")
    parser.add_argument("--size", type=int, default=1500, help="matrix size (default 1500)")
    parser.add_argument("--rounds", type=int, default=12, help="multiplications per step (default 12)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each group; medians printed (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 steps, 6 rounds, 1 run of each group")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.repeat = 2, 6, 1

    from scanflow_nb import App, Executor, Workflow
    from scanflow_nb.run.machine import this_machine

    cpus = this_machine().cpus
    width = os.cpu_count() or 2  # the engine's default max_workers
    code = STEP.format(size=args.size, rounds=args.rounds)
    root = Path(tempfile.mkdtemp(prefix="scanflow-bench-resources-"))
    app = App(root / "app")
    app.path.mkdir(parents=True)
    steps = lambda **kw: [Executor(f"s{i}", code=code, **kw) for i in range(args.steps)]  # noqa: E731
    app.add(Workflow("alone", executors=[Executor("s", code=code)]))
    app.add(Workflow("alone1", executors=[Executor("s", code=code, cpus=1)]))
    app.add(Workflow("none", parallel=True, executors=steps()))
    app.add(Workflow("all", parallel=True, executors=steps(cpus=cpus)))
    app.add(Workflow("one", parallel=True, executors=steps(cpus=1)))
    run(app, "alone")  # warms the store, the page cache and numpy's import
    scripts = [app.workspace.script("none", ex) for ex in app.find("none").executors]

    alone = statistics.median(run(app, "alone").executors["alone/s"].duration for _ in range(3))
    alone1 = statistics.median(run(app, "alone1").executors["alone1/s"].duration for _ in range(3))
    plain_alone = statistics.median(plain(scripts[:1], 1, None, app.path)[0] for _ in range(3))
    plain_alone1 = statistics.median(plain(scripts[:1], 1, "1", app.path)[0] for _ in range(3))
    print(f"{args.steps} steps of {args.rounds} products of {args.size}x{args.size} matrices, {cpus:g} CPUs")
    print(
        f"alone: {alone:.2f} s with every core, {alone1:.2f} s single-threaded"
        f" (plain python: {plain_alone:.2f} s, {plain_alone1:.2f} s)"
    )
    print(
        f"{'group':<6} {'total s':>8} {'step s (median, max)':>22} {'max / alone':>12}  cpu_s  peak MiB"
        f"  | plain: {'total s':>7} {'max step s':>10} {'max / alone':>11}"
    )
    totals, plain_totals = {}, {}
    # name -> (reference step alone, engine's and plain's), plain runs: (at once, OMP_NUM_THREADS)
    groups = {
        "none": (alone, plain_alone, width, None),
        "all": (alone, plain_alone, max(1, int(width // cpus)), str(int(cpus))),
        "one": (alone1, plain_alone1, width, "1"),
    }
    for name, (reference, plain_reference, at_once, threads) in groups.items():
        rounds, plain_rounds = [], []  # (total, durations[, results]) of each run
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = run(app, name)
            rounds.append((time.perf_counter() - started, [r.duration for r in result.executors.values()], result))
            plain_rounds.append(plain(scripts, at_once, threads, app.path))
        totals[name] = statistics.median(total for total, _, _ in rounds)
        plain_totals[name] = statistics.median(total for total, _ in plain_rounds)
        slowest = statistics.median(max(durations) for _, durations, _ in rounds)
        plain_slowest = statistics.median(max(durations) for _, durations in plain_rounds)
        steps_run = [r for _, _, result in rounds for r in result.executors.values()]
        print(
            f"{name:<6} {totals[name]:8.2f} {statistics.median(r.duration for r in steps_run):14.2f} {slowest:7.2f}"
            f" {slowest / reference:12.2f}  {statistics.median(r.cpu_s for r in steps_run):5.2f}"
            f"  {statistics.median(r.peak_rss_mb for r in steps_run):8.0f}"
            f"  | {plain_totals[name]:14.2f} {plain_slowest:10.2f} {plain_slowest / plain_reference:11.2f}"
        )
    for label, table in (("scanflow_nb", totals), ("plain", plain_totals)):
        print(
            f"total with cpus / without, {label}: all {table['all'] / table['none']:.2f},"
            f" one {table['one'] / table['none']:.2f}"
        )
    print(
        "the engine's share, total over plain: "
        + ", ".join(f"{name} {totals[name] / plain_totals[name]:.2f}" for name in groups)
    )
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
