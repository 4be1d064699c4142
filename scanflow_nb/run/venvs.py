"""Virtual environments for executors' requirements: one per requirements digest, built once, reused."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

from ..errors import RunError
from ..spec import Executor
from .workspace import Workspace

_lock = threading.Lock()


def venv_python(app_dir: Path, executor: Executor) -> str:
    """The interpreter of the environment for `executor`'s requirements, building it if needed.

    Environments see the kernel's site-packages (so mlflow is there) and add the requirements.
    A failed build leaves nothing behind, so the next run tries again.
    """
    workspace = Workspace(app_dir)
    requirements = workspace.requirements_text(executor)
    key = hashlib.sha256(requirements.strip().encode()).hexdigest()[:16]
    root = workspace.state_dir / "venvs" / key
    python = root / "bin" / "python"
    with _lock:
        if (root / ".complete").is_file():
            return str(python)
        tmp = root.with_name(key + ".building")
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", "--system-site-packages", str(tmp)],
                check=True,
                capture_output=True,
                text=True,
            )
            (tmp / "requirements.txt").write_text(requirements)
            subprocess.run(
                [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(tmp / "requirements.txt")],
                check=True,
                capture_output=True,
                text=True,
            )
        except subprocess.CalledProcessError as exc:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
            raise RunError(
                f"executor {executor.name!r}: installing its requirements failed: {' '.join(detail)}"
            ) from None
        tmp.rename(root)
        (root / ".complete").write_text(requirements)
        return str(python)
