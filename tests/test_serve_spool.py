"""The serving journal on a real disk, both sides of it (the serving process's `Spool`, the logger's `Backlog`),
with real processes killed mid-way: nothing answered is lost or repeated."""

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from scanflow_nb.errors import ValidationError
from scanflow_nb.serve.backlog import Backlog
from scanflow_nb.serve.spool import Spool, read_segment

HEADER = {"model_uri": "models:/m@champion", "version": "1"}


def entry(X, version="1", proba=True):
    X = np.asarray(X, dtype=float)
    predictions = X[:, 0].astype(int)
    probabilities = np.full((len(X), 3), 1 / 3) if proba else None
    return Spool.entry({**HEADER, "version": version}, X, predictions, probabilities)


def backlog(spool, max_bytes=None):
    """The logger's view of `spool`'s folder."""
    return Backlog(spool.root, spool.replica, max_bytes or spool.max_bytes)


def ready(spool):
    return [p for p in backlog(spool).pending() if p.suffix == ".ready"]


def test_requests_gather_into_batches_of_exactly_batch_rows_and_read_back_whole(tmp_path):
    spool = Spool(tmp_path, batch_rows=10, flush_seconds=60)
    rows = np.arange(29 * 3).reshape(29, 3)
    for start in range(0, 15, 3):  # five requests of 3 rows: the fourth is split at 10
        spool.write(entry(rows[start : start + 3]))
    spool.write(entry(rows[15:29]))  # one request of 14 rows: 5 fill the second batch, 9 start the third
    assert len(ready(spool)) == 2
    assert spool.stats() == {"rows": 29, "requests": 6, "open_rows": 9, "open_bytes": spool.stats()["open_bytes"]}
    assert spool.seal() is True
    segments = [read_segment(p) for p in ready(spool)]
    assert [s.rows for s in segments] == [10, 10, 9]
    np.testing.assert_array_equal(np.concatenate([s.X for s in segments]), rows)
    first = segments[0]
    assert first.predictions.tolist() == rows[:10, 0].tolist()
    assert first.probabilities.shape == (10, 3)
    assert first.header["version"] == "1" and first.header["replica"] == spool.replica


def test_a_model_switch_or_a_new_row_shape_starts_a_new_segment(tmp_path):
    spool = Spool(tmp_path, batch_rows=100, flush_seconds=60)
    spool.write(entry([[1, 2]]))
    spool.write(entry([[3, 4]], version="2"))  # another model version answered
    spool.write(entry([[5, 6, 7]], version="2"))  # another row shape
    spool.write(entry([[8, 9, 10]], version="2", proba=False))  # no probabilities
    spool.seal()
    segments = [read_segment(p) for p in ready(spool)]
    assert [s.header["version"] for s in segments] == ["1", "2", "2", "2"]
    assert [s.X.tolist() for s in segments] == [[[1, 2]], [[3, 4]], [[5, 6, 7]], [[8, 9, 10]]]
    assert segments[-1].probabilities is None


def test_only_old_segments_are_sealed_by_age(tmp_path):
    spool = Spool(tmp_path, batch_rows=100, flush_seconds=60)
    spool.write(entry([[1.0]]))
    assert spool.seal(older_than=60) is False and ready(spool) == []
    assert spool.seal(older_than=0) is True and len(ready(spool)) == 1
    assert spool.seal() is False  # nothing open


