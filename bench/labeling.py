"""Benchmark of the human-in-the-loop part, on scikit-learn's digits (offline, 1,797 8x8 images).

1. Labels needed to reach 90% and 95% test accuracy with each query strategy vs random sampling,
   averaged over seeds (each seed: its own split, its own 10 starting labels, its own random draws).
   Goal: uncertainty sampling needs at most 0.6x the labels of random sampling.
2. Labeling-panel latency: time from a label to the next sample shown (label() returns after the
   panel's widgets show the next sample), with and without a background retrain running.
   Goal: under 100 ms, also while a retrain runs. Measured in the kernel process (no browser round trip).

    python bench/labeling.py            # 10 seeds, a query every 5 labels or 5% (several minutes on 2 cores)
    python bench/labeling.py --quick    # 3 seeds, a query every 10 labels or 5%
"""

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np

TARGETS = (0.90, 0.95)


def split(seed: int):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    test, rest = order[:540], order[540:]
    start = rest[:10]
    while len(set(y[start])) < 2:  # a model needs two classes to start from
        rest = rng.permutation(rest)
        start = rest[:10]
    return X[start], y[start], X[rest[10:]], y[rest[10:]], X[test], y[test]


def labels_needed(strategy: str, seed: int, step: int, budget: int) -> dict[float, int | None]:
    """Labels (the 10 starting ones included) at which test accuracy first reaches each target."""
    from sklearn.linear_model import LogisticRegression

    from scanflow_nb.improve import ActiveLearner, Oracle

    X0, y0, Xp, yp, Xt, yt = split(seed)
    improver = ActiveLearner(
        LogisticRegression(max_iter=300),
        strategy,
        X_labeled=X0,
        y_labeled=y0,
        X_pool=Xp,
        classes=list(range(10)),
        seed=seed,
    )
    oracle = Oracle(yp)
    reached: dict[float, int | None] = dict.fromkeys(TARGETS)
    while True:
        score = improver.score(Xt, yt) if improver.model is not None else 0.0
        for target in TARGETS:
            if reached[target] is None and score >= target:
                reached[target] = improver.n_labeled
        if all(v is not None for v in reached.values()) or improver.n_labeled >= budget or not improver.pool_size:
            return reached
        ids = improver.query_ids(max(step, improver.n_labeled // 20))  # resolution: step labels or 5%
        improver.teach_ids(ids, oracle(ids))


def strategies_report(seeds: int, step: int, budget: int) -> None:
    from scanflow_nb.improve import STRATEGIES

    print(
        f"\n== labels to reach test accuracy (digits, logistic regression, {seeds} seeds, a query every "
        f"{step} labels or 5% of the labels so far, 10 starting labels, at most {budget} labels) ==",
        flush=True,
    )
    results = {}
    for strategy in STRATEGIES:
        started = time.perf_counter()
        runs = [labels_needed(strategy, seed, step, budget) for seed in range(seeds)]
        results[strategy] = runs
        cells = []
        for target in TARGETS:
            got = [r[target] for r in runs if r[target] is not None]
            missed = seeds - len(got)
            mean = statistics.mean(r[target] if r[target] is not None else budget for r in runs)
            cells.append(f"{target:.0%}: {mean:6.1f}" + (f" ({missed} never, counted as {budget})" if missed else ""))
        print(f"{strategy:12s} " + "   ".join(cells) + f"   [{time.perf_counter() - started:.0f} s]", flush=True)
    print()
    for target in TARGETS:
        base = statistics.mean(r[target] or budget for r in results["random"])
        ratios = "  ".join(
            f"{s} {statistics.mean(r[target] or budget for r in results[s]) / base:.2f}x"
            for s in results
            if s != "random"
        )
        print(f"labels vs random to reach {target:.0%}: {ratios}   (goal for uncertainty: <= 0.60x)")


def latency_report(n_labels: int) -> None:
    from sklearn.ensemble import RandomForestClassifier

    from scanflow_nb.improve import ActiveLearner
    from scanflow_nb.widgets.labeling import LabelingPanel

    X0, y0, Xp, yp, Xt, yt = split(0)
    X0, y0 = np.concatenate([X0, Xp[:400]]), np.concatenate([y0, yp[:400]])
    Xp, yp = Xp[400:], yp[400:]
    learner = RandomForestClassifier(n_estimators=300, random_state=0)  # a retrain that takes a while
    improver = ActiveLearner(learner, X_labeled=X0.reshape(-1, 8, 8), y_labeled=y0, X_pool=Xp.reshape(-1, 8, 8))
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, a query every 10 labels, fewer latency labels")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--step", type=int, default=None, help="labels per query")
    parser.add_argument("--budget", type=int, default=800, help="stop a run after this many labels")
    parser.add_argument("--part", choices=["all", "strategies", "latency"], default="all")
    args = parser.parse_args()
    seeds = args.seeds or (3 if args.quick else 10)
    step = args.step or (10 if args.quick else 5)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    if args.part in ("all", "strategies"):
        strategies_report(seeds, step, args.budget)
    if args.part in ("all", "latency"):
        latency_report(60 if args.quick else 150)


if __name__ == "__main__":
    main()
