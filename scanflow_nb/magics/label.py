"""`%scanflow label IMPROVER`: open the labeling panel on an improver's queue."""

from __future__ import annotations

from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import NotFoundError, ValidationError
from .registry import subcommand


def _variable(ctx, name: str | None, what: str):
    if name is None:
        return None
    if name not in ctx.shell.user_ns:
        raise NotFoundError(f"no variable {name!r} in the notebook ({what})")
    return ctx.shell.user_ns[name]


@subcommand("label")
@magic_arguments()
@argument("improver", help="name of a scanflow_nb.improve.ActiveLearner variable in the notebook")
@argument("--session", default="default", help="label session name: reopening it resumes where it stopped")
@argument(
    "--every",
    type=int,
    default=None,
    metavar="K",
    help="retrain in the background after every K labels (default: the workflow's improver k, else 10)",
)
@argument("--budget", type=int, default=None, metavar="N", help="finish by itself after N labels")
@argument("--samples", default=None, metavar="VAR", help="variable holding what to show per candidate (e.g. texts)")
@argument(
    "--test",
    nargs=2,
    default=None,
    metavar=("X", "Y"),
    help="variables of a held-out set: the model's score is shown after every retrain",
)
@argument(
    "--workflow",
    "-w",
    default=None,
    help="use this workflow's improver (its strategy, and k as --every) and log the session to its MLflow experiment",
)
def label(ctx, args):
    """Open the labeling panel on an improver's queue; labels are stored in the app's .scanflow folder."""
    from ..improve import ActiveLearner
    from ..widgets.labeling import LabelingPanel

    app = ctx.app
    improver = _variable(ctx, args.improver, "the improver")
    if not isinstance(improver, ActiveLearner):
        raise ValidationError(
            f"{args.improver!r} is a {type(improver).__name__}, not a scanflow_nb.improve.ActiveLearner"
        )
    options = {}
    every = args.every
    if args.workflow is not None:
        spec = app.special(args.workflow, "improver")
        options = {"tracking_uri": app.tracking_uri(args.workflow), "experiment": app.experiment_name(args.workflow)}
        if spec is not None:
            improver.strategy = spec.strategy
            every = spec.k if every is None else every
    if args.test is not None:
        options["X_test"], options["y_test"] = (_variable(ctx, name, "the held-out set") for name in args.test)
    return LabelingPanel(
        improver,
        store=app.state_dir / "labels.sqlite",
        session=args.session,
        samples=_variable(ctx, args.samples, "the samples to show"),
        retrain_every=10 if every is None else every,
        budget=args.budget,
        **options,
    )
