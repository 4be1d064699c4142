"""`scanflow base-image` and `scanflow export` for the command line (cli.py adds them to its parser)."""

from __future__ import annotations

import argparse


def cmd_base_image(args) -> int:
    from .base import build_base_image

    print(build_base_image(args.tag, suite=args.suite, mirror=args.mirror, force=args.force))
    return 0


def cmd_export(args, load_app) -> int:
    from .export import export

    app = load_app(args)
    print(f"wrote {export(app, args.workflow, args.kind, args.output, base_image=args.base_image)}")
    return 0


def add_commands(sub: argparse._SubParsersAction, load_app) -> None:
    """Register `base-image` and `export`; `load_app(args)` opens the app the way cli.py does."""
    from .base import DEFAULT_BASE_TAG

    base = sub.add_parser("base-image", help="build a Python base image without a registry (debootstrap)")
    base.add_argument("--tag", default=DEFAULT_BASE_TAG)
    base.add_argument("--suite", default="bookworm")
    base.add_argument("--mirror", default=None, help="Debian mirror (default: the one apt uses)")
    base.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    base.set_defaults(func=cmd_base_image)
    export = sub.add_parser("export", help="write docker-compose, swarm stack or Kubernetes files for a workflow")
    export.add_argument("kind", choices=["compose", "stack", "k8s"])
    export.add_argument("workflow")
    export.add_argument("--output", "-o", required=True, metavar="DIR")
    export.add_argument("--base-image", default=None)
    export.set_defaults(func=lambda args: cmd_export(args, load_app))
