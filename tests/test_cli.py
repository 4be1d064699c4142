"""`scanflow` on a saved scanflow.yaml, as in CI, and the README's demo."""

import subprocess
import sys

import pytest

from scanflow_nb import App, Executor, Workflow


def scanflow(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "scanflow_nb.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_runs_a_saved_app_and_reports_status(app_dir):
    app = App(app_dir)
    app.add(Workflow("w", executors=[Executor("a", code="print('from a')"), Executor("b", code="raise SystemExit(4)")]))
    app.save()
    done = scanflow("--file", str(app_dir), "run", "w")
    assert done.returncode == 1
    assert "[w/a] from a" in done.stdout and "w/b" in done.stdout and "failed" in done.stdout
    status = scanflow("--file", str(app_dir / "scanflow.yaml"), "status")
    assert status.returncode == 0 and "workflow 'w' failed" in status.stdout
    logs = scanflow("--file", str(app_dir), "logs", "a")
    assert logs.stdout.strip() == "from a"
    tree = scanflow("--file", str(app_dir), "graph", "w")
    assert tree.returncode == 0 and "a" in tree.stdout


def test_cli_errors_are_one_line(app_dir):
    missing = scanflow("--file", str(app_dir), "run", "w")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"scanflow: no workflow file at {app_dir / 'scanflow.yaml'}"]
    app = App(app_dir)
    app.add(Workflow("w", executors=[Executor("a", code="print(1)")]))
    app.save()
    unknown = scanflow("--file", str(app_dir), "run", "nope")
    assert unknown.returncode == 2 and "unknown workflow 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_demo_runs_and_writes_its_graph(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "scanflow_nb.demo", str(tmp_path / "demo")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "workflow 'demo' succeeded" in out
    for key in ("demo/prepare", "training/logistic", "training/forest", "report/select"):
        assert key in out
    assert "best model:" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    graph = tmp_path / "demo" / "workflow.svg"
    assert graph.is_file() and "<svg" in graph.read_text()
    # again, on a machine without Graphviz's `dot`: nothing reruns, and the graph is written as source
    import os

    no_dot = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    again = subprocess.run(
        [sys.executable, "-m", "scanflow_nb.demo", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
        env=no_dot,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("(unchanged, not rerun)") == 4
    assert "install graphviz" in again.stdout.lower()
    source = tmp_path / "demo" / "workflow.gv"
    assert f"Workflow graph:   {source}" in again.stdout and "digraph" in source.read_text()


@pytest.mark.docker
def test_cli_exports_kubernetes_manifests(app_dir, tmp_path, base_image):
    import yaml

    app = App(app_dir)
    app.add(Workflow("w", executors=[Executor("a", code="print('from a')")]))
    app.save()
    done = scanflow(
        "--file", str(app_dir), "export", "k8s", "w", "-o", str(tmp_path / "k8s"), "--base-image", base_image
    )
    assert done.returncode == 0, done.stderr
    kinds = {
        doc["kind"] for f in (tmp_path / "k8s").rglob("*.y*ml") for doc in yaml.safe_load_all(f.read_text()) if doc
    }
    assert {"Deployment", "Service", "PersistentVolumeClaim", "Job"} <= kinds
