"""What this machine offers local executors: CPUs, memory and GPUs, within the limits the kernel
itself runs under (CPU affinity, its own cgroup's CPU quota and memory limit)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from ..resources import Node
from . import cgroups

HIDDEN = {"", "-1", "none", "NoDevFiles"}  # CUDA_VISIBLE_DEVICES values that mean "no GPU"


def cpu_count() -> float:
    """CPUs this process may use: its CPU affinity, capped by its cgroup's CPU quota."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroups.cpu_limit()
    return min(cpus, quota) if quota else cpus


def memory_total() -> int:
    """Physical memory, capped by the memory limit this process's cgroup sets."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroups.memory_limit()
    return min(physical, limit) if limit else physical


def gpu_ids() -> tuple[str, ...]:
    """The GPUs executors may be given: CUDA_VISIBLE_DEVICES when the kernel has it (as CUDA reads
    it), else those `nvidia-smi` lists; none without an NVIDIA driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return () if visible.strip() in HIDDEN else tuple(v.strip() for v in visible.split(",") if v.strip())
    return _nvidia_smi_gpus()


@functools.lru_cache(maxsize=1)
def _nvidia_smi_gpus() -> tuple[str, ...]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.stdout.splitlines() if line.strip()) if out.returncode == 0 else ()


def this_machine() -> Node:
    return Node("this machine", cpu_count(), memory_total(), gpu_ids())
