"""The background checker against a real MLflow store: exactly-once checking, restarts, failures."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scanflow_nb.check import Detector, KSDetector, ModelOutputDetector, TabularDetector
from scanflow_nb.check import tracking as tr
from scanflow_nb.check.watcher import Watcher
from scanflow_nb.datasets import corrupt, load_digits, load_tumours, shift_table
from scanflow_nb.errors import NotFoundError, ScanflowError, ValidationError

EXP = "wf"


@pytest.fixture(autouse=True)
def no_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def data():
    X, _ = load_digits()
    order = np.random.default_rng(0).permutation(len(X))
    ref, pool = X[order[:1000]], X[order[1000:]]
    clean = [pool[i * 100 : (i + 1) * 100] for i in range(3)]
    drifted = [
        corrupt(pool[300 + i * 100 : 400 + i * 100], name, severity=4, seed=i)
        for i, name in enumerate(["rotate", "translate", "scale"])
    ]
    return KSDetector().fit(ref), clean, drifted


def new_store(tmp_path) -> str:
    """A fresh SQLite MLflow store with the experiment (created once, before two processes share it)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tr.experiment_id(tr.client_for(uri), EXP)
    return uri


def log_from_another_process(uri: str, batches: list, tmp_path) -> list[str]:
    """Log batches with `log_batch` from a separate Python process, as an inference job would."""
    file = tmp_path / f"batches-{time.monotonic_ns()}.npz"
    np.savez(file, *batches)
    code = (
        "import json, sys, numpy as np\nfrom scanflow_nb.check.tracking import log_batch\n"
        "data = np.load(sys.argv[1])\n"
        "print(json.dumps([log_batch(data[k], sys.argv[2], sys.argv[3]) for k in data.files]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(file), uri, EXP],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def results_by_batch(uri):
    runs = tr.check_runs(uri, EXP)
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(run.data.tags[tr.BATCH_RUN_TAG], []).append(run)
    return out


def test_each_batch_gets_exactly_one_result_across_stop_start_and_restart(data, tmp_path):
    detector, clean, drifted = data
    uri = new_store(tmp_path)
    seen = []
    watcher = Watcher(uri, EXP, detector, every=0.3, on_result=seen.append).start()
    first = log_from_another_process(uri, [clean[0], drifted[0], clean[1]], tmp_path)
    assert wait_for(lambda: len(watcher.records) == 3)
    started = time.monotonic()
    assert watcher.stop() and time.monotonic() - started < 2.0
    assert watcher.status()["state"] == "stopped"

    second = log_from_another_process(uri, [drifted[1]], tmp_path)  # logged while stopped
    watcher.start()
    assert wait_for(lambda: len(watcher.records) == 4)
    watcher.stop()

    # a "kernel restart": a new detector loaded from disk, a new watcher with no memory
    reloaded = Detector.load(detector.save(tmp_path / "det"))
    third = log_from_another_process(uri, [clean[2], drifted[2]], tmp_path)
    fresh = Watcher(uri, EXP, reloaded, every=0.3).start()
    assert wait_for(lambda: len(fresh.records) == 2)
    time.sleep(1.0)  # several more polls: nothing may be checked again
    fresh.stop()
    assert len(fresh.records) == 2 and len(watcher.records) == 4

    expected = dict(zip(first + second + third, [False, True, False, True, False, True]))
    results = results_by_batch(uri)
    assert set(results) == set(expected)
    client = tr.client_for(uri)
    for batch_id, drift in expected.items():
        (run,) = results[batch_id]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["is_drift"] == float(drift), batch_id
        assert run.data.tags[tr.PARENT_TAG] == batch_id
        assert client.get_run(batch_id).data.tags[tr.CHECKED_TAG] == run.info.run_id
        indices = tr.download_npy(client, run.info.run_id, "check/indices.npy")
        scores = tr.download_npy(client, run.info.run_id, "check/scores.npy")
        assert len(scores) == 100 and np.all(scores[indices] > run.data.metrics["threshold"])
    assert [r.batch_run_id for r in seen] == first + second
    assert all(0 <= r.delay < 30 for r in fresh.records)


def test_interrupted_and_untagged_results_are_reconciled(data, tmp_path):
    detector, clean, drifted = data
    uri = new_store(tmp_path)
    cut_short, tag_lost = (tr.log_batch(b, uri, EXP) for b in (clean[0], drifted[0]))
    client = tr.client_for(uri)
    exp_id = tr.experiment_id(client, EXP)
    # an attempt that died after creating its check run, and a complete result whose tag was never set
    partial = client.create_run(exp_id, tags={tr.CHECK_TAG: "true", tr.BATCH_RUN_TAG: cut_short}).info.run_id
    complete = tr.log_check(client, exp_id, tag_lost, detector.score(drifted[0]))
    client.delete_tag(tag_lost, tr.CHECKED_TAG)

    watcher = Watcher(uri, EXP, detector, every=0.2)
    watcher.poll()
    results = results_by_batch(uri)
    assert [r.info.run_id for r in results[tag_lost]] == [complete]
    assert client.get_run(tag_lost).data.tags[tr.CHECKED_TAG] == complete
    (redone,) = results[cut_short]
    assert redone.info.run_id != partial and redone.info.status == "FINISHED"
    assert client.get_run(partial).info.lifecycle_stage == "deleted"
    assert watcher.poll() == []


@pytest.mark.parametrize("cut", ["before the commit", "between the commit and the checked tag"])
def test_a_result_the_tracker_cut_off_is_recorded_and_announced_once(data, tmp_path, monkeypatch, cut):
    """The tracker fails while the watcher commits a complete result: the next poll records it, once."""
    detector, _, drifted = data
    uri = new_store(tmp_path)
    batch = tr.log_batch(drifted[0], uri, EXP)
    real_commit, cut_off = tr.commit, []

    def commit_then_lose_the_tracker(client, batch_run_id, check_run_id):
        if cut_off:
            return real_commit(client, batch_run_id, check_run_id)
        cut_off.append(check_run_id)
        if cut != "before the commit":
            tr._write_once(client, batch_run_id, tr.RESULT_PARAM, check_run_id)  # stored; the reply is lost
        raise ConnectionError("the tracker went away")

    monkeypatch.setattr(tr, "commit", commit_then_lose_the_tracker)
    drifts = []
    watcher = Watcher(uri, EXP, detector, every=0.2, on_drift=drifts.append)
    with pytest.raises(ConnectionError):
        watcher.poll()
    assert watcher.records == [] and drifts == []

    (record,) = watcher.poll()
    assert record.batch_run_id == batch and record.check_run_id == cut_off[0] and record.result.is_drift
    assert drifts == [record] and watcher.poll() == [] and watcher.status()["checked"] == 1
    assert [r.info.run_id for r in results_by_batch(uri)[batch]] == cut_off
    assert tr.client_for(uri).get_run(batch).data.tags[tr.CHECKED_TAG] == cut_off[0]


def test_unusable_batches_get_one_failed_result_and_are_not_retried(data, tmp_path):
    detector, clean, _ = data
    uri = new_store(tmp_path)
    wrong_shape = tr.log_batch(clean[0].reshape(100, 64), uri, EXP)
    client = tr.client_for(uri)
    no_artifact = client.create_run(tr.experiment_id(client, EXP), tags={tr.BATCH_TAG: "true"}).info.run_id
    errors = []
    watcher = Watcher(uri, EXP, detector, every=0.2, on_error=errors.append)
    records = watcher.poll()
    assert {r.batch_run_id for r in records} == {wrong_shape, no_artifact}
    assert watcher.poll() == []
    results = results_by_batch(uri)
    shape_run, missing_run = results[wrong_shape][0], results[no_artifact][0]
    assert shape_run.info.status == "FAILED" and "shape (64,)" in shape_run.data.tags[tr.ERROR_TAG]
    assert "no artifact batch/batch.npy" in missing_run.data.tags[tr.ERROR_TAG]
    assert len(errors) == 2 and watcher.status()["failed"] == 2


def test_failing_callbacks_and_an_unreachable_tracker_never_end_the_thread(data, tmp_path):
    import socket

    detector, clean, drifted = data
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    errors = []
    down = Watcher(f"http://127.0.0.1:{port}", EXP, detector, every=0.2, max_backoff=0.8, on_error=errors.append)
    down.start()
    assert wait_for(lambda: down.status()["outages"] and down.status()["outages"][0]["attempts"] >= 3, 15)
    status = down.status()
    assert down.running and status["state"] == "retrying" and "unreachable" in status["last_error"]
    assert status["outages"][0]["end"] is None and errors
    started = time.monotonic()
    assert down.stop() and time.monotonic() - started < 2.0

    uri = new_store(tmp_path)
    drifts = []

    def broken(record):
        raise RuntimeError("user callback bug")

    watcher = Watcher(uri, EXP, detector, every=0.2, on_result=broken, on_drift=drifts.append).start()
    tr.log_batch(drifted[0], uri, EXP)
    tr.log_batch(clean[0], uri, EXP)
    assert wait_for(lambda: len(watcher.records) == 2)
    assert watcher.running and "user callback bug" in watcher.status()["last_error"]
    assert [r.result.is_drift for r in drifts] == [True]
    watcher.stop()


def test_reference_and_detector_round_trip_through_mlflow(data, tmp_path):
    detector, clean, drifted = data
    uri = new_store(tmp_path)
    with pytest.raises(NotFoundError):
        tr.load_reference(uri, EXP)
    tr.log_reference(clean[0], uri, EXP)
    newest = tr.log_reference(clean[1], uri, EXP)
    X, run_id = tr.load_reference(uri, EXP)
    assert run_id == newest and np.array_equal(X, clean[1])
    det_run = tr.log_detector(detector, uri, EXP)
    loaded = tr.load_detector(uri, det_run)
    assert loaded.score(drifted[1]).p_value == pytest.approx(detector.score(drifted[1]).p_value)
    with pytest.raises(ScanflowError, match="non-empty numeric array"):
        tr.log_batch(np.zeros((0, 8, 8)), uri, EXP)
    with pytest.raises(ScanflowError, match="non-empty numeric array"):
        tr.log_batch(np.array([{"a": 1}]), uri, EXP)
    assert (
        tr.client_for(uri).search_runs([tr.experiment_id(tr.client_for(uri), EXP)], f"tags.`{tr.BATCH_TAG}` = 'true'")
        == []
    )
    with pytest.raises(ValidationError, match="fitted detector"):
        Watcher(uri, EXP, KSDetector())
    with pytest.raises(ValidationError, match="every"):
        Watcher(uri, EXP, detector, every=0)


WATCHER_PROCESS = """
import json, os, sys, time
from scanflow_nb.check import Detector
from scanflow_nb.check.watcher import Watcher
watcher = Watcher(sys.argv[2], sys.argv[3], Detector.load(sys.argv[1]), every=0.2, max_backoff=1.0).start()
print("started", flush=True)
sys.stdin.read()  # until the test closes our stdin
watcher.stop(10)
print(json.dumps({"checked": len(watcher.records), "errors": watcher.errors[-5:]}), flush=True)
"""


def start_watcher_processes(count: int, detector_dir, uri: str) -> list[subprocess.Popen]:
    """`count` watcher processes on experiment EXP, each with its own kernel-like Python process."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WATCHER_PROCESS, str(detector_dir), uri, EXP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "started", proc.stderr.read()[-2000:]
    return procs


def stop_watcher_processes(procs: list[subprocess.Popen]) -> list[dict]:
    reports = []
    for proc in procs:
        try:
            out, err = proc.communicate("", timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        assert proc.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def assert_exactly_once(uri: str, batch_ids: list[str]) -> None:
    """One live check run per batch, committed and tagged, and no check run made and thrown away."""
    from mlflow.entities import ViewType

    client = tr.client_for(uri)
    exp_id = tr.experiment_id(client, EXP)
    results = results_by_batch(uri)
    assert sorted(results) == sorted(batch_ids)
    doubles = {b: len(r) for b, r in results.items() if len(r) != 1}
    assert not doubles, f"batches checked more than once: {doubles}"
    every = client.search_runs(
        [exp_id], f"tags.`{tr.CHECK_TAG}` = 'true'", run_view_type=ViewType.ALL, max_results=1000
    )
    assert len(every) == len(batch_ids), "no duplicate check run was even started"
    for batch_id, (run,) in results.items():
        batch = client.get_run(batch_id).data
        assert batch.params[tr.RESULT_PARAM] == batch.tags[tr.CHECKED_TAG] == run.info.run_id
        assert batch.params[f"{tr.CLAIM_PARAM}1"] == run.data.tags[tr.WATCHER_TAG]


def three_watchers_over_fifty_batches(uri: str, data, tmp_path) -> None:
    """3 watcher processes, 50 batches logged while they watch: each batch checked exactly once."""
    detector, clean, _ = data
    procs = start_watcher_processes(3, detector.save(tmp_path / "det"), uri)
    try:
        pool = np.concatenate(clean)
        rng = np.random.default_rng(0)
        ids = [tr.log_batch(pool[rng.choice(len(pool), 30, replace=False)], uri, EXP) for _ in range(50)]
        client = tr.client_for(uri)
        assert wait_for(lambda: all(tr.CHECKED_TAG in client.get_run(i).data.tags for i in ids), 300)
        time.sleep(1.0)  # more polls by every watcher: nothing may be checked again
    finally:
        reports = stop_watcher_processes(procs)
    assert sum(r["checked"] for r in reports) == 50, reports
    assert sum(r["checked"] > 0 for r in reports) >= 2, f"the work should be shared: {reports}"
    assert_exactly_once(uri, ids)


@pytest.mark.slow
def test_three_watchers_over_fifty_batches_check_each_batch_exactly_once(data, tmp_path):
    three_watchers_over_fifty_batches(new_store(tmp_path), data, tmp_path)


def test_tables_findings_and_the_alarm_reach_mlflow(tmp_path):
    frame, _ = load_tumours()
    order = np.random.default_rng(0).permutation(len(frame))
    ref, pool = frame.iloc[order[:400]], frame.iloc[order[400:]]
    uri = new_store(tmp_path)
    watcher = Watcher(uri, EXP, TabularDetector().fit(ref), every=0.2)
    messy = pool.iloc[:50].assign(comment="new field")
    messy.loc[messy.index[:4], "mean radius"] = np.nan
    first = tr.log_batch(messy, uri, EXP)
    (record,) = watcher.poll()
    assert record.batch_run_id == first
    assert not record.result.is_drift and not record.alarm
    evidence = tr.load_check(uri, record.check_run_id)
    assert {(f["kind"], f["column"], f["count"]) for f in evidence["findings"]} == {
        ("extra_column", "comment", 50),
        ("nan", "mean radius", 4),
    }
    assert set(evidence["features"]) == set(ref.columns)
    run = tr.client_for(uri).get_run(record.check_run_id)
    assert run.data.metrics["n_findings"] == 2 and "nan in 'mean radius': 4" in run.data.tags[tr.FINDINGS_TAG]

    # a sustained shift: the stream's alarm goes off within a few batches, and its state lives in MLflow
    ids = []
    for i in range(4):
        shifted, _ = shift_table(pool.sample(50, random_state=i), "new_category", ref, np.random.default_rng(i))
        ids.append(tr.log_batch(shifted, uri, EXP))
    restarted = Watcher(uri, EXP, Detector.load(watcher.detector.save(tmp_path / "tab")), every=0.2)
    alarms = []
    restarted.add_callback("alarm", alarms.append)
    records = restarted.poll()
    assert [r.batch_run_id for r in records] == ids and all(r.result.drifted[0] == "scanner" for r in records)
    assert alarms and alarms[0].batch_run_id in ids[:3], [r.statistic for r in records]
    client = tr.client_for(uri)
    for r in records:
        metrics = client.get_run(r.check_run_id).data.metrics
        assert metrics["alarm"] == float(r.alarm) and metrics["cusum"] == pytest.approx(r.statistic)
        assert client.get_run(r.check_run_id).data.tags[tr.DRIFTED_TAG].startswith("scanner")
    assert restarted.status()["alarms"] == len(alarms)


def test_logged_probabilities_are_scored_by_the_model_output_detector(tmp_path):
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits()
    flat = X.reshape(len(X), -1)
    model = LogisticRegression(max_iter=3000).fit(flat[:700], y[:700])
    detector = ModelOutputDetector().fit(probabilities=model.predict_proba(flat[700:1200]), y_reference=y[700:1200])
    uri = new_store(tmp_path)
    low = np.flatnonzero(y[1200:] < 5)[:80] + 1200  # only digits 0-4 arrive
    tr.log_batch(flat[low], uri, EXP, probabilities=model.predict_proba(flat[low]), classes=model.classes_)
    no_probs = tr.log_batch(flat[1200:1260], uri, EXP)
    records = Watcher(uri, EXP, detector, every=0.2).poll()
    assert records[0].result.is_drift and records[0].result.estimates["proportion[9]"] < 0.05
    assert records[1].batch_run_id == no_probs and "has no model" in records[1].error
    assert tr.load_check(uri, records[0].check_run_id)["estimates"]["proportion[0]"] > 0.1
