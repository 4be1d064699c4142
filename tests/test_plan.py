"""The planner against a real MLflow Model Registry (the embedded SQLite store)."""

import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from scanflow_nb.errors import ValidationError
from scanflow_nb.plan import ModelPlanner

X, Y = load_digits(return_X_y=True)
HOLD_X, HOLD_Y = X[1500:], Y[1500:]


def trained(n):
    return LogisticRegression(max_iter=500).fit(X[:n], Y[:n])


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    yield f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mp.undo()


def test_promote_only_better_models_then_roll_back(uri):
    from mlflow.tracking import MlflowClient

    planner = ModelPlanner(uri, "digits", experiment="plan-test")
    weak, worse, strong = trained(60), trained(25), trained(600)

    v1 = planner.register(weak)
    first = planner.decide(v1, HOLD_X, HOLD_Y)
    assert first.promoted and planner.champion() == v1 and "no champion yet" in first.reason

    v2 = planner.register(worse)
    assert planner.challenger() == v2
    kept = planner.decide(v2, HOLD_X, HOLD_Y)
    assert not kept.promoted and kept.action == "keep" and planner.champion() == v1
    assert kept.score < kept.champion_score and "not better" in kept.reason

    v3 = planner.register(strong)
    better = planner.decide(v3, HOLD_X, HOLD_Y)
    assert better.promoted and planner.champion() == v3 and better.previous == v1
    assert better.score == pytest.approx(strong.score(HOLD_X, HOLD_Y))

    client = MlflowClient(uri)
    assert int(client.get_model_version_by_alias("digits", "champion").version) == v3
    assert client.get_registered_model("digits").aliases == {"champion": v3}  # challenger promoted away
    assert client.get_model_version("digits", str(v3)).tags["scanflow.replaced"] == str(v1)
    assert client.get_model_version("digits", str(v2)).tags["scanflow.decision"] == "keep"

    back = planner.rollback("v3 misbehaves in production")
    assert back.action == "rollback" and planner.champion() == v1 and "misbehaves" in back.reason
    with pytest.raises(ValidationError, match="replaced no earlier version"):
        planner.rollback()

    logged = planner.decisions()
    assert [(d["action"], d["version"], d["champion"]) for d in logged] == [
        ("promote", v1, v1),
        ("keep", v2, v1),
        ("promote", v3, v3),
        ("rollback", v3, v1),
    ]
    assert logged[1]["score"] == pytest.approx(kept.score) and logged[1]["promoted"] == 0
    run = client.get_run(better.run_id)
    assert run.data.tags["scanflow.reason"] == better.reason and run.data.params["previous"] == str(v1)

    fresh = ModelPlanner(uri, "digits", experiment="plan-test")  # loads from the registry, not memory
    assert (fresh.load().predict(HOLD_X) == weak.predict(HOLD_X)).all()


def test_min_improvement_and_a_lower_is_better_metric(uri):
    def loss(model, X, y):
        return log_loss(y, model.predict_proba(X), labels=model.classes_)

    planner = ModelPlanner(
        uri, "digits-loss", metric=loss, greater_is_better=False, min_improvement=0.01, experiment="plan-test"
    )
    planner.decide(planner.register(trained(100)), HOLD_X, HOLD_Y)
    same = planner.decide(planner.register(trained(100)), HOLD_X, HOLD_Y)
    assert same.action == "keep" and same.score == pytest.approx(same.champion_score)
    lower = planner.decide(planner.register(trained(800)), HOLD_X, HOLD_Y)
    assert lower.promoted and lower.score < lower.champion_score and planner.metric_name == "loss"


def test_bad_input(uri):
    with pytest.raises(ValidationError, match="unknown metric 'acc'"):
        ModelPlanner(uri, "digits", metric="acc")
    with pytest.raises(ValidationError, match="aliases must differ"):
        ModelPlanner(uri, "digits", alias="x", challenger_alias="x")
    planner = ModelPlanner(uri, "never-registered", experiment="plan-test")
    with pytest.raises(ValidationError, match="has no version 7"):
        planner.decide(7, HOLD_X, HOLD_Y)
    with pytest.raises(ValidationError, match="nothing to roll back"):
        planner.rollback()
    assert planner.decisions() == []


def test_planner_from_a_workflow_spec(tmp_path):
    from scanflow_nb import App, Planner, Workflow

    app = App(
        tmp_path / "app", [Workflow("serve", planner=Planner(model="digits-clf", metric="f1_macro")), Workflow("bare")]
    )
    planner = ModelPlanner.for_workflow(app, "serve")
    assert planner.model_name == "digits-clf" and planner.metric_name == "f1_macro"
    assert planner.experiment == "serve" and planner.tracking_uri == app.tracking_uri("serve")
    v = planner.register(trained(100))
    assert planner.decide(v, HOLD_X, HOLD_Y).promoted and planner.champion() == v
    bare = ModelPlanner.for_workflow(app, "bare")  # no Planner declared: the defaults, named after it
    assert bare.model_name == "bare" and bare.metric_name == "accuracy" and bare.alias == "champion"
