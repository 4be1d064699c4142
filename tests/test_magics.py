"""The magics through a real IPython InteractiveShell: what a notebook user types and sees."""

import pytest
import yaml

from scanflow_nb import App


def declare_basic(run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow main")
    run_cell("%scanflow workflow par --parallel --parent main")
    run_cell(
        "%%scanflow executor prep --workflow main --param rows=3\n"
        "import argparse; p = argparse.ArgumentParser(); p.add_argument('--rows', type=int)\n"
        "print('rows', p.parse_args().rows * 2)"
    )
    run_cell("%%scanflow executor left -w par\nprint('left')")
    run_cell("%%scanflow executor right -w par --retries 1 --timeout 30\nprint('right')")


def test_declare_run_status_logs(shell, run_cell, app_dir):
    declare_basic(run_cell, app_dir)
    result, out, err = run_cell("r = %scanflow run main")
    assert not err and result.success
    assert "[main/prep] rows 6" in out and "[par/left] left" in out
    r = shell.user_ns["r"]
    assert r.status == "succeeded" and set(r.executors) == {"main/prep", "par/left", "par/right"}
    _, out, _ = run_cell("%scanflow status main")
    assert "workflow 'main' succeeded" in out and "par/right" in out and "MLflow" in out
    _, out, _ = run_cell("%scanflow logs prep")
    assert out.strip() == "rows 6"
    _, out, _ = run_cell("%scanflow run main")
    assert out.count("(unchanged, not rerun)") == 3


def test_executor_cell_is_saved_and_registered_and_overwrite_is_reported(run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    _, out, _ = run_cell("%%scanflow executor a -w w --param lr=0.1 --param name=x --env K=v --input d.csv\nprint(1)")
    assert out.strip() == "Wrote w/a.py and declared executor w/a"
    assert (app_dir / "w" / "a.py").read_text() == "print(1)\n"
    _, out, _ = run_cell("%%scanflow executor a -w w\nprint(2)")
    assert out.startswith("Overwrote w/a.py")
    saved = yaml.safe_load((app_dir / "scanflow.yaml").read_text())
    assert saved["workflows"][0]["executors"] == [{"name": "a", "file": "w/a.py"}]
    run_cell('%%scanflow executor b -w w --param lr=0.1 --param on=true -d a --requirements "numpy scipy"\nprint(3)')
    b = App(app_dir).find("w").executor("b")
    assert b.parameters == {"lr": 0.1, "on": True} and b.depends_on == ["a"]
    assert b.requirements == ["numpy", "scipy"]


def test_executor_run_flag_runs_it_now(run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    result, out, _ = run_cell("%%scanflow executor hello -w w --run\nprint('hi there')")
    assert "[w/hello] hi there" in out and "succeeded" in out


def test_app_reopens_saved_workflows_and_save_load(run_cell, app_dir, tmp_path):
    declare_basic(run_cell, app_dir)
    _, out, _ = run_cell(f"%scanflow app {app_dir}")
    assert "1 workflow(s) loaded from scanflow.yaml" in out
    _, out, _ = run_cell(f"%scanflow save {tmp_path / 'copy.yaml'}")
    assert "saved" in out
    _, out, _ = run_cell(f"%scanflow load {app_dir / 'scanflow.yaml'}")
    assert "loaded main" in out


def test_help_lists_every_subcommand(shell):
    doc = shell.find_line_magic("scanflow").__doc__
    for sub in ("app", "workflow", "executor", "run", "status", "logs", "save", "load"):
        assert f"%scanflow {sub}" in doc or f"%%scanflow {sub}" in doc
    assert "--depends-on" in doc and "--parallel" in doc and "--from" in doc


def test_subcommand_help_flag(run_cell):
    _, out, err = run_cell("%scanflow run -h")
    assert "--backend" in out and not err


BAD = [
    ("%scanflow run main --frobnicate", "unrecognized arguments: --frobnicate"),
    ("%%scanflow executor\nprint(1)", "the following arguments are required: name"),
    ("%%scanflow executor x\nprint(1)", "required: --workflow"),
    ("%%scanflow executor prep -w main\nprint(1)", None),  # re-declaring is allowed (cell run again)
    ("%%scanflow executor par -w main\nprint(1)", "already has a workflow named 'par'"),
    ("%%scanflow executor c -w main -d c2 -d nope\nprint(1)", "depends on unknown"),
    ("%%scanflow executor a/b -w main\nprint(1)", "invalid executor name 'a/b'"),
    ("%%scanflow executor .. -w main\nprint(1)", "invalid executor name '..'"),
    ("%%scanflow executor 'a b' -w main\nprint(1)", "invalid executor name 'a b'"),
    ("%%scanflow executor r -w main -r missing.txt\nprint(1)", "missing.txt does not exist"),
    ("%%scanflow executor r -w main -r x.txt --requirements y\nprint(1)", "either --requirements or -r"),
    ("%%scanflow executor p -w main --param novalue\nprint(1)", "--param expects KEY=VALUE"),
    ("%%scanflow executor t -w main --timeout -1\nprint(1)", "timeout must be a positive number"),
    ("%%scanflow executor x -w nowhere\nprint(1)", "unknown workflow 'nowhere'"),
    ("%scanflow workflow sub --parent nowhere", "unknown workflow 'nowhere'"),
    ("%scanflow workflow par", "already exists under 'main'"),
    ("%scanflow run nowhere", "unknown workflow 'nowhere'"),
    ("%scanflow logs nothing", "no executor 'nothing'"),
    ("%scanflow frob", "unknown subcommand 'frob'"),
    ("%scanflow", "give a subcommand"),
    ("%scanflow executor x -w main", "is a cell magic"),
    ("%scanflow load /nonexistent/scanflow.yaml", "no workflow file"),
]


@pytest.mark.parametrize("cell, message", BAD)
def test_bad_input_gives_one_line_and_changes_nothing(run_cell, app_dir, cell, message):
    declare_basic(run_cell, app_dir)
    run_cell("%scanflow workflow empty")
    before = {p: p.read_bytes() for p in app_dir.rglob("*") if p.is_file() and ".scanflow" not in p.parts}
    result, out, err = run_cell(cell)
    after = {p: p.read_bytes() for p in app_dir.rglob("*") if p.is_file() and ".scanflow" not in p.parts}
    if message is None:
        assert result.success
        return
    assert not result.success
    assert err.strip().startswith("UsageError:") and message in err, err
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 1
    assert after == before


def test_running_empty_workflow_and_no_app(run_cell, app_dir):
    _, _, err = run_cell("%scanflow run main")
    assert "no app yet: start with %scanflow app PATH" in err
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow empty")
    _, _, err = run_cell("%scanflow run empty")
    assert "UsageError: workflow 'empty' has no executors" in err


def test_failed_executor_shows_its_log_tail(run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    run_cell("%%scanflow executor boom -w w\nprint('loading data')\nraise ValueError('bad column')")
    result, out, err = run_cell("r = %scanflow run w")
    assert result.success  # the magic reports the failure in its result, it does not raise
    assert "[w/boom] FAILED: exit code 1" in out and "ValueError: bad column" in out
    _, out, _ = run_cell("%scanflow status w")
    assert "w/boom" in out and "failed" in out


def test_timeout_from_the_magic(run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    run_cell("%%scanflow executor slow -w w --timeout 1\nimport time; time.sleep(30)")
    _, out, _ = run_cell("%scanflow run w")
    assert "FAILED: timed out after 1 s" in out


def test_load_ext_is_fast_and_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, time; from IPython.core.interactiveshell import InteractiveShell; "
        "sh = InteractiveShell.instance(); sh.run_line_magic('load_ext', 'scanflow_nb'); "
        "print(sorted(m for m in ('mlflow', 'tensorflow', 'docker', 'modAL', 'sklearn', 'ipywidgets') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_background_run_returns_a_handle(shell, run_cell, app_dir):
    run_cell(f"%scanflow app {app_dir}")
    run_cell("%scanflow workflow w")
    run_cell("%%scanflow executor a -w w\nimport time; time.sleep(1); print('late')")
    result, out, err = run_cell("h = %scanflow run w --background")
    handle = shell.user_ns["h"]
    assert "running" in repr(handle) and not err
    assert handle.result(timeout=60).status == "succeeded"
    assert "succeeded" in repr(handle)
