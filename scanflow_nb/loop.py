"""The closed loop: the checker flags a drifted batch, the improver picks k of its anomalies, a person (the
labeling panel) or an oracle labels them, the model retrains, and the planner promotes it or keeps the old one.

Every step is an MLflow run: one `closed loop` run, one nested run per round, and under each round the
check, the labels, the retrain and the planner's register/decide runs.

    detector = KSDetector().fit(reference_images)
    improver = ActiveLearner(LogisticRegression(max_iter=500), X_labeled=X_train, y_labeled=y_train,
                        X_pool=np.empty((0, 8, 8)))            # the pool fills with anomalies
    planner = ModelPlanner(app.tracking_uri("serve"), "digits", experiment="serve")
    rounds = closed_loop(detector, improver, planner, [(X1, y1), (X2, y2)], X_hold, y_hold, k=20)   # oracle

    loop = ClosedLoop(detector, improver, planner, X_hold, y_hold, k=20)   # a person labels instead
    loop.check(X_batch); loop.panel()      # finishing the panel retrains and lets the planner decide

    loop = ClosedLoop.for_workflow(app, "serve", detector, improver, X_hold, y_hold)   # the workflow's
                                           # Improver(strategy, k) and Planner specs, its MLflow experiment
"""

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ValidationError


@dataclass
class Round:
    """What one round did: the drift verdict, the candidate ids it added, the ids labeled, the decision."""

    index: int
    drift: object
    candidates: list[int] = field(default_factory=list)
    queries: list = field(default_factory=list)  # the improver's queries among this round's candidates
    picked: list[int] = field(default_factory=list)
    labels: list = field(default_factory=list)
    score: float | None = None
    decision: object = None
    run_id: str | None = None


