"""The paper's drift experiment, end to end, as one function.

For every corruption: train a classifier on clean data, check a corrupted batch for drift with a
detector fitted on clean reference data, let an oracle label k of the batch's anomalous samples chosen
by the improver (its default strategy, "auto", unless told otherwise; `step` at a time, retraining in
between, as the labeling panel does), and compare the accuracy on a separate corrupted evaluation set
before and after - against labeling k random samples of the batch. Both sides are averaged over the same
number of draws (`repeats`: the improver's clustering seeds, the random samples), and every draw is kept.
Like the closed loop, a batch is improved only when drift is found.

    from scanflow_nb.reproduce import reproduce
    result = reproduce("digits")          # offline; "mnist" and "fashion_mnist" download through Keras
    print(result.table())

`SCANFLOW_SMALL=1` in the environment (or `small=True`) runs a quick version: four corruptions,
fewer samples, a short detector training. Results can be logged to MLflow (one run per corruption).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import ValidationError

DATASETS = ("digits", "mnist", "fashion_mnist")
SMALL_CORRUPTIONS = ("rotate", "stripe", "shot_noise", "brightness")
CLEAN = "none"


def small_mode() -> bool:
    """True when the environment asks for the quick, small-data version (SCANFLOW_SMALL=1)."""
    return os.environ.get("SCANFLOW_SMALL", "").strip().lower() in ("1", "true", "yes")


@dataclass
class Row:
    """One corruption's outcome; accuracies are on the corrupted evaluation set."""

    corruption: str
    drift: bool
    p_value: float
    anomalies: int
    labeled: int
    before: float
    active: float | None  # the mean of active_draws
    random: float | None  # the mean of random_draws
    clean_after: float | None = None
    used: str | None = None  # the strategies that chose, with their queries over all draws ("typical x5, margin x5")
    active_draws: list[float] = field(default_factory=list)  # one accuracy per draw of the improver's choice
    random_draws: list[float] = field(default_factory=list)  # one accuracy per draw of k random samples

    @property
    def gain(self) -> float | None:
        """Active minus random accuracy (None when the batch was not improved)."""
        return None if self.active is None else self.active - self.random


@dataclass
class Reproduction:
    """The settings of one run of the experiment and its rows (the clean batch first)."""

    dataset: str
    k: int
    severity: int
    detector: str
    strategy: str
    repeats: int
    embedding: str
    step: int
    sizes: dict[str, int]
    clean_accuracy: float
    seconds: float
    rows: list[Row] = field(default_factory=list)

    def row(self, corruption: str) -> Row:
        found = next((r for r in self.rows if r.corruption == corruption), None)
        if found is None:
            raise ValidationError(f"no row for corruption {corruption!r} in this reproduction")
        return found

    @property
    def improved(self) -> list[Row]:
        return [r for r in self.rows if r.active is not None]

    def summary(self) -> dict[str, float | int]:
        """Counts and means over the corrupted batches (the clean batch excluded)."""
        corrupted = [r for r in self.rows if r.corruption != CLEAN]
        improved = self.improved
        mean = lambda values: float(np.mean(values)) if values else float("nan")
        return {
            "corruptions": len(corrupted),
            "detected": sum(r.drift for r in corrupted),
            "improved": len(improved),
            "active_beats_random": sum(r.active > r.random for r in improved),
            "mean_before": mean([r.before for r in improved]),
            "mean_active": mean([r.active for r in improved]),
            "mean_random": mean([r.random for r in improved]),
        }

    def table(self, fmt: str = "text") -> str:
        """The results as a plain-text table (`fmt="text"`) or a reStructuredText list-table ("rst")."""
        header = [
            "corruption",
            "drift (p)",
            "anomalies",
            "labeled",
            "before",
            f"{self.strategy} k (x{self.repeats})",
            f"random k (x{self.repeats})",
        ]
        body = [
            [
                r.corruption,
                f"{'yes' if r.drift else 'no'} ({r.p_value:.1e})",
                str(r.anomalies),
                str(r.labeled),
                f"{r.before:.3f}",
                _acc(r.active),
                _acc(r.random),
            ]
            for r in self.rows
        ]
        s = self.summary()
        footer = (
            f"{self.dataset}, severity {self.severity}, k = {self.k}, detector {self.detector}, "
            f"{self.strategy} sampling ({self.embedding} embedding, {self.step} labels a query); "
            f"clean test accuracy {self.clean_accuracy:.3f}; drift found in {s['detected']} of "
            f"{s['corruptions']} corrupted batches; active beats random in {s['active_beats_random']} of "
            f"{s['improved']} (mean {_acc(s['mean_active'])} vs {_acc(s['mean_random'])}, "
            f"before {_acc(s['mean_before'])}); {self.seconds:.0f} s"
        )
        if fmt == "rst":
            lines = [".. list-table::", "   :header-rows: 1", ""]
            for cells in [header, *body]:
                lines += [f"   * - {cells[0]}", *[f"     - {c}" for c in cells[1:]]]
            return "\n".join(lines) + "\n\n" + footer + "\n"
        if fmt != "text":
            raise ValidationError(f"table format must be 'text' or 'rst', got {fmt!r}")
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        render = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
        rule = "  ".join("-" * w for w in widths)
        return "\n".join([render(header), rule, *map(render, body), "", footer])

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary()}


