"""What a step needs (CPUs, memory, GPUs) and what it used: spelling, checks, inheritance, the
figures each engine is given, and the names of the usage metrics every executor run records.

Pure: no files, processes, engines or MLflow. Sizes are binary, as Docker reads them: "256M" is
256 MiB, "2G" is 2 GiB ("2Gi" and "2GiB" mean the same).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from .errors import ValidationError

PEAK_RSS_MB = "resource.peak_rss_mb"  # the largest resident memory of the step's processes, MiB
CPU_S = "resource.cpu_s"  # CPU time (user + system) of the step and the children it waited for
USAGE_METRICS = (CPU_S, PEAK_RSS_MB)

MIN_MEMORY = 6 * 2**20  # Docker's smallest memory limit
MIN_CPUS = 0.01  # Docker's smallest CPU quota (1 ms per 100 ms)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:ib?|b)?", re.IGNORECASE)
_MILLI = re.compile(r"(\d+)m")


def parse_memory(value: Any, what: str) -> int | None:
    """Bytes from 268435456, "256M", "256MiB", "1.5G"...; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationError(f"{what}: memory must be a size such as '512M' or '2G', got {value!r}")
    text = str(value).strip()
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValidationError(
            f"{what}: memory {value!r} is not a size: use a number of bytes or a number with K, M, G or T "
            "(binary: 1G = 1024M), e.g. '512M' or '2G'"
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < MIN_MEMORY:
        raise ValidationError(f"{what}: memory {value!r} is too small: give at least 6M")
    return size


def parse_cpus(value: Any, what: str) -> float | None:
    """CPUs from 2, 1.5, "1.5" or "500m" (thousandths, as Kubernetes writes them); None stays None."""
    if value is None:
        return None
    cpus: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        cpus = float(value)
    elif isinstance(value, str):
        milli = _MILLI.fullmatch(value.strip())
        try:
            cpus = int(milli.group(1)) / 1000 if milli else float(value)
        except ValueError:
            cpus = None
    if cpus is None or not math.isfinite(cpus):
        raise ValidationError(f"{what}: cpus must be a number of CPUs such as 2 or 0.5, got {value!r}")
    if cpus < MIN_CPUS:
        raise ValidationError(f"{what}: cpus must be at least {MIN_CPUS}, got {value!r}")
    return cpus


def parse_gpus(value: Any, what: str) -> int | None:
    """A whole number of GPUs, 0 included (none, whatever an enclosing workflow says); None stays None."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{what}: gpus must be a whole number >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Resources:
    """CPUs, memory (bytes) and GPUs one executor asks for; None: not said."""

    cpus: float | None = None
    memory: int | None = None
    gpus: int | None = None

    @classmethod
    def parse(cls, cpus: Any, memory: Any, gpus: Any, what: str) -> Resources:
        return cls(parse_cpus(cpus, what), parse_memory(memory, what), parse_gpus(gpus, what))

    def over(self, default: Resources) -> Resources:
        """These resources, each one not said taken from `default` (an enclosing workflow's)."""
        return Resources(
            *(
                getattr(default, f.name) if getattr(self, f.name) is None else getattr(self, f.name)
                for f in fields(self)
            )
        )

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def times(self, copies: int) -> Resources:
        """What `copies` executors that each ask for these resources ask for together."""
        said = (getattr(self, f.name) for f in fields(self))
        return Resources(*(None if value is None else value * copies for value in said))

    def describe(self) -> str:
        """E.g. "1.5 CPUs, 2 GiB, 1 GPU"; "" when nothing is said."""
        parts = []
        if self.cpus is not None:
            parts.append(f"{self.cpus:g} CPU{'s' if self.cpus != 1 else ''}")
        if self.memory is not None:
            parts.append(format_bytes(self.memory))
        if self.gpus is not None:
            parts.append(f"{self.gpus} GPU{'s' if self.gpus != 1 else ''}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Node:
    """What one machine (or swarm node) offers executors. `gpus` are device ids as its engine names them."""

    name: str
    cpus: float
    memory: int
    gpus: tuple[str, ...] = ()


def shortfall(need: Resources, nodes: list[Node], budget: float | None = None, free: bool = False) -> str | None:
    """What no node can hold, as "2 GPUs (this machine has none)", or None if one can hold `need`.

    `budget`: the run's own CPU limit, when it gives one. `free`: `nodes` say what is free now.
    """
    if not nodes:
        return f"{need.describe()} (no node is available)"
    where = nodes[0].name if len(nodes) == 1 else "any node"
    now = " free" if free else ""
    if budget is not None and need.cpus is not None and need.cpus > budget:
        return f"{need.cpus:g} CPUs (the run allows {budget:g})"
    checks = (
        ("cpus", lambda n: n.cpus, lambda v: f"{v:g} CPU{'s' if v != 1 else ''}"),
        ("memory", lambda n: n.memory, format_bytes),
        ("gpus", lambda n: len(n.gpus), lambda v: f"{v} GPU{'s' if v != 1 else ''}"),
    )
    for attr, offered, spell in checks:
        wanted = getattr(need, attr)
        if wanted and not any(wanted <= offered(n) for n in nodes):
            most = max(offered(n) for n in nodes)
            has = "none" if not most else f"{'at most ' if len(nodes) > 1 else ''}{spell(most)}"
            return f"{spell(wanted)}{now} ({where} has {has}{now if most else ''})"
    if not any(_fits(need, n) for n in nodes):
        return f"{need.describe()}{now} together (no node has all of them)"
    return None


def _fits(need: Resources, node: Node) -> bool:
    return (need.cpus or 0) <= node.cpus and (need.memory or 0) <= node.memory and (need.gpus or 0) <= len(node.gpus)


def format_bytes(size: float) -> str:
    """A size for people: "256 MiB", "1.5 GiB"."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{int(size)} B"


def docker_memory(size: int) -> str:
    """A size as compose and stack files write it ("256M"), exact to the byte."""
    for unit, scale in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}b"


def k8s_memory(size: int) -> str:
    """A size as Kubernetes quantities write it ("256Mi"), exact to the byte."""
    for unit, scale in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def k8s_cpu(cpus: float) -> str:
    """CPUs as a Kubernetes quantity: "2" or "1500m"."""
    milli = round(cpus * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def thread_env(need: Resources) -> dict[str, str]:
    """OMP_NUM_THREADS for a step that says its CPUs, so its math libraries (BLAS, OpenMP) run as
    many threads as it has CPUs rather than one per core of the machine."""
    return {"OMP_NUM_THREADS": str(max(1, int(need.cpus)))} if need.cpus is not None else {}


@dataclass
class Usage:
    """What one attempt used, as far as its back end can tell; `out_of_memory`: killed for memory."""

    peak_rss_mb: float | None = None
    cpu_s: float | None = None
    out_of_memory: bool = False

    def metrics(self) -> dict[str, float]:
        """The usage as MLflow metrics (`resource.peak_rss_mb`, `resource.cpu_s`), leaving out what is unknown."""
        values = {PEAK_RSS_MB: self.peak_rss_mb, CPU_S: self.cpu_s}
        return {k: v for k, v in values.items() if v is not None}

    def add(self, other: Usage) -> Usage:
        """Two attempts together: the larger peak, the sum of CPU time."""
        peaks = [v for v in (self.peak_rss_mb, other.peak_rss_mb) if v is not None]
        cpus = [v for v in (self.cpu_s, other.cpu_s) if v is not None]
        return Usage(max(peaks) if peaks else None, sum(cpus) if cpus else None, other.out_of_memory)
