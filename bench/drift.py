"""Drift detector benchmark on scikit-learn's digits with the 15 MNIST-C corruptions.

Prints, for every detector: detection rate per corruption and on average and the false positive
rate on clean batches (alpha = 0.05) for each batch size; detection of mild shifts at n = 30
(images and a tabular set); scoring throughput; and the delay from a batch being logged to its
check result being visible in MLflow (embedded store and a real `mlflow server`, 1 s poll).

    python bench/drift.py            # the full run (4 batch sizes, 50 trials each)
    python bench/drift.py --quick    # about 2 minutes: n = 100 only, 15 trials, fewer latency samples
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from scanflow_nb.check import AutoencoderDetector, KSDetector, MMDDetector  # noqa: E402
from scanflow_nb.datasets import CORRUPTIONS, corrupt, load_digits  # noqa: E402

ALPHA = 0.05


def detectors(quick: bool) -> dict:
    dets = {
        "autoencoder": AutoencoderDetector(alpha=ALPHA),
        "ae-error-only": AutoencoderDetector(alpha=ALPHA, evidence=["error"]),
        "ks": KSDetector(alpha=ALPHA),
        "mmd-raw": MMDDetector(alpha=ALPHA),
    }
    if not quick:
        dets["mmd-code"] = MMDDetector(alpha=ALPHA, on="code")
    return dets


def rates(dets: dict, pools: dict[str, np.ndarray], n: int, trials: int, seed: int) -> dict[str, dict[str, float]]:
    """Fraction of `trials` random batches of size n from each pool that each detector flags."""
    out = {name: {} for name in dets}
    for cond, pool in pools.items():
        rng = np.random.default_rng([seed, n, len(cond)])
        hits = dict.fromkeys(dets, 0)
        for _ in range(trials):
            batch = pool[rng.choice(len(pool), n, replace=False)]
            for name, det in dets.items():
                hits[name] += det.score(batch).is_drift
        for name in dets:
            out[name][cond] = hits[name] / trials
    return out


def table(title: str, rows: list[str], cols: list[str], cell) -> None:
    width = max(len(r) for r in rows) + 2
    print(f"\n{title}")
    print(" " * width + "".join(f"{c:>15}" for c in cols))
    for r in rows:
        print(f"{r:<{width}}" + "".join(f"{cell(r, c):>15}" for c in cols))


def mild_images(pool: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Shifts milder than MNIST-C's severity 1: small brightness, rotation and scale changes."""
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1, 1], len(pool))
    center = (np.array(pool.shape[1:]) - 1) / 2
    out = {}
    for amount in (0.02, 0.05):
        out[f"brightness +{amount}"] = np.clip(pool + amount, 0, 1)
    for degrees in (3, 6):
        out[f"rotate {degrees} deg"] = np.stack(
            [ndimage.rotate(x, degrees * s, reshape=False, order=1) for x, s in zip(pool, signs)]
        )
    for factor in (0.97, 0.93):
        matrix = np.eye(2) / factor
        out[f"scale {factor}"] = np.stack(
            [ndimage.affine_transform(x, matrix, offset=center - matrix @ center, order=1) for x in pool]
        )
    return out


