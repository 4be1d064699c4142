"""The full reproduction of the paper's drift experiment, over seeds: the table that goes into README.rst.

    python bench/reproduce.py                       # digits (offline), all 15 corruptions, autoencoder,
                                                    # k = 20 and 100, 3 seeds, the improver's default vs random
    python bench/reproduce.py --strategy auto margin --seeds 5 --jobs 2 --json bench/out/reproduce.json
    python bench/reproduce.py --dataset mnist fashion_mnist     # online only

Each seed is a new split, detector, corruption draw and random baselines. Per setting it prints every
seed's summary, then per corruption the accuracies averaged over the seeds (chosen vs random), how many
corruptions the chosen labels beat random on, and a reStructuredText list-table for the README.
A data set that cannot be downloaded (offline machine) is reported and skipped; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scanflow_nb.datasets.loaders import DatasetUnavailable  # noqa: E402
from scanflow_nb.improve import STRATEGIES  # noqa: E402
from scanflow_nb.reproduce import CLEAN, DATASETS, reproduce  # noqa: E402


def over_seeds(results) -> list[dict]:
    """Per corruption: accuracies averaged over the seeds, and on how many seeds the chosen labels won."""
    rows = []
    for name in [r.corruption for r in results[0].rows if r.corruption != CLEAN]:
        found = [result.row(name) for result in results]
        improved = [r for r in found if r.active is not None]
        mean = lambda values: float(np.mean(values)) if values else float("nan")
        rows.append(
            {
                "corruption": name,
                "detected": sum(r.drift for r in found),
                "before": mean([r.before for r in improved]),
                "chosen": mean([r.active for r in improved]),
                "random": mean([r.random for r in improved]),
                "wins": sum(r.active > r.random for r in improved),
                "seeds": len(improved),
                "used": "; ".join(sorted({r.used for r in improved})),
            }
        )
    return rows


def report(label: str, results) -> dict:
    rows = over_seeds(results)
    scored = [r for r in rows if r["seeds"]]
    gains = [r["chosen"] - r["random"] for r in scored]
    beats = sum(g > 0 for g in gains)
    print(f"\n## {label}: averaged over {len(results)} seeds\n")
    print(
        f"{'corruption':14s} {'drift':>5s} {'before':>7s} {'chosen':>7s} {'random':>7s} {'gain':>7s} {'wins':>5s}  used"
    )
    for r in rows:
        print(
            f"{r['corruption']:14s} {r['detected']:>3d}/{len(results)} {r['before']:7.3f} {r['chosen']:7.3f} "
            f"{r['random']:7.3f} {r['chosen'] - r['random']:+7.3f} {r['wins']:>3d}/{r['seeds']}  {r['used']}"
        )
    summary = {
        "beats": beats,
        "corruptions": len(scored),
        "mean_before": float(np.mean([r["before"] for r in scored])),
        "mean_chosen": float(np.mean([r["chosen"] for r in scored])),
        "mean_random": float(np.mean([r["random"] for r in scored])),
        "seed_wins": [result.summary()["active_beats_random"] for result in results],
    }
    print(
        f"\nchosen beats random on {beats} of {len(scored)} corruptions (means over seeds; per seed: "
        f"{', '.join(map(str, summary['seed_wins']))}); mean accuracy {summary['mean_before']:.3f} before, "
        f"{summary['mean_chosen']:.3f} chosen, {summary['mean_random']:.3f} random, gain "
        f"{summary['mean_chosen'] - summary['mean_random']:+.4f}   (goal: >= 12 of 15, gain > 0)"
    )
    lines = [".. list-table::", "   :header-rows: 1", ""]
    header = ["corruption", "before", "chosen", "random", "gain", "seeds won"]
    body = [
        [r["corruption"], *(f"{r[c]:.3f}" for c in ("before", "chosen", "random"))]
        + [f"{r['chosen'] - r['random']:+.3f}", f"{r['wins']} of {r['seeds']}"]
        for r in scored
    ]
    for cells in [header, *body]:
        lines += [f"   * - {cells[0]}", *[f"     - {c}" for c in cells[1:]]]
    print("\n" + "\n".join(lines))
    return {"rows": rows, "summary": summary, "seeds": [result.to_dict() for result in results]}


def run(args, dataset: str, seed: int) -> dict:
    """Every k and strategy on one seed, sharing the seed's detector: {label: Reproduction}."""
    results, detectors = {}, {}
    for k in args.k:
        for strategy in args.strategy:
            label = f"{dataset}, k = {k}, {strategy} ({args.embedding} embedding)"
            result = reproduce(
                dataset,
                k=k,
                severity=args.severity,
                detector=args.detector,
                strategy=strategy,
                embedding=args.embedding,
                step=args.step,
                repeats=args.repeats,
                seed=seed,
                small=False,
                echo=None,
                detectors=detectors,  # one detector per seed, shared by every k and strategy
            )
            s = result.summary()
            print(
                f"{label}, seed {seed}: clean accuracy {result.clean_accuracy:.3f}, drift in {s['detected']} of "
                f"{s['corruptions']}, chosen beats random in {s['active_beats_random']} of {s['improved']} "
                f"(mean {s['mean_active']:.3f} vs {s['mean_random']:.3f}); {result.seconds:.0f} s",
                flush=True,
            )
            results[label] = result
    return results


def _over_seeds(args, dataset: str) -> list[dict]:
    """`run` for every seed, `args.jobs` seeds at a time (each in its own process, with its own detector)."""
    if args.jobs == 1:
        return [run(args, dataset, seed) for seed in range(args.seeds)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive a fork
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        return list(pool.map(run, [args] * args.seeds, [dataset] * args.seeds, range(args.seeds)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", choices=DATASETS, default=["digits"])
    parser.add_argument("--detector", default="autoencoder", choices=["autoencoder", "ks", "mmd"])
    parser.add_argument("--strategy", nargs="+", default=["auto"], choices=[s for s in STRATEGIES if s != "random"])
    parser.add_argument("--embedding", default="pca", choices=["pca", "checker"])
    parser.add_argument("--k", nargs="+", type=int, default=[20, 100], help="labels per drifted batch")
    parser.add_argument("--step", type=int, default=10, help="labels per query (the improver retrains after each)")
    parser.add_argument("--severity", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="random baselines averaged")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once, each in its own process")
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    args = parser.parse_args(argv)
    print(
        f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f}; detector {args.detector}, severity {args.severity}, {args.step} labels a query, "
        f"{args.repeats} random draws, seeds 0-{args.seeds - 1}",
        flush=True,
    )
    out = {}
    for dataset in args.dataset:
        started = time.perf_counter()
        try:
            seeds = _over_seeds(args, dataset)
        except DatasetUnavailable as exc:
            print(f"\n## {dataset}: not available here - {exc}")
            continue
        for label in seeds[0]:
            out[label] = report(label, [results[label] for results in seeds])
        print(f"({time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f})", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0 if out else 1


if __name__ == "__main__":
    sys.exit(main())
