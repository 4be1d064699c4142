"""An executor's code and requirements as the app folder holds them: the one place that reads them."""

from __future__ import annotations

from pathlib import Path

from .errors import NotFoundError
from .spec import Executor


def executor_code(app_dir: Path, workflow: str, executor: Executor) -> tuple[str, bytes] | None:
    """(path relative to the app folder, source) of the executor's script; None for image-only executors.

    Inline `code` has the path `<workflow>/<name>.py`, as if it were a file of the app.
    """
    path = code_path(workflow, executor)
    if executor.file:
        if not (Path(app_dir) / path).is_file():
            raise NotFoundError(f"executor {executor.name!r}: file {executor.file!r} not found in {app_dir}")
        return path, (Path(app_dir) / path).read_bytes()
    if executor.code:
        return path, executor.code.encode()
    return None


def code_path(workflow: str, executor: Executor) -> str | None:
    """The app-relative path of the executor's code: its file, or `<workflow>/<name>.py` for inline code."""
    if executor.file:
        return executor.file.replace("\\", "/")
    return f"{workflow}/{executor.name}.py" if executor.code else None


def requirements_text(app_dir: Path, executor: Executor) -> str:
    """The executor's pip requirements as the text of a requirements file ("" when it has none)."""
    if isinstance(executor.requirements, str):
        path = Path(app_dir) / executor.requirements
        if not path.is_file():
            raise NotFoundError(f"executor {executor.name!r}: requirements file {path} does not exist")
        return path.read_text()
    return "\n".join(executor.requirements or [])