def test_a_torn_last_record_is_skipped(tmp_path):
    """A process killed in the middle of a write never answered that request: the rest reads fine."""
    spool = Spool(tmp_path, batch_rows=100, flush_seconds=60)
    spool.write(entry([[1, 2], [3, 4]]))
    spool.write(entry([[5, 6]]))
    spool.seal()
    path = ready(spool)[0]
    whole = path.read_bytes()
    torn = entry([[7, 8]]).record
    path.write_bytes(whole + torn[: len(torn) // 2])
    assert read_segment(path).X.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_past_the_bound_the_oldest_segments_are_dropped_and_counted(tmp_path):
    spool = Spool(tmp_path, batch_rows=1000, flush_seconds=60, max_bytes=2**20)
    logger = backlog(spool)
    big = np.zeros((1000, 60))  # about 480 KB a segment
    for _ in range(5):
        spool.write(entry(big))
    assert logger.bound() == 3000  # two segments fit in 1 MiB
    kept = ready(spool)
    claimed = kept[0]
    assert logger.claim(claimed)  # being shipped: never dropped under the shipper
    for _ in range(2):
        spool.write(entry(big))
    assert logger.bound() == 2000
    stats = logger.stats()
    assert stats["dropped_rows"] == 5000 and stats["dropped_segments"] == 5
    assert stats["ready_bytes"] <= 2**20 + 500_000  # the claimed one may sit above the bound
    assert claimed in logger.pending()
    events = [json.loads(p.read_text()) for p in logger.pending() if p.suffix == ".event"]
    assert sum(e["rows"] for e in events if e["kind"] == "overflow") == 5000
    assert events[-1]["total_dropped_rows"] == 5000


def test_a_done_item_is_gone_and_a_released_one_stays(tmp_path):
    spool = Spool(tmp_path, batch_rows=1, flush_seconds=60)
    spool.write(entry([[1.0]]))
    spool.write(entry([[2.0]]))
    logger = backlog(spool)
    one, two = logger.pending()
    assert logger.claim(one) and not logger.claim(one)  # one shipper at a time
    logger.done(one)
    assert logger.claim(two)
    logger.release(two)
    assert logger.pending() == [two] and not one.exists()


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from scanflow_nb.serve.spool import Spool
    spool = Spool(sys.argv[1], batch_rows=4, flush_seconds=60)
    for i in range(6):
        X = np.full((1, 2), float(i))
        spool.write(Spool.entry({"version": "1"}, X, X[:, 0]))
    print(spool.replica, flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()  # alive until told
    """
)


def writer(root, mode):
    return subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(root), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_killed_replicas_rows_are_adopted_by_the_next_one(tmp_path):
    proc = writer(tmp_path, "kill")
    dead = proc.stdout.readline().strip()
    assert proc.wait(30) == -signal.SIGKILL
    spool = Spool(tmp_path, batch_rows=100, flush_seconds=60)
    logger = backlog(spool)
    assert logger.adopt() == 2  # the sealed segment of 4 rows and the open one of 2
    rows = [read_segment(p).X[:, 0].tolist() for p in ready(spool)]
    assert sorted(sum(rows, [])) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert logger.stats()["adopted_rows"] == 6
    assert not (tmp_path / dead).exists() and not (tmp_path / f"{dead}.lock").exists()
    assert logger.adopt() == 0  # once


def test_a_living_replicas_journal_is_left_alone(tmp_path):
    proc = writer(tmp_path, "live")
    alive = proc.stdout.readline().strip()
    try:
        logger = backlog(Spool(tmp_path, batch_rows=100, flush_seconds=60))
        assert logger.adopt() == 0
        assert any((tmp_path / alive).iterdir())
    finally:
        proc.stdin.close()
        proc.wait(30)
    assert logger.adopt() == 2  # it ended without closing its spool: now it is an orphan


def test_close_keeps_what_is_unshipped_for_the_next_replica(tmp_path):
    spool = Spool(tmp_path, batch_rows=100, flush_seconds=60)
    spool.write(entry([[1.0, 2.0]]))
    spool.close()
    successor = Spool(tmp_path, batch_rows=100, flush_seconds=60)
    assert backlog(successor).adopt() == 1
    assert [read_segment(p).X.tolist() for p in ready(successor)] == [[[1.0, 2.0]]]
    empty = Spool(tmp_path / "other", batch_rows=100, flush_seconds=60)
    empty.close()
    assert list((tmp_path / "other").iterdir()) == []  # nothing left: nothing kept


@pytest.mark.parametrize(
    "options, message",
    [
        ({"batch_rows": 0}, "batch rows"),
        ({"flush_seconds": -1}, "flush seconds"),
        ({"max_bytes": 10}, "at least 1 MiB"),
    ],
)
def test_bad_settings_are_one_clear_error(tmp_path, options, message):
    with pytest.raises(ValidationError, match=message):
        Spool(tmp_path, **options)
    assert not any(tmp_path.iterdir())  # refused before creating anything


def test_the_spool_holds_its_lock_while_it_lives(tmp_path):
    spool = Spool(tmp_path, batch_rows=10, flush_seconds=60)
    with pytest.raises(BlockingIOError):
        Spool(tmp_path, batch_rows=10, flush_seconds=60, replica=spool.replica)
    spool.close()
    Spool(tmp_path, batch_rows=10, flush_seconds=60, replica=spool.replica).close()  # free once closed
