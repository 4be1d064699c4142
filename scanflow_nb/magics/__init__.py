"""`%scanflow` / `%%scanflow`: a thin front door over the Python API.

Each subcommand lives in a small module that registers itself in `registry.SUBCOMMANDS`; this
module only holds the current app and dispatches. Errors a user can cause are one-line UsageErrors.
"""

from __future__ import annotations

import importlib

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from . import registry

SUBCOMMAND_MODULES = ("core", "graph", "checker", "label", "containers", "serve", "experiments")


@magics_class
class ScanflowMagics(Magics):
    """Holds the notebook's current app; every subcommand gets it through `ctx.app`."""

    def __init__(self, shell):
        super().__init__(shell)
        self.current_app = None

    @property
    def app(self):
        if self.current_app is None:
            raise UsageError("no app yet: start with %scanflow app PATH")
        return self.current_app

    @line_cell_magic
    def scanflow(self, line, cell=None):
        return registry.dispatch(self, line, cell)


def load_ipython_extension(ipython) -> None:
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    ScanflowMagics.scanflow.__doc__ = registry.full_help()
    ipython.register_magics(ScanflowMagics)
