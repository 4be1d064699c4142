"""The lean write path (track.lean): a run it writes reads back exactly as one MLflow wrote itself, through
MlflowClient, mlflow.search_runs and the MLflow UI's own queries; MLflow's errors and limits hold; a store
it has not verified, or an HTTP tracker, keeps MlflowClient. A real SQLite store and `mlflow server`."""

import json
import math
import urllib.request

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.db.utils import _get_latest_schema_revision
from mlflow.tracking import MlflowClient
from sqlalchemy import event

from scanflow_nb.track import embedded_uri, lean
from scanflow_nb.track.lean import LeanWrites
from scanflow_nb.track.runs import RunWriter
from scanflow_nb.track.server import TrackerServer
from scanflow_nb.track.store import experiment_id, get_client

LONG = "v" * 7000  # over MLflow's param value limit (6000): truncated alike
PARAMS = {"lr": 0.1, "layers": 3, "long": LONG}
TAGS = {"scanflow.status": "succeeded", "note": "x", "mlflow.user": "ada"}
START, FIRST, LATER, EARLIER, END = (
    1_700_000_000_000,
    1_700_000_001_000,
    1_700_000_003_000,
    1_700_000_002_000,
    1_700_000_004_000,
)

# the latest-metrics rule: a later timestamp wins (acc), an earlier one does not (loss); NaN and +-inf as
# MLflow stores them
FIRST_METRICS = [("loss", 0.5, LATER), ("acc", 0.9, FIRST)]
METRICS = [
    ("loss", 0.25, FIRST),
    ("acc", 0.1, EARLIER),
    ("nan", math.nan, LATER),
    ("inf", math.inf, LATER),
    ("ninf", -math.inf, LATER),
]


def both_ways(tmp_path):
    """The same run written by MLflow itself and by the lean path: (client, experiment id, mlflow id, lean id)."""
    uri = embedded_uri(tmp_path)
    client = get_client(uri)
    exp = experiment_id(client, "exp")
    writes = LeanWrites.open(client)
    assert writes is not None, f"MLflow's schema revision {_get_latest_schema_revision()} is not in lean.VERIFIED"
    create_tags = {"scanflow.kind": "executor", "mlflow.user": "ada"}

    theirs = client.create_run(exp, start_time=START, tags=create_tags, run_name="step").info.run_id
    client.log_batch(theirs, metrics=[Metric(k, v, t, 0) for k, v, t in FIRST_METRICS])
    client.log_batch(
        theirs,
        metrics=[Metric(k, v, t, 0) for k, v, t in METRICS],
        params=[Param(k, str(v)) for k, v in PARAMS.items()],
        tags=[RunTag(k, v) for k, v in TAGS.items()],
    )
    client.set_terminated(theirs, "FINISHED", END)

    ours, _ = writes.create(exp, "step", START, create_tags)
    for key, value, at in FIRST_METRICS + METRICS[:-1]:  # a running run's lingering batches
        assert writes.write_out(ours, {}, {key: value}, {}, at)
    key, value, at = METRICS[-1]  # the last with everything else and the run's end
    assert writes.write_out(ours, PARAMS, {key: value}, TAGS, at, status="FINISHED", end_ms=END)
    return client, exp, theirs, ours


