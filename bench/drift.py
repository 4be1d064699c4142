"""Drift checker benchmark: images (digits with the 15 MNIST-C corruptions), a table with categories,
the model's own outputs, label shift, the stream's alarm, scoring throughput and checking delay.

Prints, in one run (alpha = 0.05; the load average is printed with the figures):
  1. images at n = 30, the 15 corruptions at severity 1, and at n = 100, severity 3: detection rate per
     corruption and on average, false positive rate on clean batches, for the autoencoder, KS, MMD and
     BBSD (the classifier's outputs) side by side;
  1b. the false positive rate at n = 30 measured on 200 clean batches for each of several references
     (2 with --quick, 5 in the full run; the detectors refitted on each), with its exact 95% interval,
     each reference's own rate, and BBSD given the model's outputs on its own training data (the
     mistake that makes it flag clean batches);
  2. a table (breast cancer, 30 numeric columns and 2 categorical) at n = 50: a new category, a category
     mix change, a location shift and a x1.5 scale change of 3 of the 30 numeric columns: detection
     rate, false positive rate, and how often the shifted column is named first;
  3. label shift (class proportions drawn from a Dirichlet(1) prior): BBSD's detection rate and the
     error of BBSE's estimate of the new proportions, against the naive estimate (mean prediction);
  4. the stream's alarm (CUSUM on the batches' p-values, arl 500): alarms over 500 clean batches, and the
     number of batches until the alarm under a sustained mild shift (median over repeated streams);
  5. scoring throughput, and the delay from a batch being logged to its result being in MLflow.

    python bench/drift.py            # the full run (about 20 minutes on 2 idle cores)
    python bench/drift.py --quick    # about 6 minutes: fewer trials and streams, no server latency
    python bench/drift.py --quick --stream 500   # with the full run's 500 clean batches in the stream
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

from scanflow_nb.check import (  # noqa: E402
    AutoencoderDetector,
    KSDetector,
    MMDDetector,
    ModelOutputDetector,
    StreamChecker,
    TabularDetector,
)
from scanflow_nb.datasets import CORRUPTIONS, TABLE_SHIFTS, corrupt, load_digits, load_tumours, shift_table  # noqa: E402

ALPHA = 0.05


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def table(title: str, rows: list[str], cols: list[str], cell) -> None:
    width = max(len(r) for r in rows) + 2
    print(f"\n{title}")
    print(" " * width + "".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(f"{r:<{width}}" + "".join(f"{cell(r, c):>16}" for c in cols))


# -- 1. images -------------------------------------------------------------------------------------------
class Flat:
    """A digits classifier on (n, 8, 8) images: what BBSD watches."""

    def __init__(self, model):
        self.model, self.classes_ = model, model.classes_

    def predict_proba(self, X):
        return self.model.predict_proba(np.asarray(X).reshape(len(X), -1))


def image_detectors(ref: np.ndarray, y_ref: np.ndarray, seed: int = 0, quiet: bool = False) -> dict:
    """The image detectors, fitted on the reference digits. The classifier BBSD watches learns from the
    first half of the reference; its outputs and the labels of the second half are BBSD's reference."""
    from sklearn.linear_model import LogisticRegression

    half = len(ref) // 2
    model = Flat(LogisticRegression(max_iter=3000).fit(ref[:half].reshape(half, -1), y_ref[:half]))
    held_out = model.predict_proba(ref[half:])
    y_ref = y_ref[half:]
    dets = {}
    for name, make in (
        ("autoencoder", lambda: AutoencoderDetector(alpha=ALPHA, seed=seed).fit(ref)),
        ("ks", lambda: KSDetector(alpha=ALPHA, seed=seed).fit(ref)),
        ("mmd", lambda: MMDDetector(alpha=ALPHA, seed=seed).fit(ref)),
        ("bbsd", lambda: ModelOutputDetector(model, alpha=ALPHA).fit(probabilities=held_out, y_reference=y_ref)),
    ):
        started = time.monotonic()
        dets[name] = make()
        if not quiet:
            print(f"fit {name:<12} {time.monotonic() - started:6.1f} s")
    return dets


