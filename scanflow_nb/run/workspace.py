"""Where a run keeps its files in the app folder: scripts, logs, the cache and the last results."""

from __future__ import annotations

import json
from pathlib import Path

from .. import sources
from ..files import atomic_write, state_dir
from ..spec import Executor
from .result import RunResult


class Workspace:
    """The `.scanflow` state folder of an app."""

    def __init__(self, app_dir: Path):
        self.app_dir = Path(app_dir)
        self.state_dir = state_dir(self.app_dir)

    def log_path(self, key: str) -> Path:
        return self.state_dir / "logs" / f"{key}.log"

    def script(self, workflow: str, executor: Executor) -> Path | None:
        """The Python file an executor runs: its `file`, or its inline `code` written out; None if neither."""
        if executor.file:
            return self.app_dir / executor.file
        code = sources.executor_code(self.app_dir, workflow, executor)
        if code is None:
            return None
        path = self.state_dir / "code" / code[0]
        if not path.is_file() or path.read_bytes() != code[1]:
            atomic_write(path, code[1])
        return path

    def requirements_text(self, executor: Executor) -> str:
        return sources.requirements_text(self.app_dir, executor)

    # -- cache: key -> {"digest", "run_id"} of the last successful run ----------------------
    @property
    def _cache_file(self) -> Path:
        return self.state_dir / "cache.json"

    def cache(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self._cache_file.read_text())
        except (OSError, ValueError):
            return {}

    def remember(self, key: str, digest: str, run_id: str | None) -> None:
        cache = self.cache()
        cache[key] = {"digest": digest, "run_id": run_id or ""}
        atomic_write(self._cache_file, json.dumps(cache, indent=1, sort_keys=True))

    # -- last result per workflow ------------------------------------------------------------
    def result_path(self, workflow: str) -> Path:
        return self.state_dir / "runs" / f"{workflow}.json"

    def save_result(self, result: RunResult) -> None:
        atomic_write(self.result_path(result.workflow), json.dumps(result.to_dict(), indent=1))

    def last_result(self, workflow: str) -> RunResult | None:
        try:
            return RunResult.from_dict(json.loads(self.result_path(workflow).read_text()))
        except (OSError, ValueError, TypeError):
            return None
