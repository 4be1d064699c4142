"""What scanflow_nb costs on top of plain Python, measured in one run.

(a) a 5-step sequential workflow of ~0.5 s CPU steps, tracked in the embedded MLflow store, versus
    the same 5 scripts run as plain `python` subprocesses (goal: ratio <= 1.1), and the fixed cost
    per executor once the store exists (goal: < 50 ms);
(b) a 2-wide parallel group of CPU-bound executors versus the same two one after the other
    (goal: speedup >= 1.8 on 2 cores);
(c) `%load_ext scanflow_nb` in a fresh IPython shell (goal: < 0.5 s).

Usage: python bench/overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

BUSY = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end:\n    pass\n"


def timed_pair(first, second, repeat: int) -> tuple[float, float]:
    """Median wall times of `first()` and `second()`, interleaved so that load drifts hit both alike."""
    a, b = [], []
    for _ in range(repeat):
        for func, out in ((first, a), (second, b)):
            start = time.perf_counter()
            func()
            out.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def plain_versus_tracked(root: Path, name: str, code: str, steps: int, repeat: int) -> tuple[float, float]:
    """A sequential workflow of `steps` executors running `code`, versus the same scripts run plainly."""
    from scanflow_nb import App, Executor, Workflow

    app = App(root / name)
    app.add(Workflow(name, executors=[Executor(f"step{i}", code=code) for i in range(steps)]))
    app.run(name, echo=False)  # creates the store
    scripts = [app.workspace.script(name, ex) for ex in app.find(name).executors]

    def plain():
        for script in scripts:
            subprocess.run([sys.executable, str(script)], check=True, cwd=app.path)

    def tracked():
        assert app.run(name, echo=False, force=True).ok

    return timed_pair(plain, tracked, repeat)


def parallel_speedup(root: Path, repeat: int) -> tuple[float, float]:
    from scanflow_nb import App, Executor, Workflow

    app = App(root / "par")
    steps = [Executor(f"cpu{i}", code=BUSY.format(seconds=1.5)) for i in range(2)]
    app.add(Workflow("one_by_one", executors=steps))
    app.add(Workflow("side_by_side", parallel=True, executors=[Executor(f"p{e.name}", code=e.code) for e in steps]))
    app.run("one_by_one", echo=False)
    return timed_pair(
        lambda: app.run("one_by_one", echo=False, force=True),
        lambda: app.run("side_by_side", echo=False, force=True),
        repeat,
    )


def load_ext_time(repeat: int) -> float:
    code = (
        "import time\nfrom IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\nstart = time.perf_counter()\n"
        "shell.run_line_magic('load_ext', 'scanflow_nb')\nprint(time.perf_counter() - start)\n"
    )
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(repeat)
    ]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is printed")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; median of {args.repeat} runs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain, tracked = plain_versus_tracked(root, "seq", BUSY.format(seconds=0.5), 5, args.repeat)
        print(
            f"(a) 5 x 0.5 s CPU, sequential: plain python {plain:.2f} s, scanflow_nb with tracking "
            f"{tracked:.2f} s, ratio {tracked / plain:.3f} (goal <= 1.1)"
        )
        plain, tracked = plain_versus_tracked(root, "noop", "pass\n", 10, args.repeat)
        print(
            f"    fixed cost per executor (10 no-op steps: {plain:.2f} s plain, {tracked:.2f} s tracked): "
            f"{(tracked - plain) / 10 * 1000:.0f} ms (goal < 50 ms)"
        )
        serial, parallel = parallel_speedup(root, args.repeat)
        print(
            f"(b) 2 x 1.5 s CPU: one after the other {serial:.2f} s, parallel group {parallel:.2f} s, "
            f"speedup {serial / parallel:.2f}x (goal >= 1.8x)"
        )
    load = load_ext_time(max(args.repeat, 5))
    print(f"(c) %load_ext scanflow_nb in a fresh shell: {load * 1000:.0f} ms (goal < 500 ms)")


if __name__ == "__main__":
    main()
