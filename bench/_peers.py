"""Run a chain of scripts through a peer tool, over and over, for bench/overhead.py.

Usage: python bench/_peers.py TOOL FOLDER SCRIPT...   (TOOL: ploomber | kedro | papermill)

Runs in the peers' own environment (they pin packages the project's environment must not get), so it
imports nothing of scanflow_nb. Everything a tool needs is set up once, like in a live kernel; then
each line "run" on stdin runs the chain once and prints "@time SECONDS" (the tools print their own
lines too). Anything else ends it.
Ploomber: a DAG of ScriptRunner tasks, one after another (its default Serial executor). Kedro: a
pipeline of nodes that run each script in-process (runpy), with SequentialRunner, its log quiet
(as scanflow_nb's quiet runs; bench/overhead.py also times scanflow_nb's console). papermill: each
script as a one-cell notebook, executed one after the other.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PLOOMBER_STATS_ENABLED", "false")


def ploomber_chain(folder: Path, scripts: list[Path]):
    from ploomber import DAG
    from ploomber.products import File
    from ploomber.tasks import ScriptRunner

    dag = DAG()
    previous = None
    for script in scripts:
        task = ScriptRunner(script, File(folder / f"{script.stem}.done"), dag, name=script.stem)
        if previous is not None:
            previous >> task
        previous = task
    dag.render()
    return lambda: dag.build(force=True, show_progress=False)


def kedro_chain(folder: Path, scripts: list[Path]):
    import logging
    import runpy

    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline, node
    from kedro.runner import SequentialRunner

    def step(script: Path):
        def run(*_):
            runpy.run_path(str(script), run_name="__main__")
            return True

        return run

    nodes = [
        node(step(s), inputs=f"done{i - 1}" if i else None, outputs=f"done{i}", name=s.stem)
        for i, s in enumerate(scripts)
    ]
    pipeline, runner = Pipeline(nodes), SequentialRunner()
    logging.getLogger("kedro").setLevel(logging.WARNING)
    return lambda: runner.run(pipeline, DataCatalog())


def papermill_chain(folder: Path, scripts: list[Path]):
    import nbformat
    import papermill

    notebooks = []
    for script in scripts:
        notebook = folder / f"{script.stem}.ipynb"
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(script.read_text())])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, notebook)
        notebooks.append(notebook)

    def run():
        for notebook in notebooks:
            papermill.execute_notebook(
                str(notebook), str(notebook.with_suffix(".out.ipynb")), progress_bar=False, cwd=str(folder)
            )

    return run


CHAINS = {"ploomber": ploomber_chain, "kedro": kedro_chain, "papermill": papermill_chain}


def main() -> None:
    tool, folder, scripts = sys.argv[1], Path(sys.argv[2]), [Path(s) for s in sys.argv[3:]]
    os.chdir(folder)
    run = CHAINS[tool](folder, scripts)
    print("@ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        run()
        print(f"@time {time.perf_counter() - start}", flush=True)


if __name__ == "__main__":
    main()
