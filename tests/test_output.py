"""Output limits: what passes to the cell each second, what the log keeps, reading a log's end."""

from scanflow_nb.run.output import LogWriter, OutputLimits, Throttle, head_lines, tail_lines


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_throttle_passes_a_rate_per_second_then_notes_what_it_hid_and_ends_with_the_tail(tmp_path):
    clock = Clock()
    throttle = Throttle(OutputLimits(lines_per_second=3, tail_lines=2), tmp_path / "x.log", clock)
    shown = [out for i in range(10) for out in throttle.admit(f"l{i}")]
    assert shown == ["l0", "l1", "l2"]
    clock.now += 1.0
    assert throttle.admit("l10") == [f"[scanflow] ... 7 lines hidden, full log: {tmp_path / 'x.log'}", "l10"]
    for i in range(11, 20):
        throttle.admit(f"l{i}")
    assert throttle.end() == [f"[scanflow] ... 5 lines hidden, full log: {tmp_path / 'x.log'}", "l18", "l19"]
    assert throttle.end() == []


def test_a_log_is_kept_whole_up_to_its_limit_then_ends_with_a_note_and_the_last_lines(tmp_path):
    path = tmp_path / "logs" / "x.log"
    with LogWriter(path, OutputLimits(tail_lines=2, log_bytes=30)) as log:
        for i in range(10):
            log.write(f"line {i}")  # 7 bytes each with the newline: 4 fit
    assert path.read_text().splitlines() == [
        "line 0",
        "line 1",
        "line 2",
        "line 3",
        "[scanflow] log truncated at its size limit: 6 more lines (0.0 MB) were not kept; the last 2 follow",
        "line 8",
        "line 9",
    ]


def test_a_new_log_is_a_new_file_so_a_linked_artifact_keeps_the_last_one(tmp_path):
    path = tmp_path / "x.log"
    with LogWriter(path, OutputLimits()) as log:
        log.write("first run")
    artifact = tmp_path / "artifact.log"
    artifact.hardlink_to(path)
    with LogWriter(path, OutputLimits()) as log:
        log.write("second run")
    assert artifact.read_text() == "first run\n" and path.read_text() == "second run\n"


def test_head_and_tail_of_a_large_log(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"{i}\n" for i in range(200_000)))
    assert tail_lines(path, 3) == ["199997", "199998", "199999"]
    assert list(head_lines(path, 2)) == ["0", "1"]
    assert tail_lines(path, 0) == []
