"""Errors a user can cause. Each carries one clear line; magics show it as a UsageError."""


class ScanflowError(Exception):
    """Base class for every error scanflow_nb reports to a user."""


class ValidationError(ScanflowError):
    """A workflow or executor declaration is invalid (bad name, cycle, unknown dependency...)."""


class NotFoundError(ScanflowError):
    """A named workflow, executor, file or run does not exist."""


class ConflictError(ScanflowError):
    """A change here and a change made elsewhere (another kernel, an editor) cannot both be kept."""


class RunError(ScanflowError):
    """A workflow could not be started or run (empty workflow, back end unavailable...)."""


class TrackerError(ScanflowError):
    """The MLflow tracker could not be created, started or reached."""


class BackendUnavailable(RunError):
    """A back end's engine (e.g. Docker) cannot be reached."""
