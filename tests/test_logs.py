"""logs.py: log names, path checks, header and footer, removal, following, UTF-8 repair."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from script_monitor import logs


def test_log_names_are_per_script_folder_and_unique():
    a = logs.new_log_name("backup", 1_700_000_000.000001)
    b = logs.new_log_name("backup", 1_700_000_000.000002)
    assert a.startswith("backup/") and a.endswith(f"-{os.getpid()}.log")
    assert a != b and sorted([b, a]) == [a, b], "names sort in time order"


@pytest.mark.parametrize("bad", ["../outside.log", "a/../../x.log", "/etc/passwd"])
def test_resolve_refuses_paths_outside_the_log_directory(tmp_path, bad):
    with pytest.raises(logs.LogPathError):
        logs.resolve(tmp_path / "logs", bad)


def test_resolve_refuses_a_symlink_that_leads_outside(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "evil").symlink_to(tmp_path)
    with pytest.raises(logs.LogPathError):
        logs.resolve(tmp_path / "logs", "evil/x.log")
    assert logs.resolve(tmp_path / "logs", "s/x.log") == (tmp_path / "logs/s/x.log").resolve()


def test_header_and_footer_say_what_ran_and_how_it_ended():
    head = logs.header("s", ["echo", "a b"], 1_700_000_000, "manual", "g", 7).decode()
    assert "command: echo 'a b'" in head and "run: 7" in head and "(group g)" in head
    foot = logs.footer("failed", 3, None, 1.5, "why", needs_newline=True).decode()
    assert foot.startswith("\n") and "finished: failed, exit code 3, duration 1.500s" in foot
    assert "note: why" in foot
    killed = logs.footer("timeout", None, 9, 2.0, None, needs_newline=False).decode()
    assert "killed by signal 9" in killed and not killed.startswith("\n")


def test_ends_with_newline(tmp_path):
    path = tmp_path / "f"
    for data, expected in [(b"", True), (b"abc", False), (b"abc\n", True)]:
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert logs.ends_with_newline(fd, len(data)) is expected, data
        finally:
            os.close(fd)


def test_remove_and_the_remover_thread_delete_only_inside(tmp_path):
    log_dir = tmp_path / "logs"
    (log_dir / "s").mkdir(parents=True)
    names = [f"s/{i}.log" for i in range(5)]
    for n in names:
        (log_dir / n).write_text("x")
    outside = tmp_path / "keep.txt"
    outside.write_text("mine")
    logs.remove(log_dir, [names[0], "../keep.txt"])
    assert not (log_dir / names[0]).exists() and outside.exists()
    remover = logs.Remover(log_dir)
    remover.give(names[1:3])
    remover.give(names[3:])
    remover.close()  # waits until every given file is gone
    assert list((log_dir / "s").iterdir()) == []


def test_follow_copies_what_is_appended_until_done(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"old\n")
    out = io.BytesIO()
    stop = threading.Event()
    thread = threading.Thread(target=logs.follow, args=(path, 4, out, stop.is_set, 0.01))
    thread.start()
    with path.open("ab") as f:
        for i in range(3):
            f.write(f"line {i}\n".encode())
            f.flush()
            time.sleep(0.03)
    stop.set()
    thread.join(5)
    assert out.getvalue() == b"line 0\nline 1\nline 2\n"


def test_utf8_repair_keeps_sequences_split_across_chunks():
    out = io.BytesIO()
    w = logs.Utf8Out(out)
    data = "é€😀".encode()
    for i in range(len(data)):  # one byte at a time
        w.write(data[i : i + 1])
    w.write(b"\xff")
    w.write(b"\xe2\x82")  # incomplete at the end
    w.finish()
    assert out.getvalue().decode() == "é€😀\ufffd\ufffd"


def test_local_iso_matches_datetime(monkeypatch):
    from datetime import datetime

    for ts in (0, 1_700_000_000, 1_800_000_123):
        assert logs.local_iso(ts) == datetime.fromtimestamp(ts).astimezone().isoformat(
            timespec="seconds"
        )
