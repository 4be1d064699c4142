"""The docker back end for real: containers, a tracker container, labels and exact cleanup."""

import os
import signal
import threading
import time

import pytest
from docker_support import new_app

from scanflow_nb import Executor, Workflow
from scanflow_nb.errors import BackendUnavailable, TrackerError
from scanflow_nb.run.docker import leftovers

pytestmark = [pytest.mark.docker]

SLEEPER = "import time, sys; print('sleeping', flush=True); time.sleep({s}); print('woke')"


def test_no_engine_gives_one_clear_error(app_dir, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    app = new_app(app_dir, Workflow("w", executors=[Executor("a", code="print(1)")]))
    with pytest.raises(BackendUnavailable, match="no Docker engine is reachable.*--backend local"):
        app.run("w", backend="docker", echo=False)


def test_outputs_land_in_the_app_folder_and_logs_stream_live(app_dir, docker_backend, docker_engine, base_image):
    code = (
        "import pathlib, time, mlflow\n"
        "print('first', flush=True); time.sleep(1.5)\n"
        "pathlib.Path('data').mkdir(exist_ok=True); pathlib.Path('data/out.txt').write_text('hi')\n"
        "mlflow.log_metric('score', 0.5); print('second')\n"
    )
    app = new_app(app_dir, Workflow("w", executors=[Executor("a", code=code, outputs=["data/out.txt"])]))
    seen, objects = [], []

    def listen(event):
        seen.append((event.kind, event.line, time.time()))
        if event.line == "first":
            objects.extend(leftovers(app.path))

    bystander = docker_engine.containers.create(base_image, ["true"], name=f"bystander-{os.getpid()}")
    try:
        result = app.run("w", backend=docker_backend(), echo=False, listeners=[listen])
        bystander.reload()  # not ours: still there after the cleanup
    finally:
        bystander.remove(force=True)
    assert result.ok, result.summary()
    assert len(objects) == 3 and {o.split("-")[-1] for o in objects} == {"tracker", "net", "1"}
    assert (app.path / "data/out.txt").read_text() == "hi"
    times = {line: t for kind, line, t in seen if kind == "line"}
    finished = next(t for kind, _, t in seen if kind == "succeeded")
    assert finished - times["first"] > 1.0  # 'first' arrived while the container still ran
    assert "second" in app.logs("w/a")
    from mlflow import MlflowClient

    run = MlflowClient(result.tracking_uri).get_run(result.executors["w/a"].run_id)
    assert run.data.metrics["score"] == 0.5 and run.info.status == "FINISHED"
    assert leftovers(app.path) == []


def test_exit_codes_retries_timeouts_and_a_container_killed_from_outside(app_dir, docker_backend, docker_engine):
    flaky = (
        "import pathlib, sys\np = pathlib.Path('tries'); n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n)); print('try', n); sys.exit(0 if n >= 2 else 5)"
    )
    app = new_app(
        app_dir,
        Workflow(
            "w",
            parallel=True,
            executors=[
                Executor("exits", code="import sys; print('bye'); sys.exit(3)"),
                Executor("flaky", code=flaky, retries=2),
                Executor("slow", code=SLEEPER.format(s=60), timeout=4),
                Executor("killed", code=SLEEPER.format(s=60)),
                Executor("badreq", code="print(1)", requirements=["scanflow-no-such-package-xyz==0.0.1"]),
                Executor("after", code="print(1)", depends_on=["exits"]),
            ],
        ),
    )

    def kill_from_outside(event):  # what `docker kill` or the OOM killer does to a container
        if event.key == "w/killed" and event.line == "sleeping":
            docker_engine.containers.list(filters={"label": "scanflow.key=w/killed"}, ignore_removed=True)[0].kill()

    result = app.run("w", backend=docker_backend(), echo=False, max_workers=6, listeners=[kill_from_outside])
    r = result.executors
    assert result.status == "failed" and sorted(result.failed) == ["w/badreq", "w/exits", "w/killed", "w/slow"]
    assert r["w/badreq"].error.startswith("building the image of w/badreq failed")
    assert "No matching distribution found for scanflow-no-such-package-xyz" in app.logs("w/badreq")
    assert (r["w/exits"].exit_code, r["w/exits"].error) == (3, "exit code 3")
    assert (r["w/killed"].exit_code, r["w/killed"].error) == (137, "exit code 137")
    assert r["w/flaky"].status == "succeeded" and r["w/flaky"].attempts == 2
    assert r["w/slow"].error == "timed out after 4 s" and r["w/slow"].duration < 30
    assert r["w/after"].status == "skipped"
    assert "bye" in app.logs("w/exits") and "woke" not in app.logs("w/slow")
    assert leftovers(app.path) == []


def test_a_tracker_that_cannot_start_is_reported_and_cleaned_up(app_dir, docker_backend, base_image):
    backend = docker_backend()
    backend.builder.tracker_image = lambda: base_image  # an image without mlflow: no server
    app = new_app(app_dir, Workflow("w", executors=[Executor("a", code="print(1)")]))
    with pytest.raises(TrackerError, match="tracker container failed to start"):
        app.run("w", backend=backend, echo=False)
    assert leftovers(app.path) == []
    from mlflow import MlflowClient

    runs = MlflowClient(app.tracking_uri("w")).search_runs(
        [e.experiment_id for e in MlflowClient(app.tracking_uri("w")).search_experiments()]
    )
    assert all(run.info.status != "RUNNING" for run in runs)


def test_interrupt_in_a_parallel_group_removes_its_containers(app_dir, docker_backend, docker_engine):
    app = new_app(
        app_dir,
        Workflow(
            "w",
            executors=[Executor("first", code="print('go')")],
            workflows=[
                Workflow("group", parallel=True, executors=[Executor(n, code=SLEEPER.format(s=600)) for n in "xyz"])
            ],
        ),
    )
    started, interrupted = [], []

    def interrupt(pid):
        interrupted.append(time.monotonic())
        os.kill(pid, signal.SIGINT)

    def interrupt_when_all_sleep(event):
        if event.kind == "line" and event.line == "sleeping":
            started.append(event.key)
            if len(started) == 3:
                threading.Timer(0.5, interrupt, (os.getpid(),)).start()

    with pytest.raises(KeyboardInterrupt):
        app.run("w", backend=docker_backend(), echo=False, max_workers=3, listeners=[interrupt_when_all_sleep])
    assert time.monotonic() - interrupted[0] < 300  # the containers are stopped, not waited for (600 s sleeps)
    assert sorted(started) == ["group/x", "group/y", "group/z"]
    assert leftovers(app.path) == []
    assert app.status("w")["w"].status == "interrupted"


WAVES = 2


@pytest.mark.slow
def test_runs_with_failures_leave_no_container_or_network_behind(tmp_path, docker_backend):
    """Runs four at a time, twice: a success, an exit failure, a timeout and a cancelled run, each with
    its own tracker container. Count what is left. (More runs add time, not cases: bench/soak.py soaks.)"""
    kinds = {
        0: ("ok", Executor("job", code="print('fine')"), "succeeded"),
        1: ("exits", Executor("job", code="raise SystemExit(2)"), "failed"),
        2: ("times_out", Executor("job", code=SLEEPER.format(s=60), timeout=2), "failed"),
        3: ("cancelled", Executor("job", code=SLEEPER.format(s=60)), "interrupted"),
    }
    app = new_app(tmp_path, *(Workflow(name, executors=[executor]) for name, executor, _ in kinds.values()))
    statuses = []
    for _wave in range(WAVES):
        handles = []
        for name, _, _ in kinds.values():
            started = threading.Event()
            listener = lambda e, s=started: s.set() if e.kind == "line" and e.line == "sleeping" else None
            handles.append(
                (
                    name,
                    started,
                    app.run(
                        name, backend=docker_backend(), echo=False, force=True, background=True, listeners=[listener]
                    ),
                )
            )
        for name, started, handle in handles:
            if name == "cancelled":
                assert started.wait(120), "the cancelled run never started its executor"
                handle.cancel()
            statuses.append((name, handle.result(timeout=300).status))
    assert statuses == [(name, status) for _ in range(WAVES) for name, _, status in kinds.values()]
    assert leftovers(app.path) == []  # this app's only: other tests and earlier sessions share the engine


def test_notebook_magics_run_a_cell_executor_on_docker(run_cell, app_dir, base_image, monkeypatch):
    """%%scanflow executor then %scanflow run --backend docker: build output and logs stream into the cell.

    No SCANFLOW_BASE_IMAGE, as after `make machine`: the run finds the local base image and says so once.
    """
    from scanflow_nb.containers import images
    from scanflow_nb.containers.base import base_image_exists

    monkeypatch.delenv("SCANFLOW_BASE_IMAGE")
    monkeypatch.setattr(images, "_announced", set())
    assert run_cell(f"%scanflow app {app_dir}")[0].success
    assert run_cell("%scanflow workflow nb")[0].success
    fresh = f"# {time.time_ns()}: new code, so this app builds its own image\n"
    cell = fresh + "import mlflow\nmlflow.log_metric('from_cell', 7)\nprint('hello from a container')"
    assert run_cell(f"%%scanflow executor hello --workflow nb\n{cell}")[0].success
    result, out, _ = run_cell("%scanflow run nb --backend docker --no-graph")
    assert result.success and result.result.ok, out
    assert "[build nb/hello]" in out and "[nb/hello] hello from a container" in out
    if base_image == images.DEFAULT_BASE_TAG and not base_image_exists(images.DEFAULT_BASE):
        assert out.count(f"base image: {base_image}, built on this machine") == 1, out
    from mlflow import MlflowClient

    run = MlflowClient(result.result.tracking_uri).get_run(result.result.executors["nb/hello"].run_id)
    assert run.data.metrics["from_cell"] == 7 and run.data.tags["scanflow.backend"] == "docker"
    assert leftovers(app_dir) == []

    import docker
    from docker_support import SESSION_LABEL

    from scanflow_nb.containers.names import LABEL_APP, app_id

    engine = docker.from_env()
    built = engine.images.list(filters={"label": f"{LABEL_APP}={app_id(app_dir.resolve())}"})
    assert built and all(SESSION_LABEL.split("=")[0] in image.labels for image in built)
    result, out, _ = run_cell("%scanflow cleanup --images")
    assert result.success and f"removed {len(built)} Docker object(s)" in out, out
    assert engine.images.list(filters={"label": f"{LABEL_APP}={app_id(app_dir.resolve())}"}) == []
