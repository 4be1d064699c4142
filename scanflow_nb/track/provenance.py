"""Provenance: what an executor run was made of, recorded beside its code and log.

Every executor run that really ran gets an artifact `scanflow/provenance.json` (its resolved
parameters and command line, the code's path and digest, its requirements, the digests of its
declared inputs as they were when it started and of its outputs when it ended, the image on
container back ends, the Python version, the app's git commit and dirty flag) and a copy of the
code as it was when it started. A few of these facts are also tags, where the MLflow UI shows them:
MLflow's own source tags (`mlflow.source.name`, `mlflow.source.git.commit`) and `scanflow.*` ones.
The root run of a workflow run gets `scanflow/workflow.json`: the declarations it ran (environment
values left out: they may be secrets), which is what `App.rerun` rebuilds the workflow from.

`executor_provenance` and `workflow_provenance` only write files into the state folder and return
tags and file paths; the engine has its MLflow writer call them (`RunWriter.finish(later=...)`),
so writing the records costs the run nothing.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from ..files import STATE_DIR

RECORD = "provenance.json"  # artifact of every executor run that ran, under scanflow/
WORKFLOW = "workflow.json"  # artifact of a workflow run's root, under scanflow/
ARTIFACT_DIR = "scanflow"  # where the engine puts every artifact of its own


@dataclass
class Provenance:
    """Tags to set on a run and files to log as its artifacts (under `scanflow/`)."""

    tags: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def git_state(folder: Path) -> dict[str, str]:
    """MLflow's git source tags and `scanflow.git.dirty` for `folder`; {} outside a git work tree.

    Dirty means a tracked file was changed or an untracked file appeared under `folder`, the state
    folder left out. Costs two `git` calls, and none when no folder above has a `.git`.
    """
    folder = Path(folder).resolve()
    if shutil.which("git") is None or not any((p / ".git").exists() for p in (folder, *folder.parents)):
        return {}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    changes = git("status", "--porcelain", "--untracked-files=normal", "--", ".", f":(exclude){STATE_DIR}")
    tags = {"mlflow.source.git.commit": commit, "scanflow.git.dirty": "true" if changes else "false"}
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":
        tags["mlflow.source.git.branch"] = branch
    remote = git("config", "--get", "remote.origin.url")
    if remote:
        tags["mlflow.source.git.repoURL"] = remote
    return tags


def executor_provenance(
    state_dir: Path,
    key: str,
    *,
    parameters: dict[str, Any],
    args: list[str],
    code_path: str | None,
    code: bytes | None,
    requirements: str,
    inputs: dict[str, str],
    outputs: dict[str, str],
    backend: str,
    environment: dict[str, str],
    git: dict[str, str],
) -> Provenance:
    """Write the record of one executor run (and its code as it started) and return what to log.

    `inputs`: digests of the declared inputs taken when the run started; `outputs`: of its declared
    outputs when it ended (the engine takes both on its own thread, and calls this from its MLflow
    writer's, off the run's path).
    `environment`: what the back end says about where it ran (`python`, `image`, `image_digest`).
    """
    folder = Path(state_dir) / "provenance" / key
    record: dict[str, Any] = {
        "key": key,
        "parameters": parameters,
        "args": args,
        "code": None,
        "requirements": requirements,
        "inputs": inputs,
        "outputs": outputs,
        "backend": backend,
        "python": environment.get("python"),
        "image": environment.get("image"),
        "image_digest": environment.get("image_digest"),
        "platform": platform.platform(),
        "git": {"commit": git["mlflow.source.git.commit"], "dirty": git["scanflow.git.dirty"] == "true"}
        if git
        else None,
    }
    tags = {
        "scanflow.requirements.sha256": sha256(requirements.encode()).hexdigest(),
        **{k: v for k, v in git.items() if k.startswith("mlflow.source.git.") or k == "scanflow.git.dirty"},
    }
    for name in ("python", "image", "image_digest"):
        if environment.get(name):
            tags[f"scanflow.{name.replace('_', '.')}"] = environment[name]
    files = []
    if code is not None and code_path is not None:
        record["code"] = {"path": code_path, "sha256": sha256(code).hexdigest()}
        tags.update({"mlflow.source.name": code_path, "scanflow.code.sha256": record["code"]["sha256"]})
        copy = folder / "code" / Path(code_path).name
        _stage(copy, code)
        files.append(copy)
    _stage(folder / RECORD, json.dumps(record, indent=1, sort_keys=True, default=str))
    return Provenance(tags, [folder / RECORD, *files])


def workflow_provenance(state_dir: Path, root: str, top: dict[str, Any], git: dict[str, str]) -> Provenance:
    """The declarations a workflow run ran: `top` is its top-level workflow as plain data."""
    record = {"root": root, "workflow": strip_env(top), "python": platform.python_version()}
    path = Path(state_dir) / "provenance" / "workflows" / root / WORKFLOW
    _stage(path, json.dumps(record, indent=1, sort_keys=True, default=str))
    return Provenance({**git, "scanflow.python": platform.python_version()}, [path])


def _stage(path: Path, data: str | bytes) -> None:
    """Write a file that only waits to be copied into MLflow (no fsync: the artifact is the record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def strip_env(workflow: dict[str, Any]) -> dict[str, Any]:
    """A workflow's plain data with every executor's environment reduced to its names (values may be secrets)."""
    out = dict(workflow)
    out["executors"] = [
        {**ex, "env": dict.fromkeys(ex["env"], "")} if ex.get("env") else ex for ex in workflow.get("executors", [])
    ]
    out["workflows"] = [strip_env(child) for child in workflow.get("workflows", [])]
    return {k: v for k, v in out.items() if v != [] or k not in ("executors", "workflows")}
