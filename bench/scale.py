"""How scanflow_nb's costs grow with the number of executors, and what a cold start costs.

For 10, 100 and 1,000 trivial executors in three shapes (sequential: one after the other;
parallel: one parallel group; nested: a sequential workflow of parallel groups of 10), each in a
fresh process standing for a kernel:
- the run's wall time per executor, beside the same scripts run as plain subprocesses the same way
  (one by one, or as many at once as the run allows), and the difference: the cost added per
  executor (goal: no higher at 1,000 than at 100), and the kernel's own CPU time per executor (every
  thread of it: the engine, the MLflow writer, the samplers), which load on a shared machine
  disturbs much less than wall time;
- a rerun with nothing changed, per executor (goal: <= 2 ms);
- the kernel's memory growth over the runs (goal: < 50 MB at 1,000).
Then the cold start: a one-step `App.open(path).run(...)` and `scanflow run` as whole processes
(goal: <= 1.5 s), `import mlflow` alone, MLflow alone doing the same tracked work (open the store,
create the run, run the step, close the run: the floor for a tracked run), what scanflow_nb adds over
that floor, and the import time of scanflow_nb's own modules.

Usage: python bench/scale.py [--sizes 10 100 1000] [--shapes sequential parallel nested] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SHAPES = ("sequential", "parallel", "nested")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kb / 1024


def workflow(shape: str, size: int):
    from scanflow_nb import Executor, Workflow

    def steps(prefix: str, n: int):
        return [Executor(f"{prefix}{i}", code="pass\n") for i in range(n)]

    if shape == "sequential":
        return Workflow("w", executors=steps("e", size))
    if shape == "parallel":
        return Workflow("w", parallel=True, executors=steps("e", size))
    groups = [Workflow(f"g{g}", parallel=True, executors=steps(f"g{g}e", 10)) for g in range(max(1, size // 10))]
    return Workflow("w", workflows=groups)


def measure(shape: str, size: int, repeat: int) -> dict:
    """In this process (a stand-in for a kernel): one run, reruns with nothing changed, plain subprocesses."""
    from scanflow_nb import App, Executor, Workflow

    app = App(Path(tempfile.mkdtemp()) / "app")
    app.add(Workflow("warmup", executors=[Executor("x", code="pass\n")]))
    app.add(workflow(shape, size))
    assert app.run("warmup", echo=False).ok  # MLflow imported, the store created: what a kernel has after one run
    before = rss_mb()
    cpu = time.process_time()
    start = time.perf_counter()
    result = app.run("w", echo=False)
    run = time.perf_counter() - start
    cpu = time.process_time() - cpu
    assert result.ok and len(result.executors) == size, result.summary()
    reruns = []
    for _ in range(repeat):
        start = time.perf_counter()
        again = app.run("w", echo=False)
        reruns.append(time.perf_counter() - start)
        assert {r.status for r in again.executors.values()} == {"cached"}
    grown = rss_mb() - before

    scripts = [app.workspace.script(wf.name, ex) for top in [app.find("w")] for wf, ex in top.all_executors()]
    width = 1 if shape == "sequential" else os.cpu_count() or 2
    start = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(lambda s: subprocess.run([sys.executable, "-P", str(s)], check=True, cwd=app.path), scripts))
    plain = time.perf_counter() - start
    return {
        "shape": shape,
        "size": size,
        "run_ms": run / size * 1000,
        "plain_ms": plain / size * 1000,
        "cpu_ms": cpu / size * 1000,
        "rerun_ms": statistics.median(reruns) / size * 1000,
        "memory_mb": grown,
    }


def cold(repeat: int) -> None:
    """Whole processes: one-step runs (store there, and first ever), the CLI, and the import floor."""
    from scanflow_nb import App, Executor, Workflow

    folder = Path(tempfile.mkdtemp()) / "app"
    app = App(folder)
    app.add(Workflow("w", executors=[Executor("one", code="print('one')\n")]))
    app.save()
    run = f"from scanflow_nb import App; assert App.open({str(folder)!r}).run('w', echo=False, force=True).ok"
    mlflow_alone = (
        "import subprocess, sys; from mlflow.tracking import MlflowClient; "
        f"c = MlflowClient({app.store_uri!r}); r = c.create_run(c.get_experiment_by_name('w').experiment_id); "
        "subprocess.run([sys.executable, '-c', 'print(1)'], check=True); c.set_terminated(r.info.run_id)"
    )

    def whole(args: list[str]) -> tuple[float, float]:
        start = time.perf_counter()
        out = subprocess.run(
            ["/usr/bin/time", "-f", "@rss %M", *args], capture_output=True, text=True, check=True, cwd=folder
        )
        took = time.perf_counter() - start
        return took, int(re.search(r"@rss (\d+)", out.stderr).group(1)) / 1024

    first, first_rss = whole([sys.executable, "-c", run])  # creates the store
    api = [whole([sys.executable, "-c", run]) for _ in range(repeat)]
    cli = [whole([sys.executable, "-m", "scanflow_nb.cli", "--file", str(folder), "run", "w", "--force"])]
    cli += [whole([sys.executable, "-m", "scanflow_nb.cli", "--file", str(folder), "run", "w", "--force"])]
    imports = [whole([sys.executable, "-c", "import mlflow"])[0] for _ in range(repeat)]
    floor = [whole([sys.executable, "-c", mlflow_alone])[0] for _ in range(repeat)]
    bare = [whole([sys.executable, "-c", "pass"])[0] for _ in range(repeat)]
    ours = statistics.median(own_import_ms() for _ in range(repeat))
    print("cold start, whole processes (median):")
    print(
        f"    one-step App.open(path).run(...):       {statistics.median(t for t, _ in api):.2f} s, "
        f"peak {statistics.median(m for _, m in api):.0f} MB (goal <= 1.5 s)"
    )
    print(f"    the same, first ever (creates the store): {first:.2f} s, peak {first_rss:.0f} MB")
    print(f"    scanflow --file APP run w --force:       {statistics.median(t for t, _ in cli):.2f} s")
    print(
        f"    python -c 'import mlflow':              {statistics.median(imports):.2f} s; "
        f"python -c pass: {statistics.median(bare):.2f} s"
    )
    floor_s = statistics.median(floor)
    added = statistics.median(t for t, _ in api) - floor_s
    print(f"    MLflow alone, same tracked step (floor): {floor_s:.2f} s; scanflow_nb adds {added:+.2f} s")
    print(f"    scanflow_nb's own modules for a run:     {ours:.0f} ms of import")


def own_import_ms() -> float:
    """Import time of scanflow_nb's own modules (self time, -X importtime) on the way to a run."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import scanflow_nb.app, scanflow_nb.run.engine"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    own = [int(m.group(1)) for m in re.finditer(r"import time:\s+(\d+) \|\s+\d+ \|\s+scanflow_nb", out)]
    return sum(own) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--repeat", type=int, default=5, help="no-change reruns and cold starts; medians printed")
    parser.add_argument("--no-cold", action="store_true", help="leave out the cold start")
    parser.add_argument("--child", nargs=2, metavar=("SHAPE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.repeat)))
        return
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print("executors  shape        run/executor  plain/executor  added   kernel CPU  no-change rerun  memory growth")
    for size in args.sizes:
        for shape in args.shapes:
            child = [sys.executable, __file__, "--child", shape, str(size), "--repeat", str(args.repeat)]
            row = json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            print(
                f"{size:>9}  {shape:<11} {row['run_ms']:9.1f} ms  {row['plain_ms']:11.1f} ms  "
                f"{row['run_ms'] - row['plain_ms']:+5.1f} ms  {row['cpu_ms']:7.1f} ms  {row['rerun_ms']:10.2f} ms"
                f"  {row['memory_mb']:12.1f} MB"
            )
    print("goals: added per executor no higher at 1,000 than at 100; rerun <= 2 ms; memory growth < 50 MB")
    if not args.no_cold:
        cold(args.repeat)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
