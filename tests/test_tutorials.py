"""The tutorials: committed clean and openable in Colab and Binder; each runs top to bottom in small-data mode
(SCANFLOW_SMALL=1, a real kernel through nbclient) and its outputs say what the tutorial promises."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
REPOSITORY = "scanflow-nb/scanflow_nb"
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_the_seven_tutorials_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_containers.ipynb",
        "03_drift_checker.ipynb",
        "04_labeling.ipynb",
        "05_reproduction.ipynb",
        "06_serving.ipynb",
        "07_experiments.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_badges_and_a_colab_install_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    intro = nb.cells[0].source
    assert f"colab.research.google.com/github/{REPOSITORY}/blob/main/tutorials/{path.name}" in intro
    assert f"mybinder.org/v2/gh/{REPOSITORY}/main" in intro and path.name in intro
    setup = code[0].source
    assert setup.count(f"https://github.com/{REPOSITORY}") == 1, "the repository URL is written in one place"
    assert 'if "google.colab" in sys.modules:' in setup and "%pip install" in setup and "git+$REPOSITORY" in setup
    assert "output.enable_custom_widget_manager()" in setup, "Colab shows third-party widgets only with it"
    assert "SCANFLOW_SMALL" in setup


# -- running them ------------------------------------------------------------------------------------------------
ROOT = TUTORIALS.parent
IN_COLAB = (
    "01_quickstart.ipynb",
    "03_drift_checker.ipynb",
    "04_labeling.ipynb",
    "05_reproduction.ipynb",
    "06_serving.ipynb",
    "07_experiments.ipynb",
)


def xdist_group(item) -> str:
    """The tutorials on the Colab install (one per session) are one pytest-xdist group, on one worker; 02
    (Docker, which Colab has not) runs on this suite's environment and, with the checks above, is another group."""
    number = re.match(r"test_(\d\d)_", item.name)
    return "tutorials" if number and any(name.startswith(number[1]) for name in IN_COLAB) else "tutorials-local"


def outside_env(**extra: str) -> dict[str, str]:
    """This process's environment less PYTHONPATH (a worktree's `PYTHONPATH=$PWD` would hide what the
    tutorials' environments install)."""
    env = {**os.environ, **extra}
    env.pop("PYTHONPATH", None)
    return env


def pip(python: Path, *args: str) -> None:
    out = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        env=outside_env(),
    )
    assert out.returncode == 0, f"pip install {' '.join(args)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"


def colab_extras() -> str:
    """The extras the Colab tutorials' install cells ask for, together."""
    extras = set()
    for name in IN_COLAB:
        setup = next(c for c in nbformat.read(TUTORIALS / name, as_version=4).cells if c.cell_type == "code").source
        asked = re.search(r'%pip install --quiet "scanflow_nb\[([\w,]+)\] @ git\+\$REPOSITORY"', setup)
        assert asked, f"{name}: no install line to replay"
        extras.update(asked.group(1).split(","))
    return ",".join(sorted(extras))


