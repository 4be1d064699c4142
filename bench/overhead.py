"""What scanflow_nb costs on top of plain Python, beside its peers, measured in one run.

(a) The same scripts run as plain `python` subprocesses, through scanflow_nb (tracked in the
    embedded MLflow store; quiet, and with its console output), Ploomber (a DAG of ScriptRunner
    tasks), Kedro (SequentialRunner, the scripts run in-process) and papermill (one notebook per
    script): 5 sequential steps of 0.5 s CPU (goal: scanflow_nb within 1.02x of plain and ahead of
    Ploomber), then 10 no-op steps, whose difference to plain is the cost added per step (goal:
    <= 10 ms). scanflow_nb forks each step from a warm starter (`run/starters.py`); "cold starts"
    runs it again with a new interpreter per step (as SCANFLOW_WARM_START=0 does). Every tool runs
    in a live process set up once, like a kernel; rounds are interleaved
    so that load drifts hit all alike; medians are printed.
(b) a 2-wide parallel group of CPU-bound executors versus the same two one after the other
    (goal: speedup >= 1.8 on 2 cores);
(c) `%load_ext scanflow_nb` in a fresh IPython shell (goal: < 0.5 s);
(d) one no-op attempt of the local back end alone (no engine, no MLflow), started to reaped:
    forked by a warm starter, started cold under the reaper, and plain `python -P noop.py`.

The peers pin packages this project's environment must not get (Ploomber wants notebook < 7), so
they live in a venv of their own (the packages of setup.cfg's `bench` extra; bench/_peers.py
imports nothing of scanflow_nb), whose Python is passed with --peers:

    python -m venv /tmp/scanflow-bench-peers
    /tmp/scanflow-bench-peers/bin/pip install 'ploomber>=0.23' 'kedro>=0.19' 'papermill>=2.6' ipykernel
    python bench/overhead.py --peers /tmp/scanflow-bench-peers/bin/python [--repeat 5]

Without --peers the peers are looked for in this environment and left out if missing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

HERE = Path(__file__).resolve().parent
# The peers' own conventions ride along as comments and a None check: Ploomber's parameters cell
# and its product file. Plain python and scanflow_nb run the very same file.
SCRIPT = """\
# %% tags=["parameters"]
upstream = None
product = None

# %%
import time

end = time.process_time() + {seconds}
while time.process_time() < end:
    pass
if product is not None:
    open(product, "w").close()
