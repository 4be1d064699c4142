"""Container subcommands: `export` (compose, stack, Kubernetes), `base-image`, `cleanup`.

`%scanflow run WF --backend docker|swarm` needs nothing here: the engine looks the back ends up by name.
"""

from __future__ import annotations

import os

from IPython.core.magic_arguments import argument, magic_arguments

from .registry import subcommand


@subcommand("export")
@magic_arguments()
@argument("kind", choices=["compose", "stack", "k8s"], help="docker-compose, docker stack (swarm) or Kubernetes")
@argument("workflow", help="the workflow to export")
@argument("-o", "--output", metavar="DIR", default=None, help="folder to write into (default: <app>/export/<kind>)")
@argument(
    "--base-image",
    metavar="IMAGE",
    help="base of generated images (default: $SCANFLOW_BASE_IMAGE, else python:3.11-slim, else the local base image)",
)
def export(ctx, args):
    """Build the workflow's images and write a file that runs it on another engine."""
    from ..containers.export import export as write_export

    app = ctx.app
    out = args.output or app.path / "export" / args.kind
    path = write_export(app, args.workflow, args.kind, out, base_image=args.base_image)
    print(f"wrote {path}")


@subcommand("base-image")
@magic_arguments()
@argument("--tag", default=None, help="image tag (default: scanflow/python:3.11-bookworm)")
@argument("--suite", default="bookworm", help="Debian release (its python3 is the image's Python)")
@argument("--mirror", default=None, help="Debian mirror (default: the one apt uses here)")
@argument("--force", action="store_true", help="rebuild even if the tag exists")
def base_image(ctx, args):
    """Build a Python base image from Debian packages (debootstrap + docker import), without any registry.

    Docker runs find the default tag by themselves when python:3.11-slim is not on the engine; another
    --tag becomes this session's base (SCANFLOW_BASE_IMAGE).
    """
    from ..containers.base import DEFAULT_BASE_TAG, build_base_image

    tag = build_base_image(args.tag or DEFAULT_BASE_TAG, suite=args.suite, mirror=args.mirror, force=args.force)
    if tag == DEFAULT_BASE_TAG:
        print(f"{tag} is ready: docker runs use it when python:3.11-slim is not on this engine")
    else:
        os.environ["SCANFLOW_BASE_IMAGE"] = tag
        print(f"SCANFLOW_BASE_IMAGE={tag} for this session; set it in your environment to keep it")


@subcommand("cleanup")
@magic_arguments()
@argument("--images", action="store_true", help="also remove the executor images built for this app")
def cleanup(ctx, args):
    """Remove the containers, services and networks that runs of this app left (e.g. after a crash).

    Only objects labelled with this app are touched; with --images, its executor images that no
    container uses (they are rebuilt when needed).
    """
    from ..run.docker import remove_leftovers

    removed = remove_leftovers(ctx.app.path, images=args.images)
    print(f"removed {removed} Docker object(s) of app {ctx.app.path}")
