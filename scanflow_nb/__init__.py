"""scanflow_nb: notebook-first ML workflows on MLflow and Docker.

`%load_ext scanflow_nb` registers the `%scanflow` / `%%scanflow` magics. The Python API
(`App`, `Workflow`, `Executor`, `Tracker`) does everything the magics do.
"""

from .errors import ScanflowError
from .spec import Checker, Executor, Improver, Planner, Tracker, Workflow

__all__ = [
    "App",
    "Checker",
    "Executor",
    "Improver",
    "Planner",
    "ScanflowError",
    "Tracker",
    "Workflow",
    "load_ipython_extension",
]
__version__ = "0.2.0"


def __getattr__(name):
    if name == "App":
        from .app import App

        return App
    raise AttributeError(f"module 'scanflow_nb' has no attribute {name!r}")


def load_ipython_extension(ipython):
    """`%load_ext scanflow_nb`: register the magics."""
    from .magics import load_ipython_extension as load

    load(ipython)