@pytest.fixture(scope="session")
def colab_python(tmp_path_factory) -> Path:
    """A new environment set up the way the tutorials' first cell sets up Colab.

    Colab ships a recent pip and many packages (TensorFlow, scikit-learn, a notebook kernel...): here
    this suite's own environment stands in for them, seen through a .pth file, so nothing heavy is
    downloaded again. Then the cells' `pip install "scanflow_nb[EXTRAS] @ git+$REPOSITORY"`, once with
    the extras they ask for together, the repository being this checkout at its committed HEAD.
    scanflow_nb must then come from that install, and the tutorials run against it from folders
    outside the checkout.
    """
    import sysconfig

    if shutil.which("git") is None or subprocess.run(["git", "-C", str(ROOT), "rev-parse"]).returncode != 0:
        pytest.skip("the Colab install needs this checkout as a git repository")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    venv = tmp_path_factory.mktemp("colab") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip(python, "--upgrade", "pip")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ships = venv / "colab_ships"  # the suite's packages, less scanflow_nb: Colab does not ship it
    ships.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "scanflow_nb" not in entry.name.lower().replace("-", "_"):
            (ships / entry.name).symlink_to(entry)
    Path(site, "colab_ships.pth").write_text(f"{ships}\n")
    pip(python, f"scanflow_nb[{colab_extras()}] @ git+file://{ROOT}@{head}")
    where = subprocess.run(
        [str(python), "-c", "import scanflow_nb; print(scanflow_nb.__file__)"],
        capture_output=True,
        text=True,
        cwd=venv,
        env=outside_env(),
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(site), f"scanflow_nb came from {where}, not from the Colab install"
    return python


def execute(name: str, folder: Path, python: Path) -> nbformat.NotebookNode:
    """Run tutorial `name` in `folder` (outside the checkout) with a fresh kernel of `python` in small-data mode;
    a failing cell fails the test."""
    shutil.copy(TUTORIALS / name, folder / name)
    env = outside_env(
        SCANFLOW_SMALL="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.pop("SCANFLOW_BASE_IMAGE", None)  # as after `make machine`: the docker back end finds its base image
    out = subprocess.run(
        # a hang guard, not a speed check: beside two CPU hogs, 02's docker run cell once took over 600 s
        [str(python), "-c", "from nbclient.cli import main; main()", "--inplace", "--timeout=1500", name],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    nb = nbformat.read(folder / name, as_version=4)  # kept for a look when an assertion fails
    assert out.returncode == 0, f"{name} failed:\n{out.stderr[-4000:]}"
    return nb


@pytest.fixture(scope="module")
def ran(tmp_path_factory, request):
    """Each tutorial runs once per test session, in its own folder: the Colab ones on the Colab install,
    02 (Docker, which Colab has not) on this suite's own environment."""
    cache = {}

    def run(name):
        if name not in cache:
            python = request.getfixturevalue("colab_python") if name in IN_COLAB else Path(sys.executable)
            cache[name] = execute(name, tmp_path_factory.mktemp(Path(name).stem), python)
        return cache[name]

    return run


def cell(nb, tag: str):
    found = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert found, f"no cell tagged {tag!r}"
    return found[0]


def text(nb, tag: str) -> str:
    """Everything a cell printed or displayed as text."""
    parts = []
    for out in cell(nb, tag).outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def shows(nb, tag: str, mime: str) -> int:
    return sum(mime in out.get("data", {}) for out in cell(nb, tag).outputs)


def number(pattern: str, haystack: str) -> float:
    match = re.search(pattern, haystack)
    assert match, f"{pattern!r} not in output:\n{haystack}"
    return float(match.group(1))


@pytest.mark.slow
def test_01_quickstart_runs_the_nested_workflow_and_finds_it_in_mlflow(ran):
    nb = ran("01_quickstart.ipynb")
    assert "declared parallel workflow 'training' inside 'main'" in text(nb, "declare")
    assert shows(nb, "run", WIDGET) == 1, "the live graph widget is shown during the run"
    run = text(nb, "run")
    assert "workflow 'main' succeeded" in run and "[training/forest] forest: test accuracy" in run
    statuses = text(nb, "statuses")
    assert "status: succeeded" in statuses
    assert all(f"{key}: succeeded" in statuses for key in ("main/prepare", "training/logistic", "training/forest"))
    assert shows(nb, "graph", WIDGET) == 1
    tree = text(nb, "tree")
    assert "└── training  (parallel)" in tree and "forest  [succeeded" in tree and "3/3 done" in tree
    runs = text(nb, "mlflow")
    assert re.search(
        r"^    training: FINISHED\n        forest: FINISHED accuracy 0\.\d+\n        logistic: FINISHED", runs, re.M
    ), runs
    assert number(r"training/logistic: accuracy (0\.\d+)", runs) > 0.9
    assert number(r"training/forest: accuracy (0\.\d+)", runs) > 0.9
    assert "{'C': '0.5'}" in runs and "{'trees': '50'}" in runs
    assert text(nb, "rerun").strip() == str(
        {"main/prepare": "cached", "training/logistic": "cached", "training/forest": "cached"}
    )
    assert "forest: test accuracy" in text(nb, "logs")


@pytest.mark.slow
@pytest.mark.docker
def test_02_containers_runs_on_docker_and_exports_files_that_name_its_images(ran):
    from docker_support import BASE, engine

    from scanflow_nb.containers.base import base_image_exists

    engine()
    if not base_image_exists(BASE) and not base_image_exists("python:3.11-slim"):
        pytest.skip(f"needs the local base image {BASE} (`make machine` builds it): no registry is reachable")
    nb = ran("02_containers.ipynb")
    if not base_image_exists("python:3.11-slim"):
        assert f"base image: {BASE}, built on this machine" in text(nb, "run"), "the run says which base it chose"
    statuses = text(nb, "statuses")
    assert "status: succeeded on docker" in statuses
    assert number(r"training/forest: succeeded in [\d.]+ s, accuracy (0\.\d+)", statuses) > 0.9
    assert number(r"training/logistic: succeeded in [\d.]+ s, accuracy (0\.\d+)", statuses) > 0.9
    images = text(nb, "images")
    tags = re.findall(r"^(\S+): (scanflow/\S+:[0-9a-f]{16}) ", images, re.M)
    assert [key for key, _ in tags] == ["main/prepare", "training/logistic", "training/forest"]
    assert "COPY code/training/forest.py" in images and "RUN python -m pip install" in images
    exported = text(nb, "export")
    for kind in (
        "compose: exports/docker-compose.yml",
        "stack: exports/docker-stack.yml",
        "k8s: exports/kubernetes.yaml",
    ):
        assert kind in exported
    assert "Job/main-training-forest" in exported
    compose = text(nb, "compose")
    for _, tag in tags:
        assert f"image: {tag}" in compose, "the exported file names the images the run built"
    assert "condition: service_completed_successfully" in compose
    assert re.search(r"docker-compose config: valid|docker-compose is not installed", text(nb, "validate"))
    from scanflow_nb.run.docker import leftovers

    app_dir = Path(re.search(r"app (\S+)", text(nb, "declare")).group(1))
    assert leftovers(app_dir) == [], "the run removed its containers and network"


@pytest.mark.slow
def test_03_checker_flags_the_corrupted_batches_and_the_monitor_alerts(ran):
    nb = ran("03_drift_checker.ipynb")
    assert shows(nb, "gallery", "image/png") == 1
    assert shows(nb, "start", WIDGET) == 1, "the drift monitor is shown"
    assert "with AutoencoderDetector(alpha=0.01" in text(nb, "start")
    verdicts = re.findall(r"^\s*(\w+): (DRIFT|ok)\s+p-value", text(nb, "batches"), re.M)
    assert verdicts == [("clean", "ok")] * 3 + [("rotate", "DRIFT"), ("stripe", "DRIFT"), ("motion_blur", "DRIFT")]
    alert = text(nb, "alert")
    assert re.search(r"monitor says: (DRIFT|ALARM): batch run", alert) and "3 of 6 batches drifted" in alert
    assert re.search(
        r"watching, 6 batches checked, 3 drifted, [1-3] alarms, 0 data-quality findings, 0 unreadable", alert
    )
    checks = re.findall(r"is_drift (\d), p_value", text(nb, "verdicts"))
    assert checks == ["0", "0", "0", "1", "1", "1"], "every batch has its check run in MLflow"
    assert shows(nb, "anomalies", "image/png") == 1
    assert "checker of 'serve' stopped" in text(nb, "stop")
    table = text(nb, "table")
    assert "drift: True" in table and "drifted columns: ['scanner']" in table
    assert "missing_column in 'worst area': 60" in table and "nan in 'mean radius': 3" in table
    assert "unseen_category in 'scanner'" in table and "'D'" in table
    lines = re.findall(r"^batch +\d+ (clean|shifted)\s*:.*$", text(nb, "stream"), re.M)
    steps = re.findall(r"^batch +\d+ (clean  |shifted): .*?(-> ALARM)?$", text(nb, "stream"), re.M)
    assert len(lines) == len(steps) == 20
    assert not any(alarm for kind, alarm in steps if kind.strip() == "clean"), "no false alarm on clean batches"
    shifted = [alarm for kind, alarm in steps if kind == "shifted"]
    assert any(shifted[:8]), "the lasting spread is flagged within 8 batches"
    model = text(nb, "model")
    assert "drift: True" in model
    estimated = [float(v) for v in re.findall(r"'(0\.\d+)'", model.split("estimated class shares:")[1].splitlines()[0])]
    true = [float(v) for v in re.findall(r"'(0\.\d+)'", model.split("true class shares:")[1].splitlines()[0])]
    assert len(estimated) == len(true) == 10 and max(abs(a - b) for a, b in zip(estimated, true)) < 0.06


@pytest.mark.slow
def test_04_panel_labels_retrains_and_the_planner_decides(ran):
    nb = ran("04_labeling.ipynb")
    start = number(r"accuracy (0\.\d+) with 20 labels", text(nb, "improver"))
    assert shows(nb, "panel", WIDGET) == 1
    labeling = text(nb, "labeling")
    assert "40 labels given" in labeling
    scores = [float(s) for s in re.findall(r"trained on\s+\d+ labels: (0\.\d+)", labeling)]
    assert scores[0] == pytest.approx(start, abs=1e-3) and scores[-1] > start + 0.1
    assert re.search(r"session logged to MLflow run [0-9a-f]{32}", labeling)
    assert re.search(r"after 20 labels: typical \(waiting for 10 typical labels", labeling)
    baseline = text(nb, "baseline")
    assert number(r"chosen by the improver (0\.\d+)", baseline) == pytest.approx(scores[-1], abs=1e-3)
    assert number(r"random samples (0\.\d+)", baseline) > start
    assert re.search(r"no champion yet: v1 \(accuracy 0\.\d+\) becomes champion", text(nb, "planner"))
    assert re.search(r"batch: drift True \(p = [\d.e-]+\), \d+ anomalous samples joined the pool", text(nb, "round"))
    assert shows(nb, "round", WIDGET) == 1, "the round's labeling panel is shown"
    decision = text(nb, "decision")
    action, champion = re.search(
        r"labeled 20 anomalies chosen by [a-z, ]+ sampling; planner: (promote|keep) -> champion v(\d)", decision
    ).groups()
    new, old = (float(x) for x in re.search(r"v2 accuracy (0\.\d+) vs champion v1 (0\.\d+)", decision).groups())
    assert (action, champion) == (("promote", "2") if new > old else ("keep", "1"))
    entries = [ast.literal_eval(line) for line in text(nb, "decisions").splitlines() if line.startswith("{")]
    assert [e["action"] for e in entries] == ["promote", action]


@pytest.mark.slow
def test_05_reproduction_reports_detection_and_accuracies(ran):
    nb = ran("05_reproduction.ipynb")
    assert shows(nb, "gallery", "image/png") == 1
    assert "digits: 1797 images of 8x8" in text(nb, "datasets")
    table = text(nb, "table")
    rows = dict(re.findall(r"^(\w+)\s+(yes|no) \(", table, re.M))
    assert rows == {"none": "no", "rotate": "yes", "stripe": "yes", "shot_noise": "yes", "brightness": "yes"}
    for name in ("rotate", "stripe", "shot_noise", "brightness"):
        before, active, random = (
            float(x)
            for x in re.search(
                rf"^{name}\s+yes \([^)]*\)\s+\d+\s+10\s+(0\.\d+)\s+(0\.\d+)\s+(0\.\d+)", table, re.M
            ).groups()
        )
        assert before < number(r"clean test accuracy (0\.\d+)", table)
        assert 0 < active <= 1 and 0 < random <= 1
    assert shows(nb, "plot", "image/png") == 1
    summary = text(nb, "summary")
    assert "5 reproduction runs in MLflow" in summary
    assert "digits: drift detected in 4 of 4 corrupted batches, none on the clean batch: True" in summary
    assert ".. list-table::" in summary and "   * - rotate" in summary


@pytest.mark.slow
def test_06_the_deployed_loop_flags_drift_promotes_and_the_service_follows(ran):
    nb = ran("06_serving.ipynb")
    assert re.search(r"no champion yet: v1 \(accuracy 0\.\d+\) becomes champion", text(nb, "model"))
    deploy = text(nb, "deploy")
    assert "declared service serve/api: models:/digits@champion on 127.0.0.1:" in deploy
    assert "serve/api: serving" in deploy
    assert shows(nb, "deploy", WIDGET) == 1, "the live graph shows the run and its service"
    assert shows(nb, "checker", WIDGET) == 1
    traffic = text(nb, "traffic")
    clean = number(r"clean: 200 rows answered by v1, accuracy (0\.\d+)", traffic)
    before = number(r"rotated: 200 rows answered by v1, accuracy (0\.\d+)", traffic)
    assert clean > before
    verdicts = re.findall(r"of 100 rows: (DRIFT|ok)", text(nb, "verdicts"))
    assert verdicts[:2] == ["ok", "ok"] and "DRIFT" in verdicts[2:]
    assert re.search(r"served batch \w+: 100 rows, drift True, \d+ anomalous samples", text(nb, "label"))
    assert shows(nb, "label", WIDGET) == 1, "the labeling panel is shown"
    decision = text(nb, "decision")
    assert re.search(r"labeled 20 anomalies; planner: promote -> champion v2", decision), decision
    switched = text(nb, "switched")
    assert "'version': '2'" in switched
    after = number(r"rotated again: answered by v2, accuracy (0\.\d+)", switched)
    assert after > before
    mlflow = text(nb, "mlflow")
    assert re.search(r"\d+ batch, \d+ check", mlflow) and "service" in mlflow
    assert number(r"(\d+) batch", mlflow) >= 6, "600 answered rows in batches of at most 100, all in MLflow"
    assert re.search(r"last batch: \d+ rows by v2", mlflow), mlflow
    assert "switch: api switch v1 -> v2 {'previous': '1', 'version': '2'}" in mlflow
    assert "['batch/batch.npy', 'batch/predictions.npy', 'batch/probabilities.npy']" in mlflow
    assert "workflow 'serve' succeeded" in text(nb, "stop")


@pytest.mark.slow
def test_07_experiments_lists_compares_reruns_and_sweeps(ran):
    nb = ran("07_experiments.ipynb")
    assert "<table" in "".join(out.get("data", {}).get("text/html", "") for out in cell(nb, "runs").outputs)
    rows = re.findall(r"^\s*[0-9a-f]{32}\s+succeeded\s+(\d)\s+(\d+)\s+(\d+)\s+0\.\d+$", text(nb, "frame"), re.M)
    assert rows == [("1", "30", "3"), ("0", "20", "4")], text(nb, "frame")  # newest first; prepare cached the 2nd time
    compare = text(nb, "compare")
    assert "trees: 20 -> 30" in compare and "depth: 4 -> 3" in compare and "succeeded -> cached" in compare
    assert re.search(r"^\s*\+model = RandomForestClassifier\(.*class_weight=\"balanced\"", compare, re.M), compare
    rerun = text(nb, "rerun")
    assert "with its recorded code and parameters" in rerun
    again = number(r"accuracy (0\.\d+)", rerun)
    assert again == number(r"first run: (0\.\d+)", rerun) != number(r"after the edit: (0\.\d+)", rerun)
    assert shows(nb, "grid", WIDGET) == 1, "the trials table is shown while the sweep runs"
    grid = text(nb, "grid")
    assert re.search(r"best: \{'trees': \d+, 'depth': \d+\} 0\.\d+ [0-9a-f]{32}", grid), grid
    assert number(r"best: \{.*\} (0\.\d+)", text(nb, "search")) > 0.8
    assert "MLflow UI of" in text(nb, "ui") and "http://127.0.0.1:" in text(nb, "ui")
