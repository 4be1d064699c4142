"""The demo: a nested workflow on scikit-learn's digits, run locally with the embedded tracker.

`python -m scanflow_nb.demo [APP_DIR]` prepares the data, trains two models side by side in a
parallel group, picks the better one, prints what ran and where the MLflow runs are, and writes
the workflow graph next to the app.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PREPARE = '''\
"""Split scikit-learn's digits into train and test sets."""
import argparse
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--test-size", type=float, default=0.25)
args = parser.parse_args()
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=args.test_size, random_state=0)
np.savez("data/digits.npz", X_train=X_train, X_test=X_test, y_train=y_train, y_test=y_test)
print(f"train {len(X_train)} samples, test {len(X_test)} samples")
'''

TRAIN = '''\
"""Train one model on the prepared digits and log its test accuracy to MLflow."""
import argparse
import json
import mlflow
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.ensemble import RandomForestClassifier

parser = argparse.ArgumentParser()
parser.add_argument("--model", choices=["logistic", "forest"], required=True)
args = parser.parse_args()
data = np.load("data/digits.npz")
model = (LogisticRegression(max_iter=500) if args.model == "logistic"
         else RandomForestClassifier(n_estimators=100, random_state=0))
model.fit(data["X_train"], data["y_train"])
accuracy = float(model.score(data["X_test"], data["y_test"]))
mlflow.log_metric("accuracy", accuracy)
with open(f"data/{args.model}.json", "w") as handle:
    json.dump({"model": args.model, "accuracy": accuracy}, handle)
print(f"{args.model}: test accuracy {accuracy:.3f}")
'''

SELECT = '''\
"""Pick the better model."""
import json
import mlflow

scores = [json.load(open(f"data/{name}.json")) for name in ("logistic", "forest")]
best = max(scores, key=lambda s: s["accuracy"])
mlflow.log_metric("best_accuracy", best["accuracy"])
mlflow.set_tag("best_model", best["model"])
print(f"best model: {best['model']} ({best['accuracy']:.3f})")
'''


def build(app_dir: Path):
    """The demo app: digits -> (logistic | forest in parallel) -> select."""
    from .app import App
    from .spec import Workflow

    app = App(app_dir)
    (app.path / "data").mkdir(parents=True, exist_ok=True)
    app.workflows = []
    app.add(Workflow("demo"))
    app.add(Workflow("training", parallel=True), parent="demo")
    app.add(Workflow("report"), parent="demo")
    app.declare_executor(
        "demo", "prepare", PREPARE, save=False, parameters={"test-size": 0.25}, outputs=["data/digits.npz"]
    )
    for model in ("logistic", "forest"):
        app.declare_executor(
            "training",
            model,
            TRAIN,
            save=False,
            parameters={"model": model},
            inputs=["data/digits.npz"],
            outputs=[f"data/{model}.json"],
        )
    app.declare_executor("report", "select", SELECT, save=False, inputs=["data/logistic.json", "data/forest.json"])
    app.save()
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scanflow_nb.demo", description=__doc__.splitlines()[0])
    parser.add_argument("app_dir", nargs="?", default="demo_app", help="where to create the demo app")
    parser.add_argument("--force", action="store_true", help="rerun every executor")
    args = parser.parse_args(argv)
    app = build(Path(args.app_dir))
    result = app.run("demo", force=args.force)
    print()
    print(result.summary())
    print(f"\nBrowse the runs:  mlflow ui --backend-store-uri {result.tracking_uri}")
    print(f"Workflow file:    {app.config_file}  (rerun: scanflow --file {app.path} run demo)")
    states = {key: r.status for key, r in result.executors.items()}
    from .graph import GraphvizMissing, save_graph

    try:
        graph = save_graph(app.find("demo"), app.path / "workflow.svg", states)
    except GraphvizMissing as exc:  # the Graphviz source needs no `dot` to be written
        graph = save_graph(app.find("demo"), app.path / "workflow.gv", states)
        print(f"({exc})")
    print(f"Workflow graph:   {graph}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