def same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_a_lean_run_reads_back_as_mlflows_own(tmp_path):
    client, exp, theirs, ours = both_ways(tmp_path)
    a, b = client.get_run(theirs), client.get_run(ours)
    for field in ("status", "start_time", "end_time", "lifecycle_stage", "user_id", "run_name", "experiment_id"):
        assert getattr(a.info, field) == getattr(b.info, field), field
    assert a.info.user_id == "ada" and a.info.run_name == "step" and a.info.status == "FINISHED"
    assert b.info.artifact_uri == a.info.artifact_uri.replace(theirs, ours) and ours in b.info.artifact_uri
    assert a.data.params == b.data.params and len(b.data.params["long"]) == 6000
    assert a.data.tags == b.data.tags and b.data.tags["mlflow.runName"] == "step"
    assert set(a.data.metrics) == set(b.data.metrics) == {"loss", "acc", "nan", "inf", "ninf"}
    assert all(same(a.data.metrics[k], b.data.metrics[k]) for k in a.data.metrics), (a.data.metrics, b.data.metrics)
    assert b.data.metrics["loss"] == 0.5 and b.data.metrics["acc"] == 0.1 and b.data.metrics["inf"] > 1e308
    for key in a.data.metrics:
        history = [
            [(m.value, m.timestamp, m.step) for m in client.get_metric_history(run, key)] for run in (theirs, ours)
        ]
        assert len(history[0]) == len(history[1]) and all(
            same(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(*map(sorted, history))
        ), key

    # search: the same filters and orders find both, in the same way
    for query in (
        "params.lr = '0.1'",
        "metrics.loss > 0.4",
        "metrics.acc = 0.1",
        "tags.note = 'x'",
        "attributes.status = 'FINISHED'",
        "attributes.run_name = 'step'",
        "attributes.user_id = 'ada'",
        "attributes.end_time = " + str(END),
    ):
        found = {r.info.run_id for r in client.search_runs([exp], query)}
        assert found == {theirs, ours}, query
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        frame = mlflow.search_runs([exp], order_by=["metrics.loss DESC"])
    finally:
        mlflow.set_tracking_uri(before)
    assert set(frame["run_id"]) == {theirs, ours} and list(frame["metrics.loss"]) == [0.5, 0.5]
    assert list(frame["params.layers"]) == ["3", "3"] and list(frame["tags.note"]) == ["x", "x"]


def test_the_mlflow_ui_reads_a_lean_run_as_its_own(tmp_path):
    client, exp, theirs, ours = both_ways(tmp_path)
    server = TrackerServer(embedded_uri(tmp_path), tmp_path / "mlartifacts").start()
    try:
        answers = {}
        for run in (theirs, ours):  # the UI's own calls: the runs table, a run's page, a metric's chart
            search = ui(
                server,
                "runs/search",
                {
                    "experiment_ids": [exp],
                    "filter": f"attributes.run_id = '{run}'",
                    "order_by": ["metrics.loss DESC"],
                    "run_view_type": "ACTIVE_ONLY",
                },
            )
            page = ui(server, f"runs/get?run_id={run}")
            chart = ui(server, f"metrics/get-history?run_id={run}&metric_key=loss")
            answers[run] = (search["runs"][0], page["run"], chart["metrics"])
    finally:
        server.stop()
    (s1, p1, c1), (s2, p2, c2) = answers[theirs], answers[ours]
    for got in (s1, s2, p1, p2):
        got["info"].pop("run_id"), got["info"].pop("run_uuid"), got["info"].pop("artifact_uri")
        got.pop("inputs", None), got.pop("outputs", None)
        got["data"] = {k: sorted(v, key=json.dumps) for k, v in got["data"].items()}
    assert s1 == s2 and p1 == p2 and s2["info"]["status"] == "FINISHED"
    assert sorted(c1, key=json.dumps) == sorted(c2, key=json.dumps) and len(c2) == 2


def ui(server, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{server.uri}/ajax-api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def test_a_changed_param_gets_mlflows_error_and_nothing_of_its_write_out(tmp_path):
    client = get_client(embedded_uri(tmp_path))
    exp = experiment_id(client, "exp")
    writes = LeanWrites.open(client)
    run_id, _ = writes.create(exp, "step", START, {})
    assert writes.write_out(run_id, {"lr": 0.1}, {}, {}, FIRST)
    theirs = client.create_run(exp).info.run_id
    client.log_param(theirs, "lr", "0.1")
    with pytest.raises(MlflowException) as mlflows:
        client.log_batch(theirs, params=[Param("lr", "0.2")])
    with pytest.raises(MlflowException) as ours:
        writes.write_out(run_id, {"lr": 0.2}, {"loss": 1.0}, {"t": "1"}, LATER, status="FINISHED", end_ms=END)
    assert ours.value.error_code == mlflows.value.error_code == "INVALID_PARAMETER_VALUE"
    assert str(ours.value).replace(run_id, "RUN") == str(mlflows.value).replace(theirs, "RUN")
    run = client.get_run(run_id)  # all or nothing: neither the metric, the tag nor the end was written
    assert run.data.params == {"lr": "0.1"} and run.data.metrics == {} and "t" not in run.data.tags
    assert run.info.status == "RUNNING" and run.info.end_time is None
    client.delete_run(run_id)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        writes.write_out(run_id, {}, {"loss": 1.0}, {}, LATER)


def count_statements(client):
    """A list that grows by one for every SQL statement sent to `client`'s store."""
    sent = []
    event.listen(client._tracking_client.store.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    return sent


def one_step(tmp_path):
    writer = RunWriter(embedded_uri(tmp_path), "exp", {"scanflow.app": "here"}, tmp_path)
    root = writer.start_run("wf", "workflow")
    assert root.id
    sent = count_statements(writer.client)
    step = writer.start_run("step", "executor", parent=root, params={"lr": 0.1})
    writer.finish(step, "succeeded", metrics={"exit_code": 0})
    writer.finish(root, "succeeded")
    assert writer.close() == []
    run = MlflowClient(embedded_uri(tmp_path)).get_run(step.id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"} and run.data.metrics == {"exit_code": 0}
    assert run.data.tags["mlflow.parentRunId"] == root.id and run.data.tags["scanflow.status"] == "succeeded"
    return len(sent)


def test_the_run_writer_takes_the_lean_path_only_on_a_verified_store(tmp_path, monkeypatch):
    lean_statements = one_step(tmp_path / "verified")
    monkeypatch.setattr(lean, "VERIFIED", set())  # e.g. a store another MLflow version migrated
    client_statements = one_step(tmp_path / "unverified")
    assert lean_statements * 2 < client_statements, (lean_statements, client_statements)
    assert LeanWrites.open(MlflowClient("http://127.0.0.1:1")) is None  # an HTTP tracker: MlflowClient's calls


def test_the_installed_mlflow_schema_is_verified():
    """A new MLflow keeps working (MlflowClient writes), but loses the lean path until these tests pass with its
    schema revision added to `lean.VERIFIED`."""
    assert _get_latest_schema_revision() in lean.VERIFIED
