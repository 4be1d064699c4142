"""Subcommands of `%scanflow` / `%%scanflow`: each is a magic_arguments-decorated function.

A subcommand module registers its functions with `@subcommand(name)`; the dispatcher parses the
rest of the line with the function's own parser, so `%scanflow?` and errors come from one place.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError

from ..errors import ScanflowError


@dataclass
class Subcommand:
    name: str
    func: Callable[..., Any]
    cell: bool

    def help(self) -> str:
        text = self.func.__doc__ or ""
        prog = f"%%scanflow {self.name}" if self.cell else f"%scanflow {self.name}"
        return text.replace(f"%{self.func.__name__}", prog, 1).strip()


SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(name: str, cell: bool = False):
    """Register a magic_arguments-decorated `func(ctx, args, cell=None)` as `%scanflow NAME`."""

    def register(func):
        func.parser.prog = f"%%scanflow {name}" if cell else f"%scanflow {name}"
        SUBCOMMANDS[name] = Subcommand(name, func, cell)
        return func

    return register


def dispatch(ctx: Any, line: str, cell: str | None) -> Any:
    """Run the subcommand named by the first word of `line`; user errors become a UsageError."""
    parts = line.strip().split(None, 1)
    if not parts:
        raise UsageError(f"scanflow: give a subcommand: {', '.join(sorted(SUBCOMMANDS))} (see %scanflow?)")
    name, rest = parts[0], parts[1] if len(parts) > 1 else ""
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        raise UsageError(f"scanflow: unknown subcommand {name!r}; known: {', '.join(sorted(SUBCOMMANDS))}")
    if sub.cell and cell is None:
        raise UsageError(f"scanflow {name} is a cell magic: use %%scanflow {name} ... with the code below it")
    if not sub.cell and cell is not None:
        raise UsageError(f"scanflow {name} is a line magic: use %scanflow {name} ...")
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise UsageError(f"scanflow {name}: cannot parse the line: {exc}") from None
    if "-h" in words or "--help" in words:
        print(sub.help())
        return None
    try:
        args = sub.func.parser.parse_args(words)
    except UsageError as exc:
        raise UsageError(f"scanflow {name}: {exc}") from None
    try:
        return sub.func(ctx, args, cell) if sub.cell else sub.func(ctx, args)
    except ScanflowError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:
        if not type(exc).__module__.startswith("mlflow"):
            raise
        raise UsageError(f"MLflow failed: {mlflow_reason(exc)}; running the command again reopens the store") from None


def mlflow_reason(exc: Exception) -> str:
    """The line of an MLflow error that says what went wrong (its messages carry SQL and links)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "Error)" in line), lines[0] if lines else type(exc).__name__)


def full_help() -> str:
    """Help for every registered subcommand, for `%scanflow?`."""
    parts = [
        "Declare, run and supervise ML workflows from notebook cells.\n",
        "Subcommands (each one calls the public Python API):\n",
    ]
    for name in sorted(SUBCOMMANDS):
        parts.append(SUBCOMMANDS[name].help() + "\n")
    return "\n".join(parts)