class ClosedLoop:
    """check -> pick -> label -> retrain -> plan, over a fitted detector, an ActiveLearner and a ModelPlanner.

    detector   any object with `score(X_batch)` returning a DriftResult-like result (`is_drift`, `p_value`,
               `score`, `indices`), e.g. scanflow_nb.check.KSDetector fitted on reference data
    improver   scanflow_nb.improve.ActiveLearner; the anomalies of drifted batches join its pool
    planner    scanflow_nb.plan.ModelPlanner; decides on the held-out set (X_holdout, y_holdout)
    k          how many anomalies are labeled per drifted batch
    MLflow runs go to the planner's tracking URI and experiment.
    """

    def __init__(self, detector, improver, planner, X_holdout, y_holdout, k: int = 10):
        from .improve import ActiveLearner

        if not callable(getattr(detector, "score", None)):
            raise ValidationError(f"the detector must have a score(X_batch) method, got {type(detector).__name__}")
        if not isinstance(improver, ActiveLearner):
            raise ValidationError(
                f"the improver must be a scanflow_nb.improve.ActiveLearner, got {type(improver).__name__}"
            )
        if not isinstance(k, int) or k < 1:
            raise ValidationError(f"k must be a whole number >= 1, got {k!r}")
        if len(X_holdout) != len(y_holdout):
            raise ValidationError(f"X_holdout has {len(X_holdout)} samples but y_holdout has {len(y_holdout)}")
        self.detector, self.improver, self.planner, self.k = detector, improver, planner, k
        X_holdout = np.asarray(X_holdout)
        self.holdout = (X_holdout.reshape(len(X_holdout), -1), np.asarray(y_holdout))  # rows, as the model sees
        self.rounds: list[Round] = []
        self.run_id: str | None = None
        self.first_decision = None

    @classmethod
    def for_workflow(cls, app, workflow: str, detector, improver, X_holdout, y_holdout, **planner_options):
        """The loop of `workflow`: its Improver spec sets the strategy and k (defaults if it has none), its
        planner (`ModelPlanner.for_workflow`) decides and its MLflow experiment records every step."""
        from .plan import ModelPlanner
        from .spec import Improver

        spec = app.special(workflow, "improver") or Improver()
        improver.strategy = spec.strategy
        planner = ModelPlanner.for_workflow(app, workflow, **planner_options)
        return cls(detector, improver, planner, X_holdout, y_holdout, k=spec.k)

    # ---- MLflow
    @property
    def client(self):
        return self.planner.client

    def start(self):
        """Open the loop's MLflow run and make the improver's current model the first champion (if none yet)."""
        if self.run_id is not None:
            return self.first_decision
        from .track import experiment_id

        exp = experiment_id(self.client, self.planner.experiment)
        self.run_id = self.client.create_run(
            exp, run_name="closed loop", tags={"scanflow.kind": "loop", "scanflow.model": self.planner.model_name}
        ).info.run_id
        self._log(
            self.run_id,
            params={"k": self.k, "strategy": self.improver.strategy, "detector": type(self.detector).__name__},
        )
        if self.planner.champion() is None:
            self.first_decision = self._register_and_decide(self.run_id)
        return self.first_decision

    def finish(self) -> None:
        """Close the loop's MLflow run with its totals."""
        if self.run_id is None:
            return
        drifted = sum(r.drift.is_drift for r in self.rounds)
        promoted = sum(bool(r.decision and r.decision.promoted) for r in self.rounds)
        self._log(
            self.run_id,
            {
                "rounds": len(self.rounds),
                "drifted": drifted,
                "promoted": promoted,
                "labels": sum(len(r.labels) for r in self.rounds),
            },
        )
        self.client.set_terminated(self.run_id, "FINISHED")

    # ---- the steps of one round
    def check(self, X_batch) -> Round:
        """Score a batch; if it drifted, its anomalous samples join the improver's pool. Starts a round."""
        self.start()
        X_batch = np.asarray(X_batch)
        result = self.detector.score(X_batch)
        index = len(self.rounds) + 1
        run = self._child(self.run_id, f"round {index}", "round")
        check = self._child(run, f"round {index}: check", "check")
        summary = (
            {k: float(v) for k, v in result.summary().items()}
            if hasattr(result, "summary")
            else {"is_drift": float(result.is_drift), "p_value": result.p_value, "score": result.score}
        )
        self._log(check, {**summary, "anomalies": len(result.indices)})
        self.client.set_terminated(check, "FINISHED")
        current = Round(index, result, run_id=run)
        if result.is_drift and len(result.indices):
            current.candidates = self.improver.extend_pool(X_batch[np.asarray(result.indices)]).tolist()
        self.rounds.append(current)
        return current

    def pick(self) -> list[int]:
        """The k most informative candidates among this round's anomalies (ids in the improver's pool)."""
        current = self._round()
        if not current.candidates:
            raise ValidationError(f"round {current.index} has no anomalies to label (the batch did not drift)")
        others = np.setdiff1d(self.improver.pool_ids, current.candidates)
        current.picked = self.improver.query_ids(self.k, exclude=others).tolist()
        current.queries.append(self.improver.queries[-1])
        return current.picked

    def label(self, labels) -> None:
        """Teach the picked samples their labels (from an oracle or a person) and retrain."""
        from .improve.tracking import log_queries

        current = self._round()
        labels = list(labels)
        self.improver.teach_ids(current.picked, labels)
        current.labels = labels
        run = self._child(current.run_id, f"round {current.index}: labels", "labels")
        with tempfile.TemporaryDirectory() as tmp:
            table = Path(tmp) / "labels.csv"
            table.write_text("id,label\n" + "".join(f"{i},{v}\n" for i, v in zip(current.picked, labels)))
            self.client.log_artifact(run, str(table))
        used = ", ".join(dict.fromkeys(q.used for q in current.queries))
        self._log(run, {"labels": len(labels)}, {"strategy": self.improver.strategy, "strategy_used": used})
        log_queries(self.client, run, current.queries)
        self.client.set_terminated(run, "FINISHED")

    def panel(self, **options):
        """A labeling panel on this round's anomalies; finishing it labels, retrains and lets the planner decide."""
        from .widgets.labeling import LabelingPanel

        current = self._round()
        if not current.candidates:
            raise ValidationError(f"round {current.index} has no anomalies to label (the batch did not drift)")

        def done(session):
            current.queries = session.queries
            current.labels = [session.improver.taught[i] for i in current.candidates if i in session.improver.taught]
            current.picked = [i for i in current.candidates if i in session.improver.taught]
            self.improve()

        options.setdefault("session", f"loop-{self.run_id}-round-{current.index}")
        return LabelingPanel(
            self.improver,
            budget=min(self.k, len(current.candidates)),
            on_finish=done,
            among=current.candidates,
            tracking_uri=self.planner.tracking_uri,
            experiment=self.planner.experiment,
            parent_run_id=current.run_id,
            **options,
        )

    def improve(self):
        """Register the improver's model (retrained on every label so far) and let the planner decide."""
        current = self._round()
        decision = self._register_and_decide(current.run_id)
        current.score, current.decision = decision.score, decision
        self._log(
            current.run_id,
            {"score": decision.score, "promoted": float(decision.promoted), "champion": decision.champion},
        )
        self.client.set_terminated(current.run_id, "FINISHED")
        return decision

    # ---- whole rounds
    def step(self, X_batch, y_batch=None, labeler=None) -> Round:
        """One round; labels come from `y_batch` (oracle mode) or `labeler(samples) -> labels`."""
        if (y_batch is None) == (labeler is None):
            raise ValidationError("give the batch's true labels (oracle mode) or a labeler function, not both")
        current = self.check(X_batch)
        if not current.candidates:
            self.client.set_terminated(current.run_id, "FINISHED")
            return current
        picked = self.pick()
        if y_batch is not None:
            truth = np.asarray(y_batch)[np.asarray(current.drift.indices)]
            labels = [truth[current.candidates.index(i)].item() for i in picked]
        else:
            labels = labeler(self.improver.samples(picked))
        self.label(labels)
        self.improve()
        return current

    def run(self, batches) -> list[Round]:
        """Oracle mode over (X_batch, y_batch) pairs: one round each, then close the loop's run."""
        try:
            for X_batch, y_batch in batches:
                self.step(X_batch, y_batch)
        finally:
            self.finish()
        return self.rounds

    # ---- helpers
    def _register_and_decide(self, parent: str):
        started = time.perf_counter()
        version = self.planner.register(
            self.improver.model, parent_run_id=parent, metrics={"n_labeled": self.improver.n_labeled}
        )
        decision = self.planner.decide(version, *self.holdout, parent_run_id=parent)
        self._log(parent, {"plan_seconds": time.perf_counter() - started})
        return decision

    def _round(self) -> Round:
        if not self.rounds:
            raise ValidationError("no round yet: call check(X_batch) first")
        return self.rounds[-1]

    def _child(self, parent: str, name: str, kind: str) -> str:
        from .track import experiment_id

        exp = experiment_id(self.client, self.planner.experiment)
        return self.client.create_run(
            exp, run_name=name, tags={"mlflow.parentRunId": parent, "scanflow.kind": kind}
        ).info.run_id

    def _log(self, run_id: str, metrics: dict | None = None, params: dict | None = None) -> None:
        from .track import log_values

        log_values(self.client, run_id, params, metrics)


def closed_loop(detector, improver, planner, batches, X_holdout, y_holdout, k: int = 10) -> list[Round]:
    """Run the whole loop in oracle mode over (X_batch, y_batch) pairs; returns one Round per batch."""
    return ClosedLoop(detector, improver, planner, X_holdout, y_holdout, k).run(batches)