def _acc(value) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, side, side) in [0, 1] and labels of `dataset`; DatasetUnavailable when it cannot download."""
    from . import datasets

    if dataset not in DATASETS:
        raise ValidationError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if dataset == "digits":
        return datasets.load_digits()
    X_train, y_train = getattr(datasets, f"load_{dataset}")("train")
    X_test, y_test = getattr(datasets, f"load_{dataset}")("test")
    return np.concatenate([X_train, X_test]), np.concatenate([y_train, y_test])


def split_sizes(n: int, small: bool, dataset: str) -> dict[str, int]:
    """How many samples go to training, the detector's reference, the batch and the evaluation set."""
    if dataset == "digits":
        sizes = (
            {"train": 300, "reference": 300, "batch": 200, "eval": 200}
            if small
            else {"train": 600, "reference": 400, "batch": 400, "eval": 397}
        )
    else:
        sizes = (
            {"train": 2000, "reference": 500, "batch": 300, "eval": 500}
            if small
            else {"train": 10000, "reference": 2000, "batch": 1000, "eval": 2000}
        )
    if sum(sizes.values()) > n:
        raise ValidationError(f"{dataset} has {n} samples, the experiment needs {sum(sizes.values())}")
    return sizes


def default_classifier(seed: int = 0):
    """A multinomial logistic regression on pixels: quick, deterministic, and probabilistic (for uncertainty)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=0.5, max_iter=500, random_state=seed)


def reproduce(
    dataset: str = "digits",
    corruptions: Sequence[str] | None = None,
    k: int | None = None,
    severity: int = 4,
    detector: str = "autoencoder",
    strategy: str = "auto",
    repeats: int | None = None,
    embedding: str = "pca",
    step: int = 10,
    seed: int = 0,
    small: bool | None = None,
    classifier=None,
    tracking_uri: str | None = None,
    experiment: str = "reproduction",
    echo: Callable[[str], None] | None = print,
    detectors: dict | None = None,
) -> Reproduction:
    """Run the experiment on `dataset` ("digits" offline, or "mnist" / "fashion_mnist" online).

    corruptions  names from scanflow_nb.datasets.CORRUPTIONS (default: all 15; 4 in small mode)
    k            labels per drifted batch (default 20; 10 in small mode)
    detector     "autoencoder", "ks" or "mmd" (scanflow_nb.check.make_detector)
    strategy     how the k anomalies are chosen: a name from scanflow_nb.improve.STRATEGIES but "random"
                 (default "auto": typical samples of the anomalies first; see scanflow_nb.improve.strategies)
    embedding    where typical and diverse samples are measured: "pca" or "checker" (the autoencoder
                 detector's code)
    step         labels per query: the improver retrains after each (default 10, as the labeling panel)
    repeats      draws averaged on each side (default 5; 3 in small mode): the improver's choice with that many
                 seeds (its clustering and tie-breaks) and that many draws of k random samples
    classifier   an unfitted scikit-learn classifier with predict_proba (default: logistic regression)
    tracking_uri with it, one MLflow run per corruption in `experiment` (parameters and accuracies)
    detectors    a dict shared by calls that differ only in k, strategy, step or repeats: each detector is
                 fitted once (it depends on the dataset, seed, size and detector only)
    """
    from threadpoolctl import threadpool_limits

    from .check import make_detector
    from .datasets import CORRUPTIONS, corrupt
    from .improve import STRATEGIES, ActiveLearner, Oracle, learning_curve

    small = small_mode() if small is None else small
    corruptions = tuple(corruptions or (SMALL_CORRUPTIONS if small else CORRUPTIONS))
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise ValidationError(f"unknown corruption {unknown[0]!r}; choose from: {', '.join(CORRUPTIONS)}")
    k = (10 if small else 20) if k is None else k
    repeats = (3 if small else 5) if repeats is None else repeats
    if strategy not in STRATEGIES or strategy == "random":
        raise ValidationError(
            f"strategy must be one of: {', '.join(s for s in STRATEGIES if s != 'random')}; "
            f"got {strategy!r} (random is the baseline)"
        )
    if embedding not in ("pca", "checker") or (embedding == "checker" and detector != "autoencoder"):
        raise ValidationError(
            f"embedding must be 'pca' or, with the autoencoder detector, 'checker'; got {embedding!r}"
            + (f" with detector {detector!r}" if embedding == "checker" else "")
        )
    for name, value in (("k", k), ("repeats", repeats), ("severity", severity), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationError(f"{name} must be a whole number >= 1, got {value!r}")
    if severity > 5:
        raise ValidationError(f"severity runs from 1 to 5, got {severity!r}")
    say = echo or (lambda line: None)
    started = time.perf_counter()

    X, y = load(dataset)
    sizes = split_sizes(len(X), small, dataset)
    order = np.random.default_rng(seed).permutation(len(X))
    parts, at = {}, 0
    for name, size in sizes.items():
        parts[name] = order[at : at + size]
        at += size
    X_train, y_train = X[parts["train"]], y[parts["train"]]
    X_ref = X[parts["reference"]]
    classes = sorted(np.unique(y).tolist())
    classifier = default_classifier(seed) if classifier is None else classifier

    def improver(choose: str, pool: np.ndarray, draw: int = 0, embedded="pca") -> ActiveLearner:
        return ActiveLearner(
            classifier,
            choose,
            X_labeled=X_train,
            y_labeled=y_train,
            X_pool=pool,
            classes=classes,
            seed=seed + draw,
            embedding=embedded,
        )

    base = improver("random", X_ref[:1])
    clean_accuracy = base.score(X[parts["eval"]], y[parts["eval"]])
    say(f"{dataset}: classifier trained on {len(X_train)} clean samples, clean accuracy {clean_accuracy:.3f}")
    options = (
        {"max_seconds": 20.0 if small else 120.0, "epochs": 40 if small else 150} if detector == "autoencoder" else {}
    )
    key = (dataset, seed, small, detector)
    detectors = {} if detectors is None else detectors
    if key not in detectors:
        detectors[key] = make_detector(detector, **options).fit(X_ref)
        say(f"{detector} detector fitted on {len(X_ref)} clean reference samples")
    fitted = detectors[key]

    result = Reproduction(
        dataset, k, severity, detector, strategy, repeats, embedding, step, sizes, clean_accuracy, 0.0
    )
    # The models are small: one BLAS / OpenMP thread each (threads spinning against a busy machine's other
    # work made a logistic regression's fit 3-8x slower, as the improver's queries already found)
    with threadpool_limits(limits=1):
        for index, name in enumerate((CLEAN, *corruptions)):
            X_batch, y_batch = X[parts["batch"]], y[parts["batch"]]
            X_eval, y_eval = X[parts["eval"]], y[parts["eval"]]
            if name != CLEAN:
                X_batch = corrupt(X_batch, name, severity, seed=seed + 2 * index)
                X_eval = corrupt(X_eval, name, severity, seed=seed + 2 * index + 1)
            verdict = fitted.score(X_batch)
            anomalous = np.asarray(verdict.indices, dtype=int)
            row = Row(
                name,
                bool(verdict.is_drift),
                float(verdict.p_value),
                len(anomalous),
                0,
                base.score(X_eval, y_eval),
                None,
                None,
            )
            if verdict.is_drift and len(anomalous):
                used, clean_after = Counter(), []
                for draw in range(repeats):
                    active = improver(
                        strategy, X_batch[anomalous], draw, embedded=fitted if embedding == "checker" else "pca"
                    )
                    curve = learning_curve(
                        active, Oracle(y_batch[anomalous]), X_eval, y_eval, min(k, len(anomalous)), step
                    )
                    row.labeled = len(active.taught)
                    row.active_draws.append(curve[-1][1])
                    used.update(query.used for query in active.queries)
                    clean_after.append(active.score(X[parts["eval"]], y[parts["eval"]]))
                row.used = ", ".join(f"{name} x{count}" for name, count in used.items())
                row.active, row.clean_after = float(np.mean(row.active_draws)), float(np.mean(clean_after))
                for draw in range(repeats):
                    baseline = improver("random", X_batch, draw + 1)
                    ids = baseline.query_ids(row.labeled)
                    baseline.teach_ids(ids, Oracle(y_batch)(ids))
                    row.random_draws.append(baseline.score(X_eval, y_eval))
                row.random = float(np.mean(row.random_draws))
            result.rows.append(row)
            say(
                f"{name:>14}: drift {'yes' if row.drift else 'no '} (p={row.p_value:.1e}), {row.anomalies} anomalies, "
                f"accuracy {row.before:.3f} -> active {_acc(row.active)} / random {_acc(row.random)}"
            )
            if tracking_uri:
                _log_row(tracking_uri, experiment, result, row)
    result.seconds = time.perf_counter() - started
    return result


def _log_row(tracking_uri: str, experiment: str, result: Reproduction, row: Row) -> str:
    """One MLflow run per corruption: the settings as parameters, the outcome as metrics."""
    from .track import experiment_id, get_client, log_values

    client = get_client(tracking_uri)
    run_id = client.create_run(
        experiment_id(client, experiment),
        run_name=f"{result.dataset}/{row.corruption}",
        tags={"scanflow.kind": "reproduction"},
    ).info.run_id
    params = {
        "dataset": result.dataset,
        "corruption": row.corruption,
        "severity": result.severity,
        "k": result.k,
        "detector": result.detector,
        "strategy": result.strategy,
        "strategy_used": row.used,
        "embedding": result.embedding,
        "step": result.step,
        "repeats": result.repeats,
    }
    values = {
        "drift": float(row.drift),
        "p_value": row.p_value,
        "anomalies": row.anomalies,
        "labeled": row.labeled,
        "accuracy_before": row.before,
        "accuracy_active": row.active,
        "accuracy_random": row.random,
    }
    log_values(client, run_id, params, values)
    client.set_terminated(run_id, "FINISHED")
    return run_id
