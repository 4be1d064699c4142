"""`%scanflow` / `%%scanflow`: a thin front door over the Python API.

Each subcommand lives in a small module that registers itself in `registry.SUBCOMMANDS`; this
module only holds the current app and dispatches. Errors a user can cause are one-line UsageErrors.
"""

from __future__ import annotations

import importlib

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Integer

from ..run.output import OutputLimits
from . import registry

SUBCOMMAND_MODULES = ("core", "graph", "checker", "label", "containers", "serve", "experiments")


@magics_class
class ScanflowMagics(Magics):
    """Holds the notebook's current app; every subcommand gets it through `ctx.app`.

    Settings (`%config ScanflowMagics.lines_per_second = 50`) limit what a run prints into the cell.
    """

    lines_per_second = Integer(
        OutputLimits.lines_per_second, help="executor output lines shown per executor and second"
    ).tag(config=True)
    tail_lines = Integer(OutputLimits.tail_lines, help="last hidden lines shown when an executor ends").tag(config=True)
    log_megabytes = Integer(
        OutputLimits.log_bytes // 2**20, help="an executor's log is kept whole up to this many MiB"
    ).tag(config=True)
    cell_log_bytes = Integer(1024 * 1024, help="%scanflow logs shows a longer log as head and tail").tag(config=True)

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