def latency(dets_ae, ref_pool: np.ndarray, samples: int, server: bool) -> list[float]:
    """Seconds from `log_batch` returning to the batch's check run being FINISHED in MLflow."""
    from scanflow_nb.check import tracking as tr
    from scanflow_nb.check.watcher import Watcher

    tmp = Path(tempfile.mkdtemp(prefix="scanflow-bench-"))
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    srv = None
    if server:
        from scanflow_nb.track.server import TrackerServer

        srv = TrackerServer(store, tmp / "artifacts").start()
    uri = srv.uri if srv else store
    try:
        tr.experiment_id(tr.client_for(uri), "bench")
        watcher = Watcher(uri, "bench", dets_ae, every=1.0).start()
        client, rng, delays = tr.client_for(uri), np.random.default_rng(0), []
        for _i in range(samples):
            time.sleep(rng.uniform(0, 1.0))  # land anywhere in the poll cycle
            batch_id = tr.log_batch(ref_pool[rng.choice(len(ref_pool), 100, replace=False)], uri, "bench")
            logged = time.monotonic()
            while tr.CHECKED_TAG not in client.get_run(batch_id).data.tags:
                time.sleep(0.02)
            delays.append(time.monotonic() - logged)
        watcher.stop()
        return delays
    finally:
        if srv:
            srv.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 100 only, 15 trials, 5 latency samples")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args()
    trials = args.trials or (15 if args.quick else 50)
    sizes = args.sizes or ([100] if args.quick else [20, 50, 100, 200])
    print(
        f"# scanflow_nb drift benchmark: digits, severity {args.severity}, alpha {ALPHA}, {trials} trials, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, started {time.strftime('%H:%M:%S')}"
    )

    X, _ = load_digits()
    order = np.random.default_rng(args.seed).permutation(len(X))
    ref, pool = X[order[:1000]], X[order[1000:]]
    dets = detectors(args.quick)
    for name, det in dets.items():
        started = time.monotonic()
        det.fit(ref)
        extra = f", {det.epochs_run_} epochs" if hasattr(det, "epochs_run_") else ""
        print(f"fit {name:<14} {time.monotonic() - started:6.1f} s{extra}")

    pools = {"clean": pool, **{c: corrupt(pool, c, args.severity, seed=args.seed) for c in CORRUPTIONS}}
    summary = {}
    for n in sizes:
        started = time.monotonic()
        result = rates(dets, pools, n, trials, args.seed)
        table(
            f"Detection rate, n = {n} ({time.monotonic() - started:.0f} s); 'clean' is the false positive rate",
            ["clean", *CORRUPTIONS, "MEAN (15)"],
            list(dets),
            lambda r, c: f"{(np.mean([result[c][k] for k in CORRUPTIONS]) if r == 'MEAN (15)' else result[c][r]):.2f}",
        )
        summary[n] = {d: (result[d]["clean"], np.mean([result[d][k] for k in CORRUPTIONS])) for d in dets}
    table(
        "Summary: false positive rate / mean detection rate",
        [f"n = {n}" for n in sizes],
        list(dets),
        lambda r, c: "{:.2f} / {:.2f}".format(*summary[int(r.split()[-1])][c]),
    )

    mild = {
        "clean": pool,
        **mild_images(pool, args.seed),
        **{f"{c} sev 1": corrupt(pool, c, 1, seed=args.seed) for c in CORRUPTIONS},
    }
    mild_rates = rates(dets, mild, 30, trials, args.seed + 1)
    sev1 = [f"{c} sev 1" for c in CORRUPTIONS]
    table(
        "Mild shifts on digits, n = 30 (and the 15 corruptions at severity 1)",
        [*mild, "MEAN sev 1"],
        list(dets),
        lambda r, c: f"{np.mean([mild_rates[c][k] for k in sev1]) if r == 'MEAN sev 1' else mild_rates[c][r]:.2f}",
    )

    from sklearn.datasets import load_breast_cancer

    T = load_breast_cancer().data
    t_order = np.random.default_rng(args.seed).permutation(len(T))
    t_ref, t_pool = T[t_order[:400]], T[t_order[400:]]
    t_dets = {name: type(det)(**det.params()).fit(t_ref) for name, det in dets.items()}
    rng = np.random.default_rng(args.seed)
    cols = rng.choice(T.shape[1], 3, replace=False)
    t_pools = {"clean": t_pool}
    for factor in (1.1, 1.2):
        rescaled = t_pool.copy()
        rescaled[:, cols] *= factor
        t_pools[f"3 of 30 features x{factor}"] = rescaled
    tab = rates(t_dets, t_pools, 30, trials, args.seed + 2)
    table(
        f"Breast cancer (tabular, 30 features; columns {sorted(cols.tolist())} rescaled), n = 30",
        list(t_pools),
        list(t_dets),
        lambda r, c: f"{tab[c][r]:.2f}",
    )

    print("\nScoring throughput (samples/s, batches of 200, median of 10)")
    for name, det in dets.items():
        times = []
        for i in range(10):
            batch = pool[i * 50 : i * 50 + 200] if i * 50 + 200 <= len(pool) else pool[:200]
            started = time.perf_counter()
            det.score(batch)
            times.append(time.perf_counter() - started)
        print(f"  {name:<14} {200 / statistics.median(times):10.0f}")

    if not args.no_latency:
        samples = 5 if args.quick else 15
        print(
            f"\nDelay from log_batch returning to the result being in MLflow (autoencoder, 1 s poll, {samples} batches)"
        )
        for label, server in (("embedded sqlite store", False), ("mlflow server on 127.0.0.1", True)):
            delays = latency(dets["autoencoder"], pool, samples, server)
            print(f"  {label:<28} median {statistics.median(delays):.2f} s, max {max(delays):.2f} s")
    print(f"\nfinished {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