"""
PEERS = ("ploomber", "kedro", "papermill")


class Peer:
    """A peer tool in a live process of its own (bench/_peers.py), running one chain per request."""

    def __init__(self, tool: str, python: str, folder: Path, scripts: list[Path]):
        self.tool = tool
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [python, str(HERE / "_peers.py"), tool, str(folder), *map(str, scripts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if self._answer("@ready") is None:
            raise RuntimeError(f"{tool} did not start (is it installed for {python}?)")

    def _answer(self, tag: str) -> str | None:
        """The rest of the next line starting with `tag` (the tools print lines of their own); None at the end."""
        for line in self.process.stdout:
            if line.startswith(tag):
                return line[len(tag) :].strip()
        return None

    def __call__(self) -> float:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        answer = self._answer("@time")
        if answer is None:
            raise RuntimeError(f"{self.tool} failed while running the chain")
        return float(answer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        self.process.wait(30)


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def compare(root: Path, name: str, seconds: float, steps: int, repeat: int, peers_python: str | None) -> dict:
    """Median wall time of one chain of `steps` scripts per tool, interleaved round by round."""
    from scanflow_nb import App, Executor, Workflow

    folder = root / name
    folder.mkdir(parents=True)
    scripts = []
    for i in range(steps):
        scripts.append(folder / f"step{i}.py")
        scripts[-1].write_text(SCRIPT.format(seconds=seconds))
    app = App(folder)
    app.add(Workflow(name, executors=[Executor(s.stem, file=s.name) for s in scripts]))
    assert app.run(name, echo=False).ok  # creates the store, as a kernel's first run would

    def plain():
        for script in scripts:
            subprocess.run([sys.executable, "-P", str(script)], check=True, cwd=folder)

    def console():
        with contextlib.redirect_stdout(io.StringIO()):
            assert app.run(name, force=True).ok

    from scanflow_nb.run.local import LocalBackend

    cold = LocalBackend(warm=False)  # each step a new interpreter, as before the warm starter
    tools = {
        "plain python": lambda: timed(plain),
        "scanflow_nb": lambda: timed(lambda: app.run(name, echo=False, force=True)),
        "scanflow_nb, cold starts": lambda: timed(lambda: app.run(name, cold, echo=False, force=True)),
        "scanflow_nb, console output": lambda: timed(console),
    }
    started = []
    for tool in PEERS:
        try:
            peer = Peer(tool, peers_python or sys.executable, root / f"{name}-{tool}", scripts)
        except (RuntimeError, OSError) as exc:
            print(f"    {tool}: left out ({exc})")
            continue
        started.append(peer)
        tools[tool] = peer
    try:
        times: dict[str, list[float]] = {tool: [] for tool in tools}
        for _ in range(repeat):
            for tool, run in tools.items():
                times[tool].append(run())
    finally:
        for peer in started:
            peer.close()
    return {tool: statistics.median(values) for tool, values in times.items()}


def parallel_speedup(root: Path, repeat: int) -> tuple[float, float]:
    from scanflow_nb import App, Executor, Workflow

    app = App(root / "par")
    busy = SCRIPT.format(seconds=1.5)
    app.add(Workflow("one_by_one", executors=[Executor(f"cpu{i}", code=busy) for i in range(2)]))
    app.add(Workflow("side_by_side", parallel=True, executors=[Executor(f"pcpu{i}", code=busy) for i in range(2)]))
    app.run("one_by_one", echo=False)
    serial, parallel = [], []
    for _ in range(repeat):
        serial.append(timed(lambda: app.run("one_by_one", echo=False, force=True)))
        parallel.append(timed(lambda: app.run("side_by_side", echo=False, force=True)))
    return statistics.median(serial), statistics.median(parallel)


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


def attempt_start(root: Path, repeat: int) -> dict[str, float]:
    """Median seconds from launch to reaped of one no-op attempt, warm, cold and plain, interleaved."""
    from scanflow_nb import Executor
    from scanflow_nb.run import starters
    from scanflow_nb.run.backend import Launch
    from scanflow_nb.run.local import LocalBackend

    folder = root / "attempt"
    folder.mkdir()
    (folder / "noop.py").write_text("pass\n")
    spec = Launch("w/noop", "w", Executor("noop", file="noop.py"), folder, folder / "noop.py", [], {}, 1)
    warm, cold = LocalBackend(), LocalBackend(warm=False)
    if starters.STARTERS.get(warm.python, warm._env({}, spec), wait=True) is None:
        raise RuntimeError("no warm starter could start here")

    def attempt(backend):
        handle = backend.launch(spec)
        for _ in handle.lines():
            pass
        assert handle.wait(60) == 0

    def plain():
        subprocess.run([sys.executable, "-P", "noop.py"], cwd=folder, check=True, stdout=subprocess.PIPE)

    ways = {"warm starter": lambda: attempt(warm), "cold (reaper)": lambda: attempt(cold), "plain python -P": plain}
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(repeat * 4):
        for way, run in ways.items():
            times[way].append(timed(run))
    return {way: statistics.median(values) for way, values in times.items()}


def report(title: str, medians: dict[str, float], steps: int, goal: str) -> None:
    plain = medians["plain python"]
    print(f"{title} (median wall time; ratio to plain; added per step over plain):")
    for tool, value in medians.items():
        added = (value - plain) / steps * 1000
        print(f"    {tool:<28} {value:7.3f} s   {value / plain:5.3f}x   {added:+7.1f} ms")
    print(f"    goal: {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds per measurement; the median is printed")
    parser.add_argument("--peers", metavar="PYTHON", help="the Python that has ploomber, kedro and papermill")
    parser.add_argument("--skip", nargs="*", default=[], choices=["a", "b", "c", "d"], help="parts to leave out")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; median of {args.repeat} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "a" not in args.skip:
            busy = compare(root, "busy", 0.5, 5, args.repeat, args.peers)
            report("(a) 5 steps of 0.5 s CPU, one after the other", busy, 5, "scanflow_nb <= 1.02x, ahead of ploomber")
            noop = compare(root, "noop", 0.0, 10, args.repeat, args.peers)
            report("    10 no-op steps", noop, 10, "scanflow_nb adds <= 10 ms per step")
        if "b" not in args.skip:
            serial, parallel = parallel_speedup(root, args.repeat)
            print(
                f"(b) 2 x 1.5 s CPU: one after the other {serial:.2f} s, parallel group {parallel:.2f} s, "
                f"speedup {serial / parallel:.2f}x (goal >= 1.8x)"
            )
    if "c" not in args.skip:
        load = load_ext_time(max(args.repeat, 5))
        print(f"(c) %load_ext scanflow_nb in a fresh shell: {load * 1000:.0f} ms (goal < 500 ms)")
    if "d" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            starts = attempt_start(Path(tmp), args.repeat)
        print(
            "(d) one no-op attempt, launched to reaped (median): "
            + ", ".join(f"{way} {value * 1000:.1f} ms" for way, value in starts.items())
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
