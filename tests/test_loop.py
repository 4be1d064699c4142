"""The closed loop on real parts: the KS drift detector, a modAL improver, the MLflow registry planner."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from scanflow_nb.check import KSDetector
from scanflow_nb.datasets import corrupt, load_digits
from scanflow_nb.errors import ValidationError
from scanflow_nb.improve import ActiveLearner
from scanflow_nb.loop import ClosedLoop, closed_loop
from scanflow_nb.plan import ModelPlanner

IMAGES, LABELS = load_digits()
ORDER = np.random.default_rng(0).permutation(len(LABELS))
IMAGES, LABELS = IMAGES[ORDER], LABELS[ORDER]


def part(a, b, rotated=False):
    images = corrupt(IMAGES[a:b], "rotate", severity=3, seed=a) if rotated else IMAGES[a:b]
    return images, LABELS[a:b]


HOLD_X = np.concatenate([part(1000, 1200)[0], part(1200, 1400, rotated=True)[0]])
HOLD_Y = LABELS[1000:1400]


@pytest.fixture
def parts(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    X0, y0 = part(0, 300)
    improver = ActiveLearner(LogisticRegression(max_iter=500), X_labeled=X0, y_labeled=y0, X_pool=np.empty((0, 8, 8)))
    detector = KSDetector(alpha=0.05).fit(IMAGES[300:600])
    return detector, improver, ModelPlanner(uri, "digits", experiment="loop"), uri


def test_oracle_loop_promotes_a_model_that_learned_the_drift(parts):
    from mlflow.tracking import MlflowClient

    detector, improver, planner, uri = parts
    batches = [part(800, 900), part(600, 800, rotated=True), part(1400, 1600, rotated=True)]
    rounds = closed_loop(detector, improver, planner, batches, HOLD_X, HOLD_Y, k=20)

    first, second, third = rounds
    assert not first.drift.is_drift and first.candidates == [] and first.decision is None
    assert second.drift.is_drift and len(second.candidates) == len(second.drift.indices) > 20
    assert len(second.picked) == 20 and set(second.picked) <= set(second.candidates)
    truth = LABELS[600:800][second.drift.indices]
    assert second.labels == [int(truth[second.candidates.index(i)]) for i in second.picked]
    assert second.decision.promoted and second.decision.score > second.decision.champion_score
    assert improver.n_labeled == 340 and planner.champion() == max(
        r.decision.version for r in rounds if r.decision and r.decision.promoted
    )

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("loop").experiment_id
    runs = client.search_runs([exp], max_results=200)
    by_id = {r.info.run_id: r for r in runs}
    loop_run = next(r for r in runs if r.data.tags.get("scanflow.kind") == "loop")
    assert loop_run.info.status == "FINISHED"
    assert loop_run.data.metrics == {**loop_run.data.metrics, "rounds": 3, "drifted": 2, "labels": 40}
    round_two = by_id[second.run_id]
    assert round_two.data.tags["mlflow.parentRunId"] == loop_run.info.run_id
    steps = sorted(r.data.tags["scanflow.kind"] for r in runs if r.data.tags.get("mlflow.parentRunId") == second.run_id)
    assert steps == ["check", "decision", "labels", "model"]
    labels_run = next(
        r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == second.run_id and r.data.tags["scanflow.kind"] == "labels"
    )
    assert second.queries[0].used == "typical"  # new candidates: auto starts with typical samples of the drift
    assert labels_run.data.params["strategy"] == "auto" and labels_run.data.params["strategy_used"] == "typical"
    decision_run = by_id[second.decision.run_id]
    assert decision_run.data.tags["scanflow.reason"] == second.decision.reason
    check_run = next(
        r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == second.run_id and r.data.tags["scanflow.kind"] == "check"
    )
    assert check_run.data.metrics["is_drift"] == 1 and check_run.data.metrics["anomalies"] == len(second.candidates)


def test_step_with_a_labeler_and_with_the_panel(parts, tmp_path):
    detector, improver, planner, _ = parts
    loop = ClosedLoop(detector, improver, planner, HOLD_X, HOLD_Y, k=5)
    seen = []

    def labeler(samples):
        seen.append(samples.shape)
        return [0] * len(samples)  # a careless person: every label is 0

    X, _ = part(600, 700, rotated=True)
    bad = loop.step(X, labeler=labeler)
    assert seen == [(5, 8, 8)] and bad.labels == [0] * 5
    assert loop.first_decision.promoted and bad.decision.action in ("promote", "keep")

    X, y = part(1400, 1600, rotated=True)
    current = loop.check(X)
    panel = loop.panel(store=tmp_path / "labels.sqlite")
    truth = dict(zip(current.candidates, y[current.drift.indices].tolist()))
    while panel.current is not None and not panel.finished:
        assert panel.current in truth  # only this round's anomalies are shown
        panel.label(truth[panel.current])
    panel.wait(120)
    assert panel.errors == [] and len(current.picked) == 5 and current.decision is not None
    assert current.labels == [truth[i] for i in current.picked]
    loop.finish()


def test_the_workflows_improver_spec_sets_strategy_and_k(parts, tmp_path):
    from scanflow_nb import App, Improver, Workflow

    detector, improver, _, _ = parts
    app = App(tmp_path / "app", [Workflow("serve", improver=Improver(strategy="margin", k=7))])
    app.save()
    loop = ClosedLoop.for_workflow(app, "serve", detector, improver, HOLD_X, HOLD_Y, model_name="digits")
    assert loop.k == 7 and improver.strategy == "margin" and loop.planner.experiment == "serve"
    X, y = part(600, 800, rotated=True)
    current = loop.step(X, y)
    assert len(current.picked) == 7 and [q.used for q in current.queries] == ["margin"]
    loop.finish()


def test_bad_input(parts):
    detector, improver, planner, _ = parts
    with pytest.raises(ValidationError, match="score\\(X_batch\\) method"):
        ClosedLoop(object(), improver, planner, HOLD_X, HOLD_Y)
    with pytest.raises(ValidationError, match="k must be"):
        ClosedLoop(detector, improver, planner, HOLD_X, HOLD_Y, k=0)
    with pytest.raises(ValidationError, match="must be a scanflow_nb.improve.ActiveLearner, got LogisticRegression"):
        ClosedLoop(detector, LogisticRegression(), planner, HOLD_X, HOLD_Y)
    loop = ClosedLoop(detector, improver, planner, HOLD_X, HOLD_Y)
    with pytest.raises(ValidationError, match="no round yet"):
        loop.pick()
    with pytest.raises(ValidationError, match="not both"):
        loop.step(IMAGES[:10], LABELS[:10], labeler=list)
    clean = loop.check(IMAGES[800:900])
    assert not clean.drift.is_drift
    with pytest.raises(ValidationError, match="did not drift"):
        loop.pick()
    with pytest.raises(ValidationError, match="has 100 features per sample but the learner uses 64"):
        improver.extend_pool(np.zeros((2, 10, 10)))
    loop.finish()
