"""Resources on the local back end: declaring them (Python, YAML, magics), inheriting them,
preflight errors, CPU admission, GPUs by CUDA_VISIBLE_DEVICES, hard memory limits and the usage
metrics every run records. Real subprocesses, a real MLflow store, a real IPython shell."""

import json
import os
import re
import textwrap

import pytest
import yaml
from docker_support import HEALTHY, new_app, run_within

from scanflow_nb import App, Executor, Workflow
from scanflow_nb.errors import RunError, ValidationError
from scanflow_nb.resources import CPU_S, PEAK_RSS_MB, Resources, format_bytes
from scanflow_nb.run.machine import this_machine
from scanflow_nb.track.server import free_port

STAMP = textwrap.dedent("""\
    import json, os, time
    start = time.time()
    time.sleep({sleep})
    with open("stamps.jsonl", "a") as f:
        f.write(json.dumps({{"name": "{name}", "start": start, "end": time.time(),
                             "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                             "threads": os.environ.get("OMP_NUM_THREADS")}}) + "\\n")
""")


def stamping(name, sleep=0.0, **kw):
    return Executor(name, code=STAMP.format(name=name, sleep=sleep), **kw)


def stamps(app):
    return {d["name"]: d for d in map(json.loads, (app.path / "stamps.jsonl").read_text().splitlines())}


def overlap(a, b):
    return a["start"] < b["end"] and b["start"] < a["end"]


# -- declaring -----------------------------------------------------------------------------------
def test_sizes_and_cpus_are_read_as_people_write_them():
    assert Executor("a", code="1", memory="256M").resources.memory == 256 * 2**20
    assert Executor("a", code="1", memory="1.5G").resources.memory == 1536 * 2**20
    assert Executor("a", code="1", memory="2Gi").resources == Executor("a", code="1", memory="2GB").resources
    assert Executor("a", code="1", memory=2**30).resources.memory == 2**30
    assert Executor("a", code="1", cpus="500m").resources.cpus == 0.5
    assert Executor("a", code="1", cpus=1.5, gpus=0).resources == Resources(1.5, None, 0)
    assert Resources(1.5, 2 * 2**30, 1).describe() == "1.5 CPUs, 2 GiB, 1 GPU"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("memory", "2 gigs", "memory '2 gigs' is not a size: use a number of bytes or a number with K, M, G or T"),
        ("memory", "-1G", "memory '-1G' is not a size"),
        ("memory", "1K", "memory '1K' is too small: give at least 6M"),
        ("cpus", -1, "cpus must be at least 0.01, got -1"),
        ("cpus", "two", "cpus must be a number of CPUs such as 2 or 0.5, got 'two'"),
        ("cpus", True, "cpus must be a number"),
        ("gpus", 1.5, "gpus must be a whole number >= 0, got 1.5"),
        ("gpus", -2, "gpus must be a whole number >= 0"),
    ],
)
def test_bad_values_are_one_clear_error_at_declaration(field, value, message):
    with pytest.raises(ValidationError, match=f"executor 'a': {message}"):
        Executor("a", code="1", **{field: value})
    with pytest.raises(ValidationError, match=f"workflow 'w': {message}"):
        Workflow("w", **{field: value})


def test_workflow_defaults_are_inherited_at_any_depth_and_overridden_per_field(tmp_path):
    from scanflow_nb.schedule import plan

    inner = Workflow("inner", memory="1G", executors=[Executor("deep", code="1"), Executor("none", code="1", gpus=0)])
    mid = Workflow("mid", parallel=True, executors=[Executor("own", code="1", cpus=2)], workflows=[inner])
    top = Workflow("top", cpus=0.5, memory="4G", gpus=1, workflows=[mid])
    tasks = {t.key: t.resources for t in plan(top)}
    assert tasks == {
        "mid/own": Resources(2.0, 4 * 2**30, 1),
        "inner/deep": Resources(0.5, 2**30, 1),
        "inner/none": Resources(0.5, 2**30, 0),
    }
    # running a nested workflow on its own keeps what the workflows around it give
    app = new_app(tmp_path / "app", top)
    assert app.resource_defaults("inner") == Resources(0.5, 2**30, 1)
    assert {t.key: t.resources for t in plan(app.find("inner"), app.resource_defaults("inner"))} == {
        k: v for k, v in tasks.items() if k.startswith("inner/")
    }