# -- 1b. the false positive rate, measured on many clean batches and several references -------------------
def interval(hits: int, trials: int) -> str:
    """The rate with its exact (Clopper-Pearson) 95% confidence interval."""
    from scipy.stats import binomtest

    ci = binomtest(hits, trials).proportion_ci(0.95, method="exact")
    return f"{hits / trials:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def calibration(X: np.ndarray, y: np.ndarray, first: dict, references: int, batches: int, seed: int) -> None:
    """False positive rate at n = 30 over `batches` clean batches for each of `references` reference/pool
    splits (the detectors refitted on each; `first` are those of split 0). A rate measured against one
    fixed reference is that reference's own rate: it varies between references around the true rate, so
    both the pooled rate (with its exact 95% interval) and each reference's rate are shown. The rows
    "training outputs" are the classic mistake: BBSD whose reference outputs are the model's outputs on
    the data it learned from (a logistic regression, and a random forest, which is far surer of its
    training data than of new data)."""
    from sklearn.ensemble import RandomForestClassifier

    started = time.monotonic()
    hits: dict[str, list[int]] = {}
    medians: dict[str, list[float]] = {}
    for r in range(references):
        order = np.random.default_rng(seed + r).permutation(len(X))
        ref, pool, y_ref = X[order[:1000]], X[order[1000:]], y[order[:1000]]
        dets = dict(first) if r == 0 else image_detectors(ref, y_ref, seed + r, quiet=True)
        half = len(ref) // 2
        forest = Flat(
            RandomForestClassifier(200, random_state=seed + r).fit(ref[:half].reshape(half, -1), y_ref[:half])
        )
        dets["bbsd, training outputs"] = ModelOutputDetector(dets["bbsd"].model, alpha=ALPHA).fit(ref[:half])
        dets["bbsd (forest)"] = ModelOutputDetector(forest, alpha=ALPHA).fit(ref[half:])
        dets["bbsd (forest), training outputs"] = ModelOutputDetector(forest, alpha=ALPHA).fit(ref[:half])
        rng = np.random.default_rng([seed, r, 30])
        ps: dict[str, list[float]] = {name: [] for name in dets}
        for _ in range(batches):
            batch = pool[rng.choice(len(pool), 30, replace=False)]
            for name, det in dets.items():
                ps[name].append(det.score(batch).p_value)
        for name, p in ps.items():
            hits.setdefault(name, []).append(int(np.sum(np.asarray(p) < ALPHA)))
            medians.setdefault(name, []).append(float(np.median(p)))
    total = references * batches
    print(
        f"\nFalse positive rate on clean digits, n = 30, alpha {ALPHA}: {batches} batches x {references} references "
        f"({time.monotonic() - started:.0f} s, {load()})"
    )
    print(f"  {'detector':<32}{'pooled [95% CI]':>24}{'per reference':>28}{'median p':>10}")
    for name, counts in hits.items():
        each = " ".join(f"{c / batches:.2f}" for c in counts)
        print(f"  {name:<32}{interval(sum(counts), total):>24}{each:>28}{np.median(medians[name]):>10.2f}")


def rates(dets: dict, pools: dict, n: int, trials: int, seed: int) -> dict[str, dict[str, float]]:
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


def images(dets: dict, pool: np.ndarray, n: int, severity: int, trials: int, seed: int) -> dict:
    pools = {"clean": pool, **{c: corrupt(pool, c, severity, seed=seed) for c in CORRUPTIONS}}
    started = time.monotonic()
    result = rates(dets, pools, n, trials, seed)
    mean = {d: float(np.mean([result[d][c] for c in CORRUPTIONS])) for d in dets}
    table(
        f"Images, n = {n}, severity {severity}, {trials} trials ({time.monotonic() - started:.0f} s, {load()}); "
        "'clean' is the false positive rate",
        ["clean", *CORRUPTIONS, "MEAN (15)", "LOWEST"],
        list(dets),
        lambda r, c: (
            f"{mean[c]:.2f}"
            if r == "MEAN (15)"
            else f"{min(result[c][k] for k in CORRUPTIONS):.2f}"
            if r == "LOWEST"
            else f"{result[c][r]:.2f}"
        ),
    )
    return result


