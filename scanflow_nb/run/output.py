"""What an executor's output may cost: lines shown per second, log size on disk, the kernel's memory.

An executor may print 200 MB. Its log keeps everything up to `log_bytes`, then only counts what
it drops and ends with a note and the last lines. The cell (and every run listener) gets at most
`lines_per_second` lines per executor each second; the rest are counted, noted as "N lines hidden,
full log: PATH" when output shows again, and the last hidden lines are shown when the attempt
ends. Nothing grows with the output: what is not shown or kept is counted, not held.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ValidationError


@dataclass(frozen=True)
class OutputLimits:
    lines_per_second: int = 20  # per executor, in the cell and to every listener
    tail_lines: int = 10  # hidden lines shown when an attempt ends; last lines kept past `log_bytes`
    log_bytes: int = 100 * 1024 * 1024  # per executor run, then the log is truncated with a note

    def __post_init__(self) -> None:
        for name in ("lines_per_second", "tail_lines", "log_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"output limit {name} must be a whole number >= 1, got {value!r}")


class LogWriter:
    """A log file kept whole up to `limit` bytes; past it, counted, with the last lines noted at the end.

    Writes are buffered; `flush()` may be called from another thread (the run's own, a few times a
    second), so a log can be followed while it grows.
    """

    def __init__(self, path: Path, limits: OutputLimits):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a new file: the last run's log may be its MLflow artifact (a hard link)
        self.path = path
        self._file = open(path, "wb", buffering=64 * 1024)  # noqa: SIM115 (closed by close(): this is the context)
        self._room = limits.log_bytes
        self._dropped_lines = 0
        self._dropped_bytes = 0
        self._tail: deque[str] = deque(maxlen=limits.tail_lines)

    def write(self, line: str) -> None:
        """Add a line; one that arrives after `close()` (from a reader given up on) is dropped."""
        if self._file.closed:
            return
        data = (line + "\n").encode(errors="replace")
        if self._dropped_lines == 0 and len(data) <= self._room:
            self._room -= len(data)
            self._file.write(data)
        else:
            self._dropped_lines += 1
            self._dropped_bytes += len(data)
            self._tail.append(line)

    def flush(self) -> None:
        try:
            self._file.flush()
        except ValueError:  # closed meanwhile by the writing thread: nothing left to flush
            pass

    def close(self) -> None:
        if self._dropped_lines:
            kept = len(self._tail)
            note = (
                f"[scanflow] log truncated at its size limit: {self._dropped_lines:,} more lines "
                f"({self._dropped_bytes / 1e6:,.1f} MB) were not kept; the last {kept} follow"
            )
            self._file.write("".join(f"{line}\n" for line in [note, *self._tail]).encode(errors="replace"))
        self._file.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Throttle:
    """Which output lines of one attempt are passed on: at most `lines_per_second` in each second."""

    def __init__(self, limits: OutputLimits, log_path: Path, clock=time.monotonic):
        self.rate = limits.lines_per_second
        self.log_path = log_path
        self._clock = clock
        self._window = clock()
        self._shown = 0
        self._hidden = 0
        self._tail: deque[str] = deque(maxlen=limits.tail_lines)

    def admit(self, line: str) -> list[str]:
        """The lines to pass on now for `line`: none, the line, or a hidden-lines note and the line."""
        now = self._clock()
        if now - self._window >= 1.0:
            self._window, self._shown = now, 0
        if self._shown >= self.rate:
            self._hidden += 1
            self._tail.append(line)
            return []
        self._shown += 1
        return [*self._note(keep_tail=False), line]

    def end(self) -> list[str]:
        """What to pass on when the attempt ends: the hidden-lines note and the last hidden lines."""
        return self._note(keep_tail=True)

    def _note(self, keep_tail: bool) -> list[str]:
        if not self._hidden:
            return []
        tail = list(self._tail) if keep_tail else []
        hidden = self._hidden - len(tail)
        self._hidden = 0
        self._tail.clear()
        if not hidden:
            return tail
        return [f"[scanflow] ... {hidden:,} lines hidden, full log: {self.log_path}", *tail]


def tail_lines(path: Path, n: int, chunk: int = 64 * 1024) -> list[str]:
    """The last `n` lines of a text file, reading only as much of its end as needed."""
    if n <= 0:
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= n:
            start = max(0, end - chunk)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    return data.decode(errors="replace").splitlines()[-n:]


def head_lines(path: Path, n: int) -> Iterator[str]:
    with open(path, errors="replace") as f:
        for _, line in zip(range(n), f):
            yield line.rstrip("\n")
