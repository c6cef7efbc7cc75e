"""pbgreen.testing.processes: start a child, read its ready line, stop it for sure."""

from __future__ import annotations

import signal
import subprocess
import sys

import gevent
import pytest

from pbgreen.testing.processes import Child, ChildError, ChildExited, ChildTimeout, start


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SERVER = python("import sys\n"
                "print('starting')\n"
                "print('PORT 4321', flush=True)\n"
                "sys.stdin.read()\n"
                "print('bye', flush=True)")


def test_start_reads_the_port_and_stops_at_stdin_eof():
    with start(SERVER, grace=10) as child:
        assert child.port == 4321
        assert child.ready.group(0) == "PORT 4321"
        assert child.returncode is None
    # Closing stdin was enough: the child printed its last line and exited 0.
    assert child.returncode == 0
    assert child.stdout == "starting\nPORT 4321\nbye\n"


def test_lines_written_together_are_read_one_by_one():
    child = Child(python("print('a\\nb\\nc', flush=True)"), stdin=subprocess.DEVNULL)
    try:
        assert [child.read_line(10) for _ in range(3)] == ["a", "b", "c"]
        with pytest.raises(ChildExited):
            child.read_line(10)
    finally:
        child.stop()


def test_a_child_that_exits_before_its_ready_line():
    argv = python("import sys; print('oops'); sys.stderr.write('bad config\\n'); sys.exit(3)")
    with pytest.raises(ChildExited) as caught:
        start(argv, timeout=10)
    text = str(caught.value)
    assert "exited with status 3" in text
    assert "oops" in text and "bad config" in text


def test_a_silent_child_is_stopped_at_the_deadline():
    with pytest.raises(ChildTimeout) as caught:
        start(python("import time; time.sleep(60)"), timeout=0.2)
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, ChildError)
    # The fixture no_child_processes_left checks that it is gone.


def test_stop_kills_a_child_that_ignores_sigterm():
    child = start(python("import signal, time\n"
                         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                         "print('PORT 1', flush=True)\n"
                         "time.sleep(60)"), timeout=10)
    assert child.stop(grace=0, timeout=0.2) == -signal.SIGKILL
    assert child.stop() == -signal.SIGKILL  # again: nothing more to do


def test_wait_with_gevent_sleep_lets_greenlets_run():
    # The child exits only once a greenlet has closed its stdin: a wait that
    # blocked the hub would never see it exit.
    child = Child(python("import sys; sys.stdin.read()"))
    try:
        closer = gevent.spawn(child.close_stdin)
        assert child.wait(10, sleep=gevent.sleep) == 0
        assert closer.dead
    finally:
        child.stop()


def test_wait_returns_none_at_the_deadline_and_leaves_the_child_running():
    with Child(python("import time; time.sleep(60)")) as child:
        assert child.wait(0.1) is None
        assert child.returncode is None
    assert child.returncode == -signal.SIGTERM


def test_stderr_destinations(tmp_path):
    code = "import sys; sys.stderr.write('to stderr\\n'); print('to stdout')"
    captured = Child(python(code), stdin=subprocess.DEVNULL)
    merged = Child(python(code), stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    to_file = Child(python(code), stdin=subprocess.DEVNULL, stderr=tmp_path / "err.txt")
    for child in (captured, merged, to_file):
        assert child.wait(10) == 0
    assert (captured.stdout, captured.stderr) == ("to stdout\n", "to stderr\n")
    assert sorted(merged.stdout.splitlines()) == ["to stderr", "to stdout"]
    assert (tmp_path / "err.txt").read_text() == "to stderr\n"
    with pytest.raises(ValueError):
        to_file.stderr


def test_wait_for_text_and_send():
    echo = python("import sys\n"
                  "for line in sys.stdin:\n"
                  "    print('got', line.strip(), flush=True)")
    with Child(echo, grace=10) as child:
        assert child.send("hello\n")
        assert child.wait_for_text("got hello", timeout=10)
        assert not child.wait_for_text("never printed", timeout=0.1)
    assert child.returncode == 0
    assert not child.send("too late\n")


def test_importing_it_imports_neither_gevent_nor_pytest():
    code = ("import sys; import pbgreen.testing.processes; "
            "print(sorted({'gevent', 'pytest'} & set(sys.modules)))")
    result = subprocess.run(python(code), capture_output=True, text=True, timeout=30)
    assert result.stdout == "[]\n", result.stderr
