"""Soak: many runs of a 5-executor workflow with random failures, timeouts and interrupts.

Each run draws, for every executor, one behaviour: succeed, fail, hang past its timeout (with a
child that ignores SIGTERM and a grandchild in its own session), leave a daemon running, or print
a lot. Some runs are interrupted by a real SIGINT (as Ctrl-C in a kernel), some run in the
background and are cancelled. After all runs, in this same process (the kernel), it prints what
is left: processes the executors started, file descriptors, threads, memory growth, and MLflow
runs not in a final state (goals: 0, 0, 0, < 20 MB, 0). Then one executor prints 200 MB: the
kernel's memory growth (goal < 20 MB) and the lines the cell receives.

Usage: python bench/soak.py [--runs 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
TOKEN = f"scanflow-soak-{uuid.uuid4().hex[:12]}"
STORE_FILE = "/.scanflow/mlflow.db"  # and its -wal and -shm

EXECUTOR = """\
import argparse, os, subprocess, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--mode")
mode = parser.parse_args().mode
if mode == "fail":
    print("failing on purpose")
    sys.exit(3)
if mode == "hang":
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", stubborn])
    subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"])
    time.sleep(600)
if mode == "daemon":
    subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)"])
if mode == "loud":
    for i in range(30_000):
        print(f"line {i}")
print("done", mode)
"""
MODES = ("ok", "ok", "ok", "fail", "hang", "daemon", "loud")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def leftover_processes() -> list[str]:
    """Processes carrying this soak's token in their environment, and zombie children of this process."""
    found = []
    me = str(os.getpid())
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or entry.name == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if TOKEN.encode() in env or (ppid == me and state == "Z"):
            found.append(f"{entry.name} {stat.split()[1]} {state}")
    return found


def snapshot() -> dict[str, float]:
    """File descriptors (the store's SQLite files apart: MLflow's connection pool keeps up to 5 connections
    open by design, each with the store, its -wal and its -shm), threads and memory of this process."""
    gc.collect()
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    store = [target for target in targets if STORE_FILE in target]
    return {
        "fds": len(targets) - len(store),
        "connections": sum(target.endswith(STORE_FILE) for target in store),
        "threads": threading.active_count(),
        "rss": rss_mb(),
    }


