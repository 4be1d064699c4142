"""Which executors may start now: the CPUs, memory and GPUs they declare must fit what is free.

An executor that declares nothing is bounded only by the run's `max_workers`. Declared CPUs count
against the run's own `cpus` when it gives one, else against what the back end's nodes offer;
memory against their memory; GPUs are handed out by id, each to one executor at a time. Anything
no node could ever hold is refused before the run starts, naming the resource. A service's replicas,
where the back end runs them all (the swarm), each hold what it declares.
"""

from __future__ import annotations

from ..errors import RunError
from ..resources import Node, Resources, format_bytes, shortfall

SLACK = 1e-9  # 0.1 + 0.2 CPUs fit in 0.3


class Admission:
    def __init__(self, nodes: list[Node], cpus: float | None = None):
        self.nodes, self.budget = nodes, cpus
        self.cpus = cpus if cpus is not None else sum(n.cpus for n in nodes)
        self.memory = sum(n.memory for n in nodes)
        self.free_gpus = [gpu for n in nodes for gpu in n.gpus]
        self.held: dict[str, tuple[Resources, tuple[str, ...]]] = {}

    def check(self, key: str, need: Resources, copies: int = 1) -> None:
        """RunError if no node could ever hold `need`, or all nodes together not `copies` of it (called before
        the run starts)."""
        if not need and self.budget is None:
            return
        why = shortfall(need, self.nodes, self.budget)
        if why:
            raise RunError(f"executor {key!r} asks for {why}")
        if copies == 1:
            return
        total = need.times(copies)
        together = (
            (total.cpus, self.cpus, lambda v: f"{v:g} CPUs", "the run allows" if self.budget is not None else None),
            (total.memory, self.memory, format_bytes, None),
            (total.gpus, len(self.free_gpus), lambda v: f"{v} GPUs", None),
        )
        for wanted, has, spell, whose in together:
            if wanted and wanted > has + SLACK:
                whose = whose or ("the node has" if len(self.nodes) == 1 else "the nodes have")
                raise RunError(
                    f"executor {key!r} asks for {copies} replicas of {need.describe()}: {spell(wanted)} together, "
                    f"and {whose} {spell(has)}"
                )

    def fits(self, need: Resources) -> bool:
        """True if `need` fits in what the executors running now leave free."""
        cpus = sum(r.cpus or 0 for r, _ in self.held.values()) + (need.cpus or 0)
        memory = sum(r.memory or 0 for r, _ in self.held.values()) + (need.memory or 0)
        return (
            (not need.cpus or cpus <= self.cpus + SLACK)
            and (not need.memory or memory <= self.memory)
            and (need.gpus or 0) <= len(self.free_gpus)
        )

    def take(self, key: str, need: Resources) -> tuple[str, ...]:
        """Hold `need` for `key`; returns the GPU ids it is given."""
        count = need.gpus or 0
        gpus, self.free_gpus = tuple(self.free_gpus[:count]), self.free_gpus[count:]
        self.held[key] = (need, gpus)
        return gpus

    def release(self, key: str) -> None:
        _, gpus = self.held.pop(key, (Resources(), ()))
        order = [gpu for n in self.nodes for gpu in n.gpus]
        self.free_gpus = sorted([*self.free_gpus, *gpus], key=order.index)
