"""Benchmark: the widgets in a real browser while a run updates a 1,000-executor graph.

    python bench/widgets.py [--executors 1000] [--rate 2000] [--clicks 30] [--keys 30] [--front-end lab]

Starts JupyterLab (or Notebook 7 with --front-end notebook) and headless Chromium, shows a live graph of
--executors executors and a labeling panel in one notebook, and has a thread in the kernel replay run events
(each executor started, a few log lines, succeeded, in a shuffled order, --rate events per second) to the
graph while the browser:
- clicks nodes and times click -> the node's details painted (goal: < 100 ms median, < 250 ms p95),
- presses number keys in the panel and times key -> the next sample painted (same goal; this one goes
  through the kernel: the label is stored, the learner taught, the next sample sent back),
- runs a one-line cell and times it (is the kernel responsive?).
Times are taken in the page: from the input event's timestamp to the first animation frame after the DOM
shows the result. The kernel side reports events handled per second, the time each event costs the run's
thread, and how many updates (redraws) reached the front end per second. Prints one line per figure and the
machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SETUP = """\
import json, random, threading, time
import numpy as np
from sklearn.linear_model import LogisticRegression
from scanflow_nb import Executor, Workflow
from scanflow_nb.events import RunEvent
from scanflow_nb.datasets import load_digits
from scanflow_nb.improve import ActiveLearner
from scanflow_nb.widgets.graph import GraphWidget
from scanflow_nb.widgets.labeling import LabelingPanel

