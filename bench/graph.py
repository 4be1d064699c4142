"""Benchmark: drawing big workflow graphs, and the cost of feeding run events to the live widget.

    python bench/graph.py [--repeat 5] [--out bench/out]

Prints one line per figure. The target (issue 4): 200 executors in 10 nested levels drawn in
under 1 s. Figures are medians of --repeat runs on this machine, as it is loaded right now.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from scanflow_nb import Executor, Workflow
from scanflow_nb.events import RunEvent
from scanflow_nb.graph import render_svg, save_graph, to_digraph

SHAPES = {
    "parallel": lambda level: True,
    "sequential": lambda level: False,
    "alternating": lambda level: level % 2 == 1,
}


def deep_workflow(shape: str, levels: int = 10, per_level: int = 20, chains: int = 5) -> Workflow:
    """`levels` nested workflows with `per_level` executors each, the next level inside.

    A parallel level is `chains` short chains side by side (executor j depends on j - `chains`), its
    child workflow beside them; a sequential level runs its executors one by one, then its child.
    """
    child = None
    for level in reversed(range(levels)):
        parallel = SHAPES[shape](level)
        executors = [
            Executor(
                f"step{j:02d}",
                code="pass",
                parameters={"level": level},
                depends_on=[f"step{j - chains:02d}"] if parallel and j >= chains else [],
            )
            for j in range(per_level)
        ]
        child = Workflow(f"level{level}", parallel=parallel, executors=executors, workflows=[child] if child else [])
    return child


def median_time(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def states_for(workflow: Workflow) -> dict[str, str]:
    cycle = ["succeeded", "running", "failed", "cached", "pending", "skipped"]
    return {f"{wf.name}/{ex.name}": cycle[i % len(cycle)] for i, (wf, ex) in enumerate(workflow.all_executors())}


def bench_rendering(repeat: int, out: Path) -> None:
    for label in SHAPES:
        flow = deep_workflow(label)
        count = sum(1 for _ in flow.all_executors())
        depth = sum(1 for _ in flow.walk())
        states = states_for(flow)
        build = median_time(lambda: to_digraph(flow, states), repeat)
        svg_time = median_time(lambda: render_svg(flow, states), repeat)
        png_path = out / f"graph_{label}.png"
        png_time = median_time(lambda: save_graph(flow, png_path, states), repeat)
        svg = render_svg(flow, states)
        size = svg[svg.index('width="') : svg.index("viewBox")].strip()
        print(
            f"{label:12s} {count} executors, {depth} levels: Digraph {build * 1000:6.1f} ms, "
            f"SVG {svg_time * 1000:6.0f} ms ({'OK' if svg_time < 1 else 'OVER'} vs 1 s target), "
            f"PNG {png_time * 1000:6.0f} ms; drawing {size}; png {png_path}"
        )


def bench_events(repeat: int) -> None:
    from scanflow_nb.widgets.graph import GraphWidget

    flow = deep_workflow("alternating")
    keys = [f"{wf.name}/{ex.name}" for wf, ex in flow.all_executors()]
    lines = 10_000
    widget = GraphWidget(flow, refresh_interval=0.3)
    before = widget.renders
    start = time.perf_counter()
    widget.on_event(RunEvent("run_started", flow.name, run_id="bench"))
    for i in range(lines):
        key = keys[i % len(keys)]
        if i < len(keys):
            widget.on_event(RunEvent("started", flow.name, key))
        widget.on_event(RunEvent("line", flow.name, key, line=f"epoch {i}"))
    for key in keys:
        widget.on_event(RunEvent("succeeded", flow.name, key, duration=1.0))
    feed = time.perf_counter() - start
    widget.on_event(RunEvent("run_finished", flow.name, run_id="bench"))
    total_events = lines + 2 * len(keys) + 2
    print(
        f"widget events {total_events} events (200 executors, {lines} log lines) fed in {feed * 1000:.0f} ms "
        f"({feed / total_events * 1e6:.1f} µs each on the run's thread); graph redrawn "
        f"{widget.renders - before} times"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; median of {args.repeat}"
    )
    bench_rendering(args.repeat, args.out)
    bench_events(args.repeat)


if __name__ == "__main__":
    main()