# -- 2. the table ---------------------------------------------------------------------------------------------
def tabular(trials: int, seed: int) -> None:
    frame, _ = load_tumours(seed)
    order = np.random.default_rng(seed).permutation(len(frame))
    ref, pool = frame.iloc[order[:400]], frame.iloc[order[400:]]
    numeric = [str(c) for c in ref.columns[:30]]
    columns = [str(c) for c in np.random.default_rng(seed).choice(numeric, 3, replace=False)]
    dets = {"tabular": TabularDetector(alpha=ALPHA).fit(ref), "ks (numeric)": KSDetector(alpha=ALPHA).fit(ref[numeric])}
    started = time.monotonic()
    found = {name: {} for name in dets}
    for kind in ("clean", *TABLE_SHIFTS):
        rng = np.random.default_rng([seed, len(kind)])
        hits, first = dict.fromkeys(dets, 0), dict.fromkeys(dets, 0)
        for _ in range(trials):
            batch = pool.iloc[rng.choice(len(pool), 50, replace=False)]
            if kind != "clean":
                batch, truth = shift_table(batch, kind, ref, rng, columns)
            for name, det in dets.items():
                res = det.score(batch if name == "tabular" else batch[numeric])
                if res.is_drift:
                    hits[name] += 1
                    first[name] += kind != "clean" and bool(res.drifted) and res.drifted[0] in truth
        for name in dets:
            rate = hits[name] / trials
            found[name][kind] = (
                f"{rate:.2f}" if kind == "clean" else f"{rate:.2f} / {first[name] / max(hits[name], 1):.2f}"
            )
    table(
        f"Table (breast cancer + 2 categorical columns), n = 50, {trials} trials ({time.monotonic() - started:.0f} s, "
        f"{load()});\nshifted columns {columns}; cells: detection rate / shifted column named first "
        "('clean': false positive rate)",
        ["clean", *TABLE_SHIFTS],
        list(dets),
        lambda r, c: found[c][r],
    )


# -- 3. label shift ---------------------------------------------------------------------------------------
def label_shift(bbsd: ModelOutputDetector, pool: np.ndarray, y_pool: np.ndarray, trials: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y_pool == c) for c in range(10)]
    bbse, naive, detected = [], [], 0
    n = 200
    for _ in range(trials):
        shares = rng.dirichlet(np.ones(10))
        counts = rng.multinomial(n, shares)
        idx = np.concatenate([rng.choice(by_class[c], k, replace=True) for c, k in enumerate(counts)])
        res = bbsd.score(pool[idx])
        truth = counts / n
        estimate = np.array([res.estimates[f"proportion[{c}]"] for c in range(10)])
        mean_prediction = bbsd.predict_proba(pool[idx]).mean(axis=0)
        bbse.append(np.abs(estimate - truth).sum() / 2)
        naive.append(np.abs(mean_prediction - truth).sum() / 2)
        detected += res.is_drift
    print(
        f"\nLabel shift (digits, n = {n}, class shares ~ Dirichlet(1), {trials} batches, {load()}): BBSD detects "
        f"{detected / trials:.2f}; total variation error of the new class shares: BBSE median {np.median(bbse):.3f} "
        f"(max {np.max(bbse):.3f}), mean prediction median {np.median(naive):.3f}"
    )


# -- 4. the stream -------------------------------------------------------------------------------------------
def stream(detector, draw, clean: int, repeats: int, horizon: int, label: str) -> None:
    """Alarms over `clean` clean batches, and batches to the alarm under a sustained mild shift."""
    started = time.monotonic()
    watch = StreamChecker(detector)
    flagged = sum(watch.update(draw(i, False)).result.is_drift for i in range(clean))
    false_alarms = len(watch.alarms)
    delays, per_batch = [], []
    for r in range(repeats):
        watch = StreamChecker(detector)
        for k in range(1, horizon + 1):
            step = watch.update(draw(10_000 + r * horizon + k, True))
            per_batch.append(step.result.is_drift)
            if step.alarm:
                delays.append(k)
                break
        else:
            delays.append(horizon + 1)
    print(
        f"  {label}:\n    {clean} clean batches: {flagged} flagged at alpha, {false_alarms} alarms; "
        f"sustained mild shift (each batch flagged {np.mean(per_batch):.2f} of the time at alpha): alarm after "
        f"median {np.median(delays):.0f} batches (mean {np.mean(delays):.1f}, {repeats} streams) "
        f"[{time.monotonic() - started:.0f} s, {load()}]"
    )


