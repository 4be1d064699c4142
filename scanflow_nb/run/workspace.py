"""Where a run keeps its files in the app folder: scripts, logs, the cache and the last results."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .. import sources
from ..files import FileDigests, atomic_write, state_dir
from ..spec import Executor
from .result import RunResult


class Workspace:
    """The `.scanflow` state folder of an app."""

    def __init__(self, app_dir: Path):
        self.app_dir = Path(app_dir)
        self.state_dir = state_dir(self.app_dir)
        self._logs: dict[str, Path] = {}

    def log_path(self, key: str) -> Path:
        path = self._logs.get(key)  # asked for at every event of a run
        if path is None:
            path = self._logs[key] = self.state_dir / "logs" / f"{key}.log"
        return path

    def script(self, workflow: str, executor: Executor) -> Path | None:
        """The Python file an executor runs: its `file`, or its inline `code` written out; None if neither."""
        if executor.file:
            return self.app_dir / executor.file
        code = sources.executor_code(self.app_dir, workflow, executor)
        if code is None:
            return None
        path = self.state_dir / "code" / code[0]
        try:
            unchanged = path.read_bytes() == code[1]
        except OSError:
            unchanged = False
        if not unchanged:
            atomic_write(path, code[1])
        return path

    def requirements_text(self, executor: Executor) -> str:
        return sources.requirements_text(self.app_dir, executor)

    # -- cache: key -> {"digest", "run_id"} of the last successful run ----------------------
    # cache.json holds the entries as of the end of the last run; each success during a run is one
    # line appended to cache.log (cheap, and kept if the process dies), folded in by `fold_cache`.
    @property
    def _cache_file(self) -> Path:
        return self.state_dir / "cache.json"

    @property
    def _cache_log(self) -> Path:
        return self.state_dir / "cache.log"

    def cache(self) -> dict[str, dict[str, str]]:
        """Every executor's last successful cache key and run id (read once per run)."""
        try:
            cache = json.loads(self._cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
        return {**cache, **_logged(self._cache_log)}

    def remember(self, key: str, digest: str, run_id: str | None) -> None:
        """Record a success: one line appended to the cache log."""
        self._cache_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self._cache_log, "a") as log:
            log.write(json.dumps({"key": key, "digest": digest, "run_id": run_id or ""}) + "\n")

    def fold_cache(self) -> None:
        """Fold the cache log into cache.json (at the end of a run).

        The log is renamed first, so lines another run appends meanwhile go to a new log; a line
        lost in a race only means that executor runs again next time.
        """
        folding = self.state_dir / f".cache.log.{os.getpid()}.{threading.get_ident()}"
        try:
            os.replace(self._cache_log, folding)
        except FileNotFoundError:
            return
        try:
            cache = {**self.cache(), **_logged(folding)}
            atomic_write(self._cache_file, json.dumps(cache, sort_keys=True))
        finally:
            folding.unlink(missing_ok=True)

    def digests(self) -> FileDigests:
        """Content digests of the app's files that hash only what changed since the last run."""
        return FileDigests(self.state_dir / "digests.json")

    # -- last result per workflow ------------------------------------------------------------
    def result_path(self, workflow: str) -> Path:
        return self.state_dir / "runs" / f"{workflow}.json"

    def save_result(self, result: RunResult) -> None:
        atomic_write(self.result_path(result.workflow), json.dumps(result.to_dict()))

    def last_result(self, workflow: str) -> RunResult | None:
        try:
            return RunResult.from_dict(json.loads(self.result_path(workflow).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _logged(path: Path) -> dict[str, dict[str, str]]:
    """The entries of a cache log, later lines winning; a line cut short by a crash is left out."""
    entries = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return entries
    for line in lines:
        try:
            entry = json.loads(line)
            entries[entry.pop("key")] = entry
        except (ValueError, KeyError, AttributeError, TypeError):
            continue
    return entries
