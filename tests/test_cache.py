"""The no-change check: a stat per unchanged file, a hash only for what changed, one cache read per run."""

import os
import time

from scanflow_nb import App, Executor, Workflow
from scanflow_nb.files import FileDigests
from scanflow_nb.run.workspace import Workspace


def same_stat_other_bytes(path, data):
    """Rewrite `path` in place with `data` (same size) and give it back its mtime: only its content differs."""
    st = path.stat()
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_an_unchanged_file_costs_a_stat_and_a_changed_one_is_hashed_again(tmp_path):
    data = tmp_path / "data.csv"
    data.write_bytes(b"a,b\n1,2\n")
    old = time.time_ns() - 60 * 10**9
    os.utime(data, ns=(old, old))  # last changed a minute ago
    memo = tmp_path / "digests.json"
    first = FileDigests(memo)
    digest = first.digest(data)
    first.save()

    same_stat_other_bytes(data, b"a,b\n3,4\n")
    assert FileDigests(memo).digest(data) == digest, "a file whose stat is unchanged is not read"
    data.write_bytes(b"a,b\n3,4\n")  # a real edit moves the mtime
    assert FileDigests(memo).digest(data) != digest


def test_a_file_changed_right_before_it_was_hashed_is_hashed_again(tmp_path):
    """Racy case: an edit in the same mtime tick as the hash must not hide behind an equal stat."""
    script = tmp_path / "step.py"
    script.write_bytes(b"print(1)\n")
    memo = tmp_path / "digests.json"
    first = FileDigests(memo)
    digest = first.digest(script)
    first.save()
    same_stat_other_bytes(script, b"print(2)\n")
    assert FileDigests(memo).digest(script) != digest


def test_folder_digests_follow_names_and_contents(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"a")
    (folder / "sub" / "b.png").write_bytes(b"b")
    memo = tmp_path / "digests.json"
    seen = {FileDigests(memo).digest(folder)}
    (folder / "sub" / "c.png").write_bytes(b"c")
    seen.add(FileDigests(memo).digest(folder))
    (folder / "sub" / "c.png").rename(folder / "sub" / "d.png")
    seen.add(FileDigests(memo).digest(folder))
    (folder / "a.png").write_bytes(b"A")
    seen.add(FileDigests(memo).digest(folder))
    assert len(seen) == 4
    assert FileDigests(memo).digest(tmp_path / "nothing") == "missing"


def test_successes_survive_a_crash_and_fold_into_one_file(tmp_path):
    ws = Workspace(tmp_path)
    ws.remember("w/a", "k1", "r1")
    ws.remember("w/b", "k2", "r2")
    ws.remember("w/a", "k3", "r3")  # a later success of the same executor wins
    with open(ws.state_dir / "cache.log", "a") as log:
        log.write('{"key": "w/c", "dig')  # the process died mid-line
    expected = {"w/a": {"digest": "k3", "run_id": "r3"}, "w/b": {"digest": "k2", "run_id": "r2"}}
    assert Workspace(tmp_path).cache() == expected
    ws.fold_cache()
    assert not (ws.state_dir / "cache.log").exists() and Workspace(tmp_path).cache() == expected


def test_a_no_change_rerun_sees_an_edited_input_folder(tmp_path):
    app = App(tmp_path / "app")
    app.path.mkdir()
    (app.path / "data").mkdir()
    (app.path / "data" / "x.txt").write_text("1")
    code = "import os; print(sorted(os.listdir('data')))"
    app.add(Workflow("w", executors=[Executor("read", code=code, inputs=["data"])]))
    assert app.run("w", echo=False).executors["w/read"].status == "succeeded"
    assert app.run("w", echo=False).executors["w/read"].status == "cached"
    (app.path / "data" / "y.txt").write_text("2")
    assert app.run("w", echo=False).executors["w/read"].status == "succeeded"
    assert app.logs("read").strip() == "['x.txt', 'y.txt']"
    assert app.run("w", echo=False).executors["w/read"].status == "cached"
