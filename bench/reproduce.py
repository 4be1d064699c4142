"""The full reproduction of the paper's drift experiment: the table that goes into README.rst.

    python bench/reproduce.py                       # digits (offline), all 15 corruptions, autoencoder,
                                                    # uncertainty and ranked batch sampling vs random
    python bench/reproduce.py --dataset mnist fashion_mnist digits --json bench/out/reproduce.json

Each data set prints its plain-text table, then a reStructuredText list-table to paste into the README.
A data set that cannot be downloaded (offline machine) is reported and skipped; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scanflow_nb.datasets.loaders import DatasetUnavailable  # noqa: E402
from scanflow_nb.reproduce import DATASETS, reproduce  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", choices=DATASETS, default=["digits"])
    parser.add_argument("--detector", default="autoencoder", choices=["autoencoder", "ks", "mmd"])
    parser.add_argument(
        "--strategy",
        nargs="+",
        default=["uncertainty", "batch"],
        choices=["uncertainty", "margin", "entropy", "batch"],
        help="active-learning strategies to compare",
    )
    parser.add_argument("--k", type=int, default=20, help="labels per drifted batch")
    parser.add_argument("--severity", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="random baselines averaged")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    args = parser.parse_args(argv)
    print(
        f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"detector {args.detector}, k={args.k}, severity {args.severity}, {args.repeats} random draws, seed {args.seed}"
    )
    results = {}
    for dataset in args.dataset:
        for strategy in args.strategy:
            try:
                result = reproduce(
                    dataset,
                    k=args.k,
                    severity=args.severity,
                    detector=args.detector,
                    strategy=strategy,
                    repeats=args.repeats,
                    seed=args.seed,
                    small=False,
                )
            except DatasetUnavailable as exc:
                print(f"\n## {dataset}: not available here - {exc}")
                break
            results[f"{dataset}/{strategy}"] = result
            print(f"\n## {dataset}, {strategy} sampling\n\n{result.table()}\n\n{result.table('rst')}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({name: r.to_dict() for name, r in results.items()}, indent=1))
        print(f"wrote {args.json}")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