def streams(ae, clean_pool: np.ndarray, clean: int, repeats: int, seed: int) -> None:
    print(f"\nThe stream's alarm (CUSUM on p-values, arl 500, threshold {StreamChecker().threshold:.2f})")
    frame, _ = load_tumours(seed)
    order = np.random.default_rng(seed).permutation(len(frame))
    ref, pool = frame.iloc[order[:300]], frame.iloc[order[300:]]
    columns = [str(c) for c in np.random.default_rng(seed).choice([str(c) for c in ref.columns[:30]], 3, replace=False)]
    det = TabularDetector(alpha=ALPHA).fit(ref)

    def table_batch(i: int, shifted: bool):
        rng = np.random.default_rng([seed, i])
        batch = pool.iloc[rng.choice(len(pool), 50, replace=False)]
        return shift_table(batch, "scale", ref, rng, columns, amount=1.15)[0] if shifted else batch

    stream(det, table_batch, clean, repeats, 30, f"table, n = 50, mild shift: 3 of 30 columns spread x1.15 {columns}")

    def image_batch(i: int, shifted: bool):
        rng = np.random.default_rng([seed, i])
        batch = clean_pool[rng.choice(len(clean_pool), 30, replace=False)]
        if shifted:
            half = rng.random(len(batch)) < 0.5
            batch = batch.copy()
            batch[half] = corrupt(batch[half], "shot_noise", 1, seed=i)
        return batch

    stream(
        ae,
        image_batch,
        clean,
        repeats,
        30,
        "digits, n = 30, autoencoder, mild shift: half of each batch with shot noise sev 1",
    )


# -- 5. throughput and delay ------------------------------------------------------------------------------
def throughput(dets: dict, pool: np.ndarray) -> None:
    print(f"\nScoring throughput (samples/s, batches of 200, median of 10, {load()})")
    for name, det in dets.items():
        times = []
        for i in range(10):
            batch = pool[i * 50 : i * 50 + 200] if i * 50 + 200 <= len(pool) else pool[:200]
            started = time.perf_counter()
            det.score(batch)
            times.append(time.perf_counter() - started)
        print(f"  {name:<14} {200 / statistics.median(times):10.0f}")


def latency(detector, ref_pool: np.ndarray, samples: int, server: bool) -> list[float]:
    """Seconds from `log_batch` returning to the batch's check run being committed in MLflow."""
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
        watcher = Watcher(uri, "bench", detector, every=1.0).start()
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
    parser.add_argument("--quick", action="store_true", help="fewer trials and streams, no server latency")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--references", type=int, default=None, help="reference splits for the false positive rate")
    parser.add_argument("--clean", type=int, default=None, help="clean batches per reference (default 200)")
    parser.add_argument("--stream", type=int, default=None, help="clean batches in the stream (default 100 / 500)")
    args = parser.parse_args()
    trials = args.trials or (15 if args.quick else 50)
    began = time.monotonic()
    print(
        f"# scanflow_nb drift benchmark: alpha {ALPHA}, {trials} trials, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores, started {time.strftime('%H:%M:%S')}, {load()}"
    )
    X, y = load_digits()
    order = np.random.default_rng(args.seed).permutation(len(X))
    ref, pool, y_pool = X[order[:1000]], X[order[1000:]], y[order[1000:]]
    dets = image_detectors(ref, y[order[:1000]], args.seed)

    images(dets, pool, 30, 1, trials, args.seed)
    calibration(X, y, dets, args.references or (2 if args.quick else 5), args.clean or 200, args.seed)
    images(dets, pool, 100, 3, max(10, trials * 3 // 5), args.seed)
    tabular(trials * 2, args.seed)
    label_shift(dets["bbsd"], pool, y_pool, trials, args.seed)
    streams(dets["autoencoder"], pool, args.stream or (100 if args.quick else 500), 5 if args.quick else 30, args.seed)
    throughput(dets, pool)
    if not args.no_latency:
        samples = 5 if args.quick else 15
        print(
            f"\nDelay from log_batch returning to the result being in MLflow (autoencoder, 1 s poll, {samples} batches)"
        )
        for label, server in (("embedded sqlite store", False), ("mlflow server on 127.0.0.1", True)):
            if server and args.quick:
                continue
            delays = latency(dets["autoencoder"], pool, samples, server)
            print(f"  {label:<28} median {statistics.median(delays):.2f} s, max {max(delays):.2f} s ({load()})")
    print(f"\nfinished {time.strftime('%H:%M:%S')} after {(time.monotonic() - began) / 60:.1f} min, {load()}")


if __name__ == "__main__":
    main()