def settle(baseline: dict[str, float], timeout: float = 30.0) -> dict[str, float]:
    """Let the kernel's warm starters go, wait (bounded) for stop threads and the last processes to end, then
    measure. A warm starter lives as long as the kernel by design (one per interpreter and environment, with
    its socket and pipe), so it is measured apart: what is left past it is what the runs left."""
    from scanflow_nb.run.starters import STARTERS

    STARTERS.close()
    deadline = time.monotonic() + timeout
    while True:
        now = snapshot()
        if (now["threads"] <= baseline["threads"] and not leftover_processes()) or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ["SOAK_TOKEN"] = TOKEN  # inherited by every executor and whatever it starts

    from mlflow import MlflowClient

    from scanflow_nb import App, Executor, Workflow

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="scanflow-soak-"))
    names = ["prepare", "left", "middle", "right", "report"]
    ex = {n: Executor(n, code=EXECUTOR, timeout=2.0, parameters={"mode": "ok"}) for n in names}
    app = App(
        root / "app",
        [
            Workflow(
                "soak",
                executors=[ex["prepare"]],
                workflows=[
                    Workflow("group", parallel=True, executors=[ex["left"], ex["middle"], ex["right"]]),
                    Workflow("end", executors=[ex["report"]]),
                ],
            )
        ],
    )
    app.save()
    warm = app.run("soak", echo=False)
    assert warm.ok, warm.summary()  # warm: the store exists, MLflow is imported
    baseline = settle(snapshot())

    outcomes: collections.Counter = collections.Counter()
    executors: collections.Counter = collections.Counter()
    started = time.monotonic()
    for i in range(args.runs):
        for e in ex.values():
            e.parameters["mode"] = rng.choice(MODES)
        how = rng.choices(["plain", "sigint", "cancel"], weights=[8, 1, 1])[0]
        delay = rng.uniform(0.5, 4.0)
        try:
            if how == "cancel":
                handle = app.run("soak", echo=False, force=True, background=True)
                time.sleep(delay)
                handle.cancel()
                result = handle.result(timeout=120)
            else:
                timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)) if how == "sigint" else None
                if timer:
                    timer.start()
                try:
                    result = app.run("soak", echo=False, force=True)
                finally:
                    if timer:
                        timer.cancel()
                        timer.join()
        except KeyboardInterrupt:
            outcomes["interrupted (Ctrl-C)"] += 1
            continue
        except Exception as exc:  # counted and shown: the soak goes on
            outcomes[f"raised {type(exc).__name__}"] += 1
            print(f"  run {i + 1} ({how}) raised {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
            continue
        outcomes[result.status] += 1
        for r in result.executors.values():
            why = "exit code" if (r.error or "").startswith("exit code") else (r.error or "").split(" after")[0]
            executors[f"{r.status} ({why})" if r.status == "failed" else r.status] += 1
        if (i + 1) % 20 == 0:
            print(f"  {i + 1} runs, {time.monotonic() - started:.0f} s", flush=True)
    took = time.monotonic() - started

    after = settle(baseline)
    left = leftover_processes()
    client = MlflowClient(f"sqlite:///{app.state_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("soak").experiment_id
    open_runs = client.search_runs([experiment], "attributes.status = 'RUNNING'", max_results=5000)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())

    print(f"soak: {args.runs} runs of a 5-executor workflow in {took:.0f} s (load average {load}), seed {args.seed}")
    print("  runs: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print("  executors: " + ", ".join(f"{k} {v}" for k, v in sorted(executors.items())))
    rows = [
        ("leftover processes", len(left), "0"),
        ("file descriptors", after["fds"] - baseline["fds"], "0"),
        ("store connections", f"{baseline['connections']:.0f} -> {after['connections']:.0f}", "<= 5 (the pool)"),
        ("threads", after["threads"] - baseline["threads"], "0"),
        ("memory growth (MB)", round(after["rss"] - baseline["rss"], 1), "< 20"),
        ("MLflow runs not final", len(open_runs), "0"),
    ]
    for what, value, goal in rows:
        print(f"  {what:<24}{value:>8}   goal {goal}")
    for line in left[:10]:
        print(f"    left: {line}")
    for run in open_runs[:10]:
        print(f"    not final: run {run.info.run_id} ({run.data.tags.get('scanflow.kind')} {run.info.run_name})")
    flood(app)
    return 0


def flood(app, megabytes: int = 200) -> None:
    """The kernel's memory and the cell while one executor prints `megabytes` of output."""
    import io
    from contextlib import redirect_stdout

    from scanflow_nb import Executor, Workflow

    lines = megabytes * 10_000  # 100 bytes each
    code = f"import sys\nline = 'x' * 99 + '\\n'\nfor _ in range({lines}):\n    sys.stdout.write(line)\n"
    app.add(Workflow("flood", executors=[Executor("loud", code=code)]))
    peak = start = rss_mb()

    def sample(event) -> None:  # a listener: on the run's thread, about 20 times a second
        nonlocal peak
        peak = max(peak, rss_mb())

    cell = io.StringIO()
    with redirect_stdout(cell):  # what a notebook cell would receive
        result = app.run("flood", listeners=[sample])
    took = result.executors["flood/loud"].duration
    shown = cell.getvalue().count("\n")
    log = app.log_path("flood/loud").stat().st_size / 2**20
    print(
        f"flood: an executor printing {megabytes} MB ({lines:,} lines) in {took:.1f} s: kernel memory growth "
        f"{peak - start:.1f} MB (goal < 20), {shown:,} lines in the cell, log kept {log:.0f} MiB"
    )


if __name__ == "__main__":
    sys.exit(main())
