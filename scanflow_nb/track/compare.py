"""Compare two recorded workflow runs: per executor, what differs and so may explain a different result.

Code (a unified diff of the code each ran), parameters, requirements, input and output digests,
image, where it ran (Python, back end, git commit), its state and the metrics it logged. What it cost
(duration, CPU time, peak memory) varies from run to run even when nothing changed, so it is shown
apart, beside the executor's name, and CPU and memory only when they moved by more than noise.
"""

from __future__ import annotations

import difflib
import html
from dataclasses import dataclass, field
from typing import Any

from ..resources import CPU_S, PEAK_RSS_MB
from ..schedule import resolve
from .recorded import ExecutorRecord, RecordedRun, load_run

Pair = tuple[Any, Any]

# A usage metric differs when the larger value is RESOURCE_RATIO times the smaller and the gap exceeds its floor
# (CPU time of one script moves ~10% between identical runs, more on a busy machine).
RESOURCE_RATIO = 1.5
RESOURCE_FLOOR = {CPU_S: 1.0, PEAK_RSS_MB: 64.0}
RESOURCE_LABEL = {CPU_S: "CPU {} s", PEAK_RSS_MB: "peak memory {} MiB"}


@dataclass
class ExecutorDiff:
    """What differs for one executor between run A and run B (only what differs is kept)."""

    key: str
    status: Pair
    code: list[str] = field(default_factory=list)  # unified diff lines
    parameters: dict[str, Pair] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    inputs: dict[str, Pair] = field(default_factory=dict)
    outputs: dict[str, Pair] = field(default_factory=dict)
    environment: dict[str, Pair] = field(default_factory=dict)  # image, python, backend, git
    metrics: dict[str, Pair] = field(default_factory=dict)  # what the code logged; usage metrics apart
    durations: Pair = (None, None)
    resources: dict[str, Pair] = field(default_factory=dict)  # usage metrics that moved by more than noise

    @property
    def only_in(self) -> str | None:
        """ "a" or "b" when the executor ran in one run only."""
        return "a" if self.status[1] is None else "b" if self.status[0] is None else None

    @property
    def changed(self) -> bool:
        """Whether anything but the cost (duration, CPU time, memory) differs."""
        return bool(
            self.only_in
            or self.status[0] != self.status[1]
            or self.code
            or self.parameters
            or self.requirements
            or self.inputs
            or self.outputs
            or self.environment
            or self.metrics
        )

    def sections(self) -> list[tuple[str, list[str]]]:
        """(title, plain lines) of each part that differs, in the order a reader checks them."""
        out: list[tuple[str, list[str]]] = []
        if self.status[0] != self.status[1]:
            out.append(("state", [f"{self.status[0]} -> {self.status[1]}"]))
        for title, pairs in (("parameters", self.parameters), ("metrics", self.metrics)):
            if pairs:
                out.append((title, [f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in pairs.items()]))
        if self.code:
            out.append(("code", self.code))
        if self.requirements:
            out.append(("requirements", self.requirements))
        for title, pairs in (("inputs", self.inputs), ("outputs", self.outputs), ("environment", self.environment)):
            if pairs:
                out.append((title, [f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in pairs.items()]))
        return out


@dataclass
class Comparison:
    """Run A against run B; `executors` has every executor key of either run."""

    a: RecordedRun
    b: RecordedRun
    executors: dict[str, ExecutorDiff]

    @property
    def changed(self) -> list[str]:
        return [key for key, diff in self.executors.items() if diff.changed]

    def __getitem__(self, key: str) -> ExecutorDiff:
        """The diff of executor `key` ("name" or "workflow/name")."""
        return self.executors[resolve(list(self.executors), key)]

    def __str__(self) -> str:
        lines = [f"A: {self.a.label}", f"B: {self.b.label}"]
        for key, diff in self.executors.items():
            if diff.only_in:
                lines.append(f"{key}: only in {diff.only_in.upper()}")
            elif not diff.changed:
                lines.append(f"{key}: same ({_durations(diff)})")
            else:
                lines.append(f"{key}: ({_durations(diff)})")
                for title, body in diff.sections():
                    lines.append(f"  {title}:")
                    lines += [f"    {line}" for line in body]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        parts = [
            f"<div><b>A</b> <code>{html.escape(self.a.label)}</code><br>"
            f"<b>B</b> <code>{html.escape(self.b.label)}</code></div><table style='font-size:0.9em'>"
        ]
        for key, diff in self.executors.items():
            if diff.only_in or not diff.changed:
                what = f"only in {diff.only_in.upper()}" if diff.only_in else "same"
                parts.append(f"<tr><td><b>{html.escape(key)}</b></td><td><i>{what}</i> ({_durations(diff)})</td></tr>")
                continue
            cells = "".join(f"<div><u>{title}</u>{_html_lines(title, body)}</div>" for title, body in diff.sections())
            parts.append(
                f"<tr><td style='vertical-align:top'><b>{html.escape(key)}</b><br><small>{_durations(diff)}</small>"
                f"</td><td style='text-align:left'>{cells}</td></tr>"
            )
        parts.append("</table>")
        return "".join(parts)