def big_workflow(n, per=50):
    groups = [Workflow(f"g{{i:02d}}", executors=[Executor(f"s{{j:02d}}", code="pass") for j in range(per)])
              for i in range(max(1, n // per))]
    return Workflow("big", parallel=True, workflows=groups)

started = time.perf_counter()
graph = GraphWidget(big_workflow({executors}))
layout_s = time.perf_counter() - started
X, y = load_digits()
panel = LabelingPanel(ActiveLearner(LogisticRegression(max_iter=200), X_labeled=X[:30], y_labeled=y[:30],
                                    X_pool=X[30:1000]), store="labels.sqlite", retrain_every=10)
display(graph, panel)
"""

FEED = """\
def feed(widget, rate, stop):
    keys = list(widget.progress.keys)
    run = []
    for key in random.Random(0).sample(keys, len(keys)):
        run += [RunEvent("started", "big", key)]
        run += [RunEvent("line", "big", key, line=f"{{key}} step {{i}}") for i in range(3)]
        run += [RunEvent("succeeded", "big", key, duration=1.0)]
    costs, sent, begun = [], 0, time.perf_counter()
    renders = widget.renders
    while not stop.is_set():  # one run after the other until the browser is done
        for event in [RunEvent("run_started", "big", run_id="bench"), *run]:
            if stop.is_set():
                break
            t0 = time.perf_counter()
            widget.on_event(event)
            costs.append(time.perf_counter() - t0)
            sent += 1
            ahead = begun + sent / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
    elapsed = time.perf_counter() - begun
    stats.update(events=sent, seconds=elapsed, renders=widget.renders - renders,
                 us_per_event=1e6 * statistics.median(costs), us_p99=1e6 * sorted(costs)[int(0.99 * len(costs))])

import statistics
stats = {{}}
stop = threading.Event()
feeder = threading.Thread(target=feed, args=(graph, {rate}, stop), daemon=True)
feeder.start()
"""

PROBE = """\
window.__scanflow_bench = (kind, selector, expected) => {
  // time from the next input event of `kind` to the first frame after `selector` shows the result:
  // the details of node `expected`, or (expected null) a new sample
  const target = document.querySelector(selector);
  const seen = () => target.textContent + (target.dataset.sample ?? "");
  const before = seen();
  const key = () => target.querySelector(".sf-key")?.textContent;
  const shown = () => (expected !== null ? key() === expected : seen() !== before);
  let start = null;
  window.__scanflow_timing = new Promise((resolve) => {
    setTimeout(() => resolve(null), 60000); // never shown: counted as a miss
    const done = () => requestAnimationFrame(() => resolve(performance.now() - start));
    const observer = new MutationObserver(() => {
      if (start !== null && shown()) { observer.disconnect(); done(); }
    });
    observer.observe(target, { childList: true, subtree: true, characterData: true, attributes: true });
    document.addEventListener(kind, (event) => {
      start = event.timeStamp;
      setTimeout(() => { if (shown()) { observer.disconnect(); done(); } });
    }, { capture: true, once: true });
  });
};
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(name: str, values: list[float]) -> str:
    median, p95 = statistics.median(values), percentile(values, 0.95)
    verdict = "OK" if median < 100 and p95 < 250 else "OVER"
    return (
        f"{name}: median {median:.0f} ms, p95 {p95:.0f} ms, max {max(values):.0f} ms over {len(values)} "
        f"({verdict} vs goal < 100 ms median, < 250 ms p95)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executors", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=2000, help="run events per second fed to the graph")
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--front-end", choices=["lab", "notebook"], default="lab")
    args = parser.parse_args()
    import browser_support as bs

    reason = bs.missing_reason(args.front_end)
    if reason:
        sys.exit(f"bench/widgets.py needs a browser set-up: {reason}")
    from playwright.sync_api import expect, sync_playwright

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.front_end}, {args.executors} executors, "
        f"{args.rate:.0f} events/s fed"
    )
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped from outside: still stop the server
    work = Path(tempfile.mkdtemp(prefix="scanflow-bench-widgets-"))
    lab = bs.start_lab(work / "root", front_end=args.front_end)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=bs.chromium_path(), headless=True, args=bs.CHROMIUM_ARGS
            )
            page = browser.new_page(viewport=bs.VIEWPORT)
            bs.open_notebook(page, lab, "bench.ipynb")
            cell = bs.run_cell(page, SETUP.format(executors=args.executors), timeout=600)
            graph, panel = cell.locator(".scanflow-graph"), cell.locator(".scanflow-labeling")
            nodes = graph.locator("g.sf-executor")
            expect(nodes).to_have_count(args.executors, timeout=300_000)
            expect(panel.locator(".sf-sample img")).to_be_visible(timeout=120_000)
            page.evaluate(f"() => {{ {PROBE} }}")  # defines the probe (a bare function would be called)
            keys = nodes.evaluate_all("gs => gs.map(g => g.dataset.key)")

            bs.run_cell(page, FEED.format(rate=args.rate))
            clicks, presses, cells = [], [], []
            for i in range(max(args.clicks, args.keys)):
                if i < args.clicks:
                    key = keys[(i * 37) % len(keys)]
                    node = graph.locator(f"g.sf-executor[data-key='{key}']")
                    node.evaluate("g => g.scrollIntoView({block: 'center', inline: 'center'})")
                    box = node.bounding_box()  # a person clicks where the node is, moving or not
                    page.evaluate(
                        "([s, k]) => window.__scanflow_bench('click', s, k)", [".scanflow-graph .sf-details", key]
                    )
                    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                    clicks.append(page.evaluate("window.__scanflow_timing") or float("inf"))
                if i < args.keys:
                    panel.hover()
                    page.evaluate(
                        "([s]) => window.__scanflow_bench('keydown', s, null)", [".scanflow-labeling .sf-sample"]
                    )
                    guess = panel.locator(".sf-guess").text_content() or ""
                    page.keyboard.press(guess[13] if guess.startswith("model guess: ") else "0")
                    presses.append(page.evaluate("window.__scanflow_timing") or float("inf"))
                print(f"  {i + 1} rounds measured", file=sys.stderr, flush=True)
                if i % 10 == 0:
                    started = time.perf_counter()
                    out = bs.run_cell(page, f"print('pong {i}')").locator(".jp-OutputArea-output")
                    expect(out).to_have_text(f"pong {i}\n")
                    cells.append(1000 * (time.perf_counter() - started))
            out = bs.run_cell(page, "stop.set(); feeder.join(60); print(json.dumps({**stats, 'layout_s': layout_s}))")
            expect(out.locator(".jp-OutputArea-output")).to_contain_text("events", timeout=180_000)
            kernel = json.loads(out.locator(".jp-OutputArea-output").inner_text())
            browser.close()
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(summary("click -> details painted", clicks))
    print(summary("key -> next sample painted", presses))
    print(
        f"a one-line cell while the graph updates: median {statistics.median(cells):.0f} ms, "
        f"max {max(cells):.0f} ms over {len(cells)} (Playwright's typing and the round trip included)"
    )
    print(
        f"kernel: layout of {args.executors} executors by dot {kernel['layout_s']:.1f} s (once); "
        f"{kernel['events']} events in {kernel['seconds']:.1f} s = {kernel['events'] / kernel['seconds']:.0f} "
        f"events/s handled; {kernel['us_per_event']:.1f} us per event on the run's thread (p99 "
        f"{kernel['us_p99']:.1f} us); {kernel['renders']} updates sent = "
        f"{kernel['renders'] / kernel['seconds']:.1f} per second (coalesced from "
        f"{kernel['events']} events)"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
