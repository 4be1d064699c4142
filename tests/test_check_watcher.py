"""The background checker against a real MLflow store: exactly-once checking, restarts, failures."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from scanflow_nb.check import Detector, KSDetector
from scanflow_nb.check import tracking as tr
from scanflow_nb.check.watcher import Watcher
from scanflow_nb.datasets import corrupt, load_digits
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
