"""Benchmark of the human-in-the-loop part, on scikit-learn's digits (offline, 1,797 8x8 images).

1. Labels needed to reach 90% and 95% test accuracy, the improver's default strategy (and any others asked
   for) vs random sampling, with logistic regression and a random forest, starting from 10 and from 20
   random labels without `classes=` (the classes grow as labels arrive), 10 labels a query, over seeds
   (each seed: its own split, its own start labels, its own random draws). Also the mean test accuracy
   over the learning curve from the start labels to 200 labels (its area, normalised).
   Goals: at most 0.6x the labels of random in every setting; an area at least random's in each.
2. Time to choose the next 10 from a pool of 5,000 (digits and shifted copies of them), at a cold start
   (20 labels: typical samples) and later (200 labels: margin). Goal: < 1 s.
3. Labeling-panel latency: time from a label to the next sample shown (label() returns after the
   panel's widgets show the next sample), with and without a background retrain running.
   Goal: under 100 ms, also while a retrain runs. Measured in the kernel process (no browser round trip).

    python bench/labeling.py                                  # 10 seeds (about an hour on a busy 2-core machine)
    python bench/labeling.py --quick                          # 3 seeds
    python bench/labeling.py --part curves --jobs 2          # the learning curves only, two seeds at a time
    python bench/labeling.py --part curves --strategies auto margin typical random
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings

import numpy as np

TARGETS = (0.90, 0.95)
AREA_UNTIL = 200
LEARNERS = ("logistic regression", "random forest")


def learner(name: str, seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if name == "logistic regression":
        return LogisticRegression(max_iter=300)
    return RandomForestClassifier(n_estimators=100, random_state=seed)


def split(seed: int, start: int):
    """Digits in [0, 1]: `start` random labels, the pool, and 540 test samples."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    order = np.random.default_rng(seed).permutation(len(y))
    test, rest = order[:540], order[540:]
    return X[rest[:start]], y[rest[:start]], X[rest[start:]], y[rest[start:]], X[test], y[test]


def curve(strategy: str, model: str, seed: int, start: int, step: int, budget: int) -> list[tuple[int, float]]:
    """(labels, test accuracy) after every query until both targets and AREA_UNTIL are reached, or the budget."""
    from scanflow_nb.improve import ActiveLearner, NewClassWarning, Oracle

    X0, y0, Xp, yp, Xt, yt = split(seed, start)
    improver = ActiveLearner(learner(model, seed), strategy, X_labeled=X0, y_labeled=y0, X_pool=Xp, seed=seed)
    oracle, points = Oracle(yp), []
    while True:
        points.append((improver.n_labeled, improver.score(Xt, yt) if improver.model is not None else 0.0))
        reached = all(any(s >= t for _, s in points) for t in TARGETS)
        if (reached and improver.n_labeled >= AREA_UNTIL) or improver.n_labeled >= budget or not improver.pool_size:
            return points
        ids = improver.query_ids(step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NewClassWarning)  # classes grow: expected here
            improver.teach_ids(ids, oracle(ids))


def labels_to(points, target: float, budget: int) -> tuple[int, bool]:
    """Labels at which the curve first reaches `target` (the budget, flagged, if it never does)."""
    n = next((n for n, s in points if s >= target), None)
    return (budget, False) if n is None else (n, True)


def area(points, start: int) -> float:
    """Mean accuracy over every label count from `start` to AREA_UNTIL (linear between measurements)."""
    n, s = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return float(np.interp(np.arange(start, AREA_UNTIL + 1), n, s).mean())


def curves_report(
    strategies: list[str], seeds: int, step: int, budget: int, models=LEARNERS, starts=(10, 20), jobs: int = 1
) -> None:
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(jobs) if jobs > 1 else None
    run_all = pool.map if pool else map
    print(
        f"\n== labels to reach test accuracy, digits, {seeds} seeds, {step} labels a query, classes not given, "
        f"at most {budget} labels (a run that never reaches a target counts as {budget}) ==",
        flush=True,
    )
    for model in models:
        for start in starts:
            results = {}
            for strategy in strategies:
                started = time.perf_counter()
                runs = list(
                    run_all(curve, *zip(*[(strategy, model, seed, start, step, budget) for seed in range(seeds)]))
                )
                results[strategy] = runs
                cells = []
                for target in TARGETS:
                    got = [labels_to(r, target, budget) for r in runs]
                    missed = sum(not ok for _, ok in got)
                    cells.append(
                        f"{target:.0%}: {statistics.mean(n for n, _ in got):6.1f}"
                        + (f" ({missed} never)" if missed else "")
                    )
                cells.append(f"area {start}-{AREA_UNTIL}: {statistics.mean(area(r, start) for r in runs):.4f}")
                print(
                    f"{model:19s} start {start:2d}  {strategy:11s} "
                    + "   ".join(cells)
                    + f"   [{time.perf_counter() - started:.0f} s]",
                    flush=True,
                )
            if "random" not in results:
                continue
            base_area = statistics.mean(area(r, start) for r in results["random"])
            for strategy in (s for s in strategies if s != "random"):
                ratios = [
                    statistics.mean(labels_to(r, t, budget)[0] for r in results[strategy])
                    / statistics.mean(labels_to(r, t, budget)[0] for r in results["random"])
                    for t in TARGETS
                ]
                gain = statistics.mean(area(r, start) for r in results[strategy]) - base_area
                ok = all(r <= 0.6 for r in ratios) and gain >= 0
                print(
                    f"{'':19s} {'':8s}  {strategy} vs random: "
                    + ", ".join(f"{t:.0%} {r:.2f}x" for t, r in zip(TARGETS, ratios))
                    + f", area {gain:+.4f}   (goals: <= 0.60x, area >= random's: {'met' if ok else 'NOT met'})",
                    flush=True,
                )
    if pool:
        pool.shutdown()


