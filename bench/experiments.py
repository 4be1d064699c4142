"""The experiment side, measured in one run.

(a) `App.runs()` on an app with 1,000 past workflow runs (3 executors each, made by the engine):
    goal < 1 s; also `--last 10`, and `scanflow runs` as a whole new process.
(b) a grid of 16 trials of 0.5 s CPU: parallel sweep (2 workers) versus the same sweep one trial at
    a time (goal: >= 1.8x on 2 cores), and the cost a sweep adds per trial versus what a normal
    sequential run adds per executor (goal: no more), both over plain `python` subprocesses.

The 1,000-run app is made once by the engine with a back end that starts no process (each
"executor" logs a score to its MLflow run the way a script would), so its record is the engine's
own, and kept in $SCANFLOW_BENCH_DIR (default: /tmp/scanflow-bench-experiments); --fresh makes it
again.

Usage: python bench/experiments.py [--repeat N] [--fresh]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

BUSY = (
    "import argparse, time\nparser = argparse.ArgumentParser()\nparser.add_argument('--seed', type=int)\n"
    "parser.parse_args()\nend = time.process_time() + {seconds}\nwhile time.process_time() < end:\n    pass\n"
)
STEP = "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--k')\nprint(parser.parse_args().k)\n"
RUNS = 1000


def median_times(funcs, repeat: int) -> list[float]:
    """Median wall time of each function, calls interleaved so that load drifts hit all alike."""
    times: list[list[float]] = [[] for _ in funcs]
    for _ in range(repeat):
        for func, out in zip(funcs, times):
            start = time.perf_counter()
            func()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


class InstantBackend:
    """A back end whose executors end at once, each logging one metric to its run as a script would."""

    name, runs_images = "instant", False

    def open(self, app_dir, workflow, tracking):
        self.uri = tracking.uri
        return tracking

    def launch(self, launch):
        from scanflow_nb.track import get_client

        get_client(self.uri).log_metric(launch.env["MLFLOW_RUN_ID"], "score", len(launch.args[-1]) / 10)
        return Ended()

    def close(self):
        pass


class Ended:
    def lines(self):
        return iter(())

    def wait(self, timeout):
        return 0

    def kill(self):
        pass

    def usage(self):
        from scanflow_nb.resources import Usage

        return Usage()  # nothing ran, nothing measured


def history_app(root: Path, fresh: bool):
    """An app with RUNS workflow runs of 3 executors (a parameter and a metric each), made by the engine."""
    from scanflow_nb import App, Executor, Workflow

    folder = root / "history-app"
    if fresh and folder.exists():
        shutil.rmtree(folder)
    app = App(folder)
    app.add(
        Workflow(
            "main",
            executors=[Executor(name, code=STEP, parameters={"k": 0}) for name in ("prepare", "train", "report")],
        )
    )
    have = len(app.runs())
    if have < RUNS:
        print(f"making {RUNS - have} workflow runs (kept in {folder})...", flush=True)
        start = time.perf_counter()
        for i in range(have, RUNS):
            for ex in app.find("main").executors:
                ex.parameters = {"k": i}
            assert app.run("main", InstantBackend(), echo=False).ok
        print(f"  made in {time.perf_counter() - start:.0f} s", flush=True)
    app.save()
    return app


def history_figures(app, repeat: int) -> None:
    frame = app.runs()
    assert len(frame) >= RUNS, len(frame)
    full, last = median_times([lambda: app.runs(), lambda: app.runs(last=10)], repeat)
    cpu = time.process_time()
    app.runs()
    cpu = time.process_time() - cpu
    cmd = [sys.executable, "-m", "scanflow_nb.cli", "--file", str(app.path), "runs", "--last", "10"]
    (cold,) = median_times([lambda: subprocess.run(cmd, check=True, capture_output=True)], max(1, repeat // 2))
    print(
        f"(a) app.runs() over {len(frame)} workflow runs ({frame.shape[1]} columns): {full * 1000:.0f} ms "
        f"(CPU {cpu * 1000:.0f} ms; goal < 1 s); last=10: {last * 1000:.0f} ms; "
        f"`scanflow runs --last 10` as a new process: {cold:.2f} s"
    )


def sweep_figures(root: Path, repeat: int) -> None:
    from scanflow_nb import App, Executor, Workflow

    app = App(root / "sweep-app")
    trial = Executor("busy", code=BUSY.format(seconds=0.5), parameters={"seed": 0})
    app.add(Workflow("main", executors=[trial]))
    app.add(
        Workflow("chain", executors=[Executor(f"s{i}", code=trial.code, parameters={"seed": i}) for i in range(16)])
    )
    grid = {"seed": list(range(16))}
    app.run("chain", echo=False)  # the store exists before anything is timed
    script = app.workspace.script("main", trial)

    def plain():
        for seed in grid["seed"]:
            subprocess.run([sys.executable, str(script), "--seed", str(seed)], check=True, cwd=app.path)

    def sweep(workers):
        return lambda: app.sweep("busy", grid=grid, max_workers=workers, echo=False)

    plain_s, one_s, two_s, chain_s = median_times(
        [plain, sweep(1), sweep(2), lambda: app.run("chain", echo=False, force=True)], repeat
    )
    print(
        f"(b) grid of 16 x 0.5 s CPU: one trial at a time {one_s:.2f} s, 2 at a time {two_s:.2f} s, "
        f"speedup {one_s / two_s:.2f}x (goal >= 1.8x); plain python one after the other {plain_s:.2f} s"
    )
    print(
        f"    added per trial (sweep, 1 worker, over plain): {(one_s - plain_s) / 16 * 1000:.0f} ms; added per "
        f"executor in a normal 16-step sequential run: {(chain_s - plain_s) / 16 * 1000:.0f} ms (goal: no more)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is printed")
    parser.add_argument("--fresh", action="store_true", help="make the 1,000-run app again")
    parser.add_argument("--part", choices=["history", "sweep", "all"], default="all")
    args = parser.parse_args()
    root = Path(os.environ.get("SCANFLOW_BENCH_DIR", "/tmp/scanflow-bench-experiments"))
    root.mkdir(parents=True, exist_ok=True)
    if args.part in ("history", "all"):
        app = history_app(root, args.fresh)
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; median of {args.repeat} runs")
        history_figures(app, args.repeat)
    if args.part in ("sweep", "all"):
        shutil.rmtree(root / "sweep-app", ignore_errors=True)
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; median of {args.repeat} runs")
        sweep_figures(root, args.repeat)
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
