"""Linux control groups of this process: the limits it runs under, and child groups (cgroup v2)
that hold one local executor each under a hard memory limit.

Read from /proc/self/cgroup and /proc/self/mountinfo, so it works in containers (cgroup
namespaces) and on hybrid v1/v2 machines. Nothing is written unless `child_groups()` found a folder
where this process may create groups and move processes into them (it tries once, for real).
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

UNLIMITED = 2**60  # v1 writes "no limit" as a huge number (9223372036854771712)
JOIN = 'echo $$ > "$0" && exec "$@"'  # sh: move this shell into a group, then become the program


def _own_groups() -> dict[str, str]:
    """Controller -> this process's group path ("" is the v2 unified hierarchy)."""
    groups: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return groups
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            groups[name.removeprefix("name=")] = path
    return groups


def _mounts() -> list[tuple[str, Path, str, set[str]]]:
    """(root inside the hierarchy, mount point, fs type, super options) of every cgroup mount."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) > 4 and len(tail) > 2 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[3], Path(fields[4]), tail[0], set(tail[2].split(","))))
    return found


def own_dir(controller: str) -> Path | None:
    """The folder of this process's group that holds `controller`'s files ("memory", "cpu"), v2 first."""
    groups = _own_groups()
    for version in ("cgroup2", "cgroup"):
        for root, point, fstype, options in _mounts():
            if fstype != version:
                continue
            if version == "cgroup2":
                path = groups.get("")
                enabled = _read(point / "cgroup.controllers") or ""
                if path is None or controller not in enabled.split():
                    continue
            elif controller in options:
                path = groups.get(controller)
            else:
                continue
            if path is not None and (path + "/").startswith(root.rstrip("/") + "/"):
                folder = point / path[len(root.rstrip("/")) :].lstrip("/")
                if folder.is_dir():
                    return folder
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _up_to_mount(folder: Path) -> list[Path]:
    """`folder` and the folders above it that belong to the same cgroup mount."""
    chain = [folder]
    while (chain[-1].parent / "cgroup.procs").exists() and chain[-1].parent != chain[-1]:
        chain.append(chain[-1].parent)
    return chain


def memory_limit() -> int | None:
    """The memory limit this process runs under (the smallest of its groups'), None if none."""
    folder = own_dir("memory")
    limits = []
    for group in _up_to_mount(folder) if folder else []:
        text = _read(group / "memory.max") or _read(group / "memory.limit_in_bytes")
        if text and text != "max" and int(text) < UNLIMITED:
            limits.append(int(text))
    return min(limits, default=None)


def cpu_limit() -> float | None:
    """The CPU quota this process runs under, in CPUs (the smallest of its groups'), None if none."""
    folder = own_dir("cpu")
    limits = []
    for group in _up_to_mount(folder) if folder else []:
        text = _read(group / "cpu.max")
        if text:
            quota, period = text.split()
        else:
            quota, period = _read(group / "cpu.cfs_quota_us") or "-1", _read(group / "cpu.cfs_period_us") or "0"
        if quota not in ("max", "-1") and int(period) > 0:
            limits.append(int(quota) / int(period))
    return min(limits, default=None)


class ChildGroup:
    """One executor attempt's cgroup v2 group: memory.max without swap, the whole group killed on OOM."""

    def __init__(self, path: Path):
        self.path = path

    def command(self, argv: list[str]) -> list[str]:
        """`argv`, started inside this group (a shell joins it, then becomes the program)."""
        return ["sh", "-c", JOIN, str(self.path / "cgroup.procs"), *argv]

    def out_of_memory(self) -> bool:
        events = dict(line.split() for line in (_read(self.path / "memory.events") or "").splitlines())
        return int(events.get("oom_kill", 0)) > 0 or int(events.get("oom_group_kill", 0)) > 0

    def remove(self) -> None:
        """Stop whatever is left in the group and remove it (logged, never raised, if it cannot be)."""
        pids = (_read(self.path / "cgroup.procs") or "").split()
        if pids and not _write(self.path / "cgroup.kill", "1"):
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
        try:
            self.path.rmdir()
        except OSError as exc:
            log.warning("could not remove the executor's cgroup %s: %s", self.path, exc)


def _write(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
        return True
    except OSError:
        return False


class ChildGroups:
    """Where executor groups are made: a cgroup v2 folder with the memory controller enabled for its
    children, writable by this process."""

    def __init__(self, parent: Path):
        self.parent = parent
        self.cpu = "cpu" in (_read(parent / "cgroup.subtree_control") or "").split()

    def make(self, memory: int | None, cpus: float | None = None) -> ChildGroup:
        path = self.parent / f"scanflow-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        group = ChildGroup(path)
        try:
            if memory is not None:
                (path / "memory.max").write_text(str(memory))
                _write(path / "memory.swap.max", "0")  # absent without swap accounting
            _write(path / "memory.oom.group", "1")
            if cpus is not None and self.cpu:
                (path / "cpu.max").write_text(f"{round(cpus * 100_000)} 100000")
        except OSError:
            group.remove()
            raise
        return group

    def works(self) -> bool:
        """Make a group, move a real process into it, remove it: True if all of that worked."""
        try:
            group = self.make(None)
        except OSError:
            return False
        try:
            done = subprocess.run(group.command(["true"]), capture_output=True, timeout=10)
            return done.returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False
        finally:
            group.remove()


@functools.cache
def child_groups(explicit: str | None = None) -> ChildGroups | None:
    """Where to make executor groups: `explicit` ($SCANFLOW_CGROUP, a folder delegated to this user),
    else beside this process's own v2 group; None when neither allows it (cgroup v1, a read-only
    /sys/fs/cgroup, no memory controller, no permission)."""
    own = own_dir("memory")
    if explicit:
        candidates = [Path(explicit)]
    elif own is not None and (own / "cgroup.controllers").exists():  # v2 (v1 groups lack that file)
        candidates = [own.parent]
    else:
        candidates = []
    for parent in candidates:
        if "memory" not in (_read(parent / "cgroup.subtree_control") or "").split() or not os.access(parent, os.W_OK):
            continue
        groups = ChildGroups(parent)
        if groups.works():
            return groups
    return None
