"""The options that declare a service executor, shared by `%%scanflow executor` and `%scanflow service`."""

from __future__ import annotations

from IPython.core.magic_arguments import argument

SERVICE_ARGUMENTS = [
    (
        ("--service",),
        {"action": "store_true", "help": "long-running: the run waits for it to answer, stops it at the end"},
    ),
    (("--port",), {"type": int, "metavar": "P", "help": "the port a service listens on"}),
    (("--replicas",), {"type": int, "default": 1, "metavar": "N", "help": "copies of a service on the swarm (1)"}),
    (("--health",), {"default": "/health", "metavar": "PATH", "help": "answers 200 once a service is ready"}),
    (("--host",), {"default": "127.0.0.1", "help": "where on this machine a service is reachable (127.0.0.1)"}),
]


def service_arguments(func):
    """Add the options that declare a service executor to a subcommand."""
    for flags, options in reversed(SERVICE_ARGUMENTS):
        func = argument(*flags, **options)(func)
    return func


def service_options(args) -> dict:
    """The Executor fields among parsed `service_arguments`."""
    return {
        "service": args.service,
        "port": args.port,
        "replicas": args.replicas,
        "health": args.health,
        "host": args.host,
    }