def test_scanflow_yaml_keeps_resources_as_written_and_refuses_bad_ones(tmp_path):
    app = new_app(
        tmp_path / "app",
        Workflow("w", memory="2G", executors=[Executor("a", code="1", cpus=1.5, memory="256M", gpus=0)]),
    )
    saved = yaml.safe_load(app.save().read_text())
    assert saved["workflows"][0]["memory"] == "2G"
    assert {k: saved["workflows"][0]["executors"][0][k] for k in ("cpus", "memory", "gpus")} == {
        "cpus": 1.5,
        "memory": "256M",
        "gpus": 0,
    }
    again = App.open(app.path)
    assert again.find("w").executors[0].resources == Resources(1.5, 256 * 2**20, 0)
    saved["workflows"][0]["executors"][0]["memory"] = "lots"
    (app.path / "scanflow.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ValidationError, match=r"scanflow.yaml: executor 'a': memory 'lots' is not a size"):
        App.open(app.path)


def test_magics_declare_resources_and_refuse_bad_ones_without_writing(shell, run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    result, out, err = run_cell("%scanflow workflow main --memory 1G --cpus 2")
    assert result.success, err
    result, out, err = run_cell("%%scanflow executor train -w main --cpus 1.5 --memory 512M --gpus 0\nprint('hi')")
    assert result.success, err
    app = shell.magics_manager.registry["ScanflowMagics"].current_app
    train = app.find("main").executor("train")
    assert (train.cpus, train.memory, train.gpus) == (1.5, "512M", 0)
    assert app.find("main").resources == Resources(2.0, 2**30, None)
    result, out, err = run_cell("%%scanflow executor big -w main --memory '2 gigs'\nprint('hi')")
    assert not result.success and "UsageError: executor 'big': memory '2 gigs' is not a size" in err
    assert "Traceback" not in err and not (app_dir / "main" / "big.py").exists()
    assert "big" not in (app_dir / "scanflow.yaml").read_text()
    result, out, err = run_cell("%scanflow workflow main --cpus 0")
    assert not result.success and "workflow 'main': cpus must be at least 0.01" in err
    assert app.find("main").cpus == 2  # unchanged


# -- preflight ---------------------------------------------------------------------------------------
def test_what_no_machine_could_hold_is_refused_before_anything_runs(app_dir, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    machine = this_machine()
    too_much = (machine.memory // 2**20 + 1024) * 2**20
    cases = [
        (Executor("a", code="1", cpus=machine.cpus + 1), f"asks for {machine.cpus + 1:g} CPUs (this machine has"),
        (Executor("a", code="1", memory=too_much), f"asks for {format_bytes(too_much)} (this machine has"),
    ]
    if not machine.gpus:
        cases.append((Executor("a", code="1", gpus=1), "asks for 1 GPU (this machine has none)"))
    for ex, message in cases:
        app = new_app(app_dir / ex.resources.describe().replace(" ", "_"), Workflow("w", executors=[ex, stamping("b")]))
        with pytest.raises(RunError, match=re.escape(f"executor 'w/a' {message}")):
            app.run("w", echo=False)
        assert not (app.path / "stamps.jsonl").exists() and not (app.path / ".scanflow" / "mlflow.db").exists()
    app = new_app(app_dir / "budget", Workflow("w", executors=[stamping("a", cpus=2)]))
    with pytest.raises(RunError, match=r"executor 'w/a' asks for 2 CPUs \(the run allows 1\)"):
        app.run("w", cpus=1, echo=False)


# -- admission --------------------------------------------------------------------------------------
def test_executors_that_each_need_every_cpu_take_turns_and_those_that_fit_overlap(app_dir):
    cpus = this_machine().cpus
    app = new_app(
        app_dir,
        Workflow(
            "main",
            workflows=[
                Workflow("heavy", parallel=True, cpus=cpus, executors=[stamping("h1", 1.0), stamping("h2", 1.0)]),
                Workflow("light", parallel=True, cpus=cpus / 2, executors=[stamping("l1", 1.0), stamping("l2", 1.0)]),
            ],
        ),
    )
    result = app.run("main", echo=False)
    assert result.ok, result.summary()
    s = stamps(app)
    assert not overlap(s["h1"], s["h2"]), "two executors that each need every CPU ran side by side"
    assert overlap(s["l1"], s["l2"]), "two executors that fit together did not run side by side"
    assert s["h1"]["threads"] == str(int(cpus)) and s["l1"]["threads"] == str(max(1, int(cpus / 2)))
    # the run's own CPU budget: half the machine for each executor, one CPU for all of them
    (app.path / "stamps.jsonl").unlink()
    assert app.run("light", cpus=cpus / 2, force=True, echo=False).ok
    s = stamps(app)
    assert not overlap(s["l1"], s["l2"])


def test_what_the_runs_services_hold_to_the_end_fails_its_waiters_at_once(app_dir):
    cpus = this_machine().cpus
    api = Executor("api", code=HEALTHY, service=True, port=free_port(), cpus=cpus)
    app = new_app(app_dir, Workflow("w", executors=[api, stamping("client", depends_on=["api"], cpus=1)]))
    result = run_within(app, "w", 300)  # it used to wait for ever for what only the end of the run gives back
    client = result.executors["w/client"]
    assert client.status == "failed", result.summary()
    assert client.error == f"needs 1 CPU, but the run's services hold that to the end (w/api: {cpus:g} CPUs)"
    assert result.executors["w/api"].status == "succeeded"  # stopped cleanly once nothing else was left
    assert not (app.path / "stamps.jsonl").exists()


def test_gpus_are_handed_out_one_executor_at_a_time(app_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the GPUs this kernel may hand out
    app = new_app(
        app_dir,
        Workflow(
            "g",
            parallel=True,
            executors=[
                *(stamping(f"gpu{i}", 1.0, gpus=1) for i in range(3)),
                stamping("cpu_only", gpus=0),
                stamping("unsaid"),
            ],
        ),
    )
    assert app.run("g", echo=False).ok
    s = stamps(app)
    gpu = [s[f"gpu{i}"] for i in range(3)]
    assert all(d["gpus"] in ("0", "1") for d in gpu)
    for i, a in enumerate(gpu):
        for b in gpu[i + 1 :]:
            assert not (overlap(a, b) and a["gpus"] == b["gpus"]), "one GPU given to two executors at once"
    assert sum(overlap(a, b) for i, a in enumerate(gpu) for b in gpu[i + 1 :]) >= 1  # two GPUs used at once
    assert s["cpu_only"]["gpus"] == "" and s["unsaid"]["gpus"] == "0,1"


# -- memory and usage ---------------------------------------------------------------------------
HOG = textwrap.dedent("""\
    import time
    print("allocating", flush=True)
    hog = b"x" * (1 << 30)
    time.sleep(2)
    print("still alive")
""")


def test_an_executor_over_its_memory_limit_fails_as_out_of_memory_and_harms_nothing_else(app_dir):
    import psutil

    app = new_app(
        app_dir,
        Workflow(
            "main",
            workflows=[
                Workflow("par", parallel=True, executors=[Executor("hog", code=HOG, memory="256M"), stamping("ok", 1)]),
                Workflow("after", executors=[stamping("next")]),
            ],
        ),
    )
    kernel = psutil.Process()
    before = kernel.memory_info().rss
    result = app.run("main", echo=False)
    grew = (kernel.memory_info().rss - before) / 2**20
    hog = result.executors["par/hog"]
    assert hog.status == "failed" and hog.error == "out of memory (limit 256 MiB)", result.summary()
    assert "still alive" not in app.logs("par/hog")
    assert result.executors["par/ok"].status == "succeeded"  # its parallel sibling is unharmed
    assert result.executors["after/next"].status == "skipped"  # a sequential workflow stops after a failure
    assert grew < 200, f"the kernel's memory grew by {grew:.0f} MiB"


def test_every_run_records_its_peak_memory_and_cpu_time_in_mlflow(app_dir):
    from mlflow import MlflowClient

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"
    hold = "import time\nblock = bytearray(200 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\ntime.sleep(0.6)\n"
    app = new_app(app_dir, Workflow("w", executors=[Executor("burn", code=burn), Executor("hold", code=hold)]))
    result = app.run("w", echo=False)
    assert result.ok, result.summary()
    client = MlflowClient(result.tracking_uri)
    burn_run = client.get_run(result.executors["w/burn"].run_id).data.metrics
    hold_run = client.get_run(result.executors["w/hold"].run_id).data.metrics
    assert 0.5 <= burn_run[CPU_S] < 3, burn_run
    assert 5 < burn_run[PEAK_RSS_MB] < 150, burn_run
    assert hold_run[PEAK_RSS_MB] >= 200, hold_run
    assert result.executors["w/hold"].peak_rss_mb == hold_run[PEAK_RSS_MB]
    assert "cpu " in result.summary() and "MiB" in result.summary()


# -- how memory limits are enforced here -------------------------------------------------------------
def test_the_memory_limit_mode_follows_what_the_machine_allows():
    from scanflow_nb.run import cgroups
    from scanflow_nb.run.limits import CGROUP, WATCHDOG, memory_mode

    own = cgroups.own_dir("memory")
    v2 = own is not None and (own / "cgroup.controllers").exists()
    mode = memory_mode()
    assert mode in (CGROUP, WATCHDOG)
    if not v2:  # cgroup v1 (as on one machine here), or none: only the watchdog can do it
        assert mode == WATCHDOG
    if mode == CGROUP:
        assert os.access(own.parent, os.W_OK)


def test_cgroup_v2_groups_get_the_limits_and_their_oom_events_are_read(app_dir, tmp_path, monkeypatch):
    """The kernel's side cannot run on a cgroup v1 machine; this checks scanflow's side against a
    folder laid out like a delegated cgroup v2 folder: what it writes, and what it reads back."""
    parent = tmp_path / "delegated"
    parent.mkdir()
    (parent / "cgroup.subtree_control").write_text("cpu memory pids\n")
    monkeypatch.setenv("SCANFLOW_CGROUP", str(parent))
    code = textwrap.dedent("""\
        import glob, json, os, sys
        tree = ([str(os.getpid())], [str(os.getppid())])  # the script, or the supervisor it runs under
        mine = [os.path.dirname(p) for p in glob.glob(sys.argv[2] + "/scanflow-*/cgroup.procs")
                if open(p).read().split() in tree]
        group = mine[0]
        print(json.dumps({f: open(os.path.join(group, f)).read() for f in
                          ("memory.max", "memory.swap.max", "memory.oom.group", "cpu.max")
                          if os.path.exists(os.path.join(group, f))}))
        if sys.argv[4] == "oom":
            open(os.path.join(group, "memory.events"), "w").write("low 0\\noom 1\\noom_kill 1\\n")
            os.kill(os.getpid(), 9)
    """)
    app = new_app(
        app_dir,
        Workflow(
            "w",
            executors=[
                Executor("fits", code=code, memory="300M", cpus=0.5, parameters={"dir": str(parent), "mode": "ok"}),
                Executor("over", code=code, memory="64M", parameters={"dir": str(parent), "mode": "oom"}),
            ],
        ),
    )
    result = app.run("w", echo=False)
    written = json.loads(app.logs("w/fits").splitlines()[0])
    assert written == {
        "memory.max": str(300 * 2**20),
        "memory.swap.max": "0",
        "memory.oom.group": "1",
        "cpu.max": "50000 100000",
    }
    assert result.executors["w/fits"].status == "succeeded"
    assert result.executors["w/over"].error == "out of memory (limit 64 MiB)"


def test_the_command_line_takes_the_runs_cpus(app_dir, capsys):
    from scanflow_nb.cli import main

    app = new_app(app_dir, Workflow("w", executors=[stamping("a", cpus=2)]))
    app.save()
    assert main(["--file", str(app.path), "run", "w", "--cpus", "0"]) == 2
    assert "scanflow: the run: cpus must be at least 0.01, got '0'" in capsys.readouterr().err
    assert main(["--file", str(app.path), "run", "w", "--cpus", "1", "--quiet"]) == 2
    assert "executor 'w/a' asks for 2 CPUs (the run allows 1)" in capsys.readouterr().err