def big_pool(n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """n digit images: the 1,797 digits and copies shifted by one pixel, with labels."""
    from scanflow_nb.datasets import load_digits

    images, labels = load_digits()
    shifted = [np.roll(images, shift, axis=axis) for axis in (1, 2) for shift in (-1, 1)]
    X, y = np.concatenate([images, *shifted]), np.tile(labels, 5)
    order = np.random.default_rng(0).permutation(len(y))[:n]
    return X[order], y[order]


def query_time_report(repeats: int = 5) -> None:
    from scanflow_nb.improve import ActiveLearner

    X, y = big_pool(5000 + 200)
    print(f"\n== time to choose the next 10 from a pool of 5,000 digit images (median of {repeats}) ==", flush=True)
    for model in LEARNERS:
        for labeled in (20, 200):
            improver = ActiveLearner(learner(model, 0), X_labeled=X[:labeled], y_labeled=y[:labeled], X_pool=X[200:])
            times, cpu, used = [], [], set()
            for _ in range(repeats):
                started, started_cpu = time.perf_counter(), time.process_time()
                improver.query_ids(10)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
                used.add(improver.queries[-1].used)
            print(
                f"{model:19s} {labeled:3d} labels ({', '.join(sorted(used))}): first query {times[0]:.2f} s, CPU "
                f"{cpu[0]:.2f} s (embedding fitted), then median {statistics.median(times[1:]):.2f} s, "
                f"CPU {statistics.median(cpu[1:]):.2f} s   (goal: < 1 s; load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )


def latency_report(n_labels: int) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from scanflow_nb.improve import ActiveLearner
    from scanflow_nb.widgets.labeling import LabelingPanel

    X0, y0, Xp, yp, Xt, yt = split(0, 410)
    learner_ = RandomForestClassifier(n_estimators=300, random_state=0)  # a retrain that takes a while
    improver = ActiveLearner(learner_, X_labeled=X0.reshape(-1, 8, 8), y_labeled=y0, X_pool=Xp.reshape(-1, 8, 8))
    fit_started = time.perf_counter()
    improver.retrain()
    fit_seconds = time.perf_counter() - fit_started
    with tempfile.TemporaryDirectory() as tmp:
        panel = LabelingPanel(improver, store=os.path.join(tmp, "labels.sqlite"), retrain_every=5, X_test=Xt, y_test=yt)
        idle, busy = [], []
        for _ in range(n_labels):
            sample = panel.current
            retraining = panel.retraining
            started = time.perf_counter()
            panel.label(int(yp[sample]))  # stored, taught, next sample rendered with the model's guess
            elapsed = (time.perf_counter() - started) * 1000
            (busy if retraining else idle).append(elapsed)
            time.sleep(0.05)  # a very fast human: 20 labels a second
        panel.wait(300)
        retrains = len(panel.scores) - 1
    print(
        f"\n== label -> next sample shown ({n_labels} labels, a random-forest retrain every 5 labels in the "
        f"background; one retrain takes {fit_seconds:.2f} s alone; {retrains} retrains ran) =="
    )
    for name, values in (("no retrain running", idle), ("while a retrain runs", busy)):
        if values:
            values = sorted(values)
            p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
            print(
                f"{name:22s} n={len(values):3d}  median {statistics.median(values):6.1f} ms  p95 {p95:6.1f} ms  "
                f"max {values[-1]:6.1f} ms   (goal: < 100 ms)"
            )
        else:
            print(f"{name:22s} no labels fell in this case")


def main() -> None:
    from scanflow_nb.improve import STRATEGIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, fewer latency labels")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--step", type=int, default=10, help="labels per query")
    parser.add_argument("--budget", type=int, default=800, help="stop a run after this many labels")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=["auto", "random"])
    parser.add_argument("--part", choices=["all", "curves", "time", "latency"], default="all")
    parser.add_argument("--models", nargs="+", choices=LEARNERS, default=list(LEARNERS))
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel (processes) for the curves")
    parser.add_argument("--starts", nargs="+", type=int, default=[10, 20], help="random labels to start from")
    args = parser.parse_args()
    seeds = args.seeds or (3 if args.quick else 10)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if args.part in ("all", "curves"):
        curves_report(args.strategies, seeds, args.step, args.budget, args.models, args.starts, args.jobs)
    if args.part in ("all", "time"):
        query_time_report()
    if args.part in ("all", "latency"):
        latency_report(60 if args.quick else 150)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
