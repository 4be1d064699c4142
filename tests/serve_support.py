"""Fixtures for the serving tests: an app whose embedded store holds two registered versions of a digits model,
and a small client that remembers every row a service answered."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import requests

from scanflow_nb import App, Workflow

MODEL = "digits"


@dataclass
class Registry:
    app: App
    uri: str
    X: np.ndarray
    y: np.ndarray
    models: dict  # version -> the fitted scikit-learn model registered as that version


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """Versions 1 (logistic regression on 300 digits; the champion) and 2 (on 1,000) of model `digits`."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from scanflow_nb.plan import ModelPlanner
    from scanflow_nb.track import get_client

    X, y = load_digits(return_X_y=True)
    app = App(tmp_path_factory.mktemp("served") / "app")
    app.add(Workflow("serve"))
    app.save()
    uri = app.tracking_uri("serve")
    planner = ModelPlanner(uri, MODEL, experiment="planner")
    models = {}
    for n in (300, 1000):
        model = LogisticRegression(max_iter=300).fit(X[:n], y[:n])
        models[str(planner.register(model))] = model
    get_client(uri).set_registered_model_alias(MODEL, "champion", "1")
    return Registry(app, uri, X.astype(float), y, models)


@dataclass
class Client:
    """Posts to a service and keeps every row answered 200, with the version that answered it."""

    url: str
    answered: list = field(default_factory=list)  # (rows, version)

    def post(self, body, content_type="application/json", rows=None):
        data = json.dumps(body) if content_type == "application/json" else body
        reply = requests.post(f"{self.url}/invocations", data=data, headers={"Content-Type": content_type}, timeout=60)
        if reply.status_code == 200 and rows is not None:
            self.answered.append((np.asarray(rows, dtype=float), reply.headers["X-Scanflow-Model-Version"]))
        return reply

    def predict(self, rows):
        reply = self.post({"inputs": np.asarray(rows).tolist()}, rows=rows)
        assert reply.status_code == 200, reply.text
        return reply.json()["predictions"], reply.headers["X-Scanflow-Model-Version"]

    @property
    def rows(self) -> int:
        return sum(len(rows) for rows, _ in self.answered)


def batch_runs(uri: str, experiment: str, service: str) -> list:
    """The complete inference batches a service logged, oldest first."""
    from scanflow_nb.track import get_client

    client = get_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id],
        f"tags.`scanflow.serve.service` = '{service}' and tags.`scanflow.batch` = 'true'",
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )


def logged_rows(uri: str, experiment: str, service: str) -> int:
    return sum(int(run.data.tags["scanflow.rows"]) for run in batch_runs(uri, experiment, service))


def wait_for(predicate, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


@pytest.fixture
def spool_in_tmp(tmp_path, monkeypatch):
    """Run the test in its own folder: a service's spool (under the working directory) starts empty."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