def compare(uri: str, run_a: str, run_b: str) -> Comparison:
    """Compare workflow runs `run_a` and `run_b` (run ids or their first characters)."""
    a, b = load_run(uri, run_a), load_run(uri, run_b)
    keys = list(dict.fromkeys([*a.executors, *b.executors]))
    return Comparison(a, b, {key: diff_executor(key, a.executors.get(key), b.executors.get(key)) for key in keys})


def diff_executor(key: str, a: ExecutorRecord | None, b: ExecutorRecord | None) -> ExecutorDiff:
    diff = ExecutorDiff(key, (a.status if a else None, b.status if b else None))
    if a is None or b is None:
        return diff
    diff.durations = (a.run.duration, b.run.duration)
    pa, pb = a.provenance or {}, b.provenance or {}
    diff.parameters = _pairs(a.parameters, b.parameters)
    (logged_a, usage_a), (logged_b, usage_b) = _split(a.metrics), _split(b.metrics)
    diff.metrics = _pairs(logged_a, logged_b)
    diff.resources = {k: (x, y) for k, (x, y) in _pairs(usage_a, usage_b).items() if _moved(k, x, y)}
    if a.code != b.code:
        diff.code = _unified(a.code or "", b.code or "", _code_path(pa, key), _code_path(pb, key))
    if pa.get("requirements") != pb.get("requirements"):
        diff.requirements = _unified(pa.get("requirements") or "", pb.get("requirements") or "", "A", "B")
    diff.inputs = _pairs(pa.get("inputs") or {}, pb.get("inputs") or {})
    diff.outputs = _pairs(pa.get("outputs") or {}, pb.get("outputs") or {})
    diff.environment = _pairs(_environment(a), _environment(b))
    return diff


def _split(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics the code logged, usage metrics the engine measured)."""
    return (
        {k: v for k, v in metrics.items() if k not in RESOURCE_FLOOR},
        {k: v for k, v in metrics.items() if k in RESOURCE_FLOOR},
    )


def _moved(metric: str, a: float | None, b: float | None) -> bool:
    """Whether usage metric `metric` went from `a` to `b` by more than run-to-run noise (both known)."""
    if a is None or b is None:
        return False
    low, high = sorted((a, b))
    return high - low > RESOURCE_FLOOR[metric] and high >= RESOURCE_RATIO * low


def _code_path(provenance: dict[str, Any], key: str) -> str:
    return (provenance.get("code") or {}).get("path") or key


def _environment(record: ExecutorRecord) -> dict[str, Any]:
    p = record.provenance or {}
    git = p.get("git") or {}
    found = {
        "backend": p.get("backend"),
        "image": p.get("image"),
        "image digest": p.get("image_digest"),
        "python": p.get("python"),
        "git commit": git.get("commit"),
        "git dirty": git.get("dirty"),
    }
    return {k: v for k, v in found.items() if v is not None}


def _pairs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Pair]:
    """Keys whose values differ (missing on one side: None), in a stable order."""
    keys = list(dict.fromkeys([*a, *b]))
    return {k: (a.get(k), b.get(k)) for k in keys if not _same(a.get(k), b.get(k))}


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
        return True  # both NaN
    return x == y or (x is not None and y is not None and str(x) == str(y))


def _unified(a: str, b: str, name_a: str, name_b: str) -> list[str]:
    return [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            a.splitlines(keepends=True), b.splitlines(keepends=True), f"A/{name_a}", f"B/{name_b}", n=2
        )
    ]


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _short(value: Any) -> str:
    """Digests shortened to 12 characters; other values as they are."""
    text = _show(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def _durations(diff: ExecutorDiff) -> str:
    a, b = diff.durations
    fmt = lambda d: "?" if d is None else f"{d:.2f} s"  # noqa: E731
    if not (diff.status[0] and diff.status[1]):
        return ""
    costs = [f"{fmt(a)} -> {fmt(b)}"]
    costs += [RESOURCE_LABEL[k].format(f"{x:.3g} -> {y:.3g}") for k, (x, y) in diff.resources.items()]
    return "; ".join(costs)


def _html_lines(title: str, lines: list[str]) -> str:
    if title not in ("code", "requirements"):
        return "<br>".join(html.escape(line) for line in lines)
    colour = {"+": "#2e7d32", "-": "#c62828", "@": "#6a1b9a"}
    body = "\n".join(
        f"<span style='color:{colour.get(line[:1], 'inherit')}'>{html.escape(line)}</span>"
        if not line.startswith(("+++", "---"))
        else f"<b>{html.escape(line)}</b>"
        for line in lines
    )
    return f"<pre style='margin:0.2em 0;text-align:left'>{body}</pre>"
