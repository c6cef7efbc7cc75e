"""Run every example pair in examples/ as real processes and check what
both sides print.

Client output is compared line by line (stripped) against patterns; a
pattern is a regular expression matched against the whole line, so object
reprs, which differ from run to run, are matched with `.+`.
"""
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import pbgreen as pb

# Every script in examples/ and the test below that runs it.
TESTED = {
    "echo_server.py", "echo_client.py",
    "pb1server.py", "pb1client.py",
    "pb2server.py", "pb2client.py",
    "pb3server.py", "pb3client.py",
    "exc_server.py", "exc_client.py",
    "trap_server.py", "trap_client.py",
    "copy_receiver.py", "copy_sender.py",
    "copy2_classes.py", "copy2_receiver.py", "copy2_sender.py",
    "cache_classes.py", "cache_receiver.py", "cache_sender.py",
    "demo.py",
}


def lines(text):
    return [line.strip() for line in text.splitlines() if line.strip()]


def assert_lines(text, patterns, what="output"):
    got = lines(text)
    ok = len(got) == len(patterns) and all(
        re.fullmatch(p, line) for p, line in zip(patterns, got)
    )
    assert ok, (
        f"{what} does not match\n--- got:\n" + "\n".join(got)
        + "\n--- expected (regex):\n" + "\n".join(patterns)
    )
    return got


def client_stdout(result):
    assert result.returncode == 0, (
        f"client exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    # An example that works prints nothing else: no warnings, no tracebacks.
    assert result.stderr == "", result.stderr
    return result.stdout


def test_every_example_is_tested(examples_dir):
    scripts = {p.name for p in examples_dir.glob("*.py")}
    assert scripts == TESTED


def test_echo(start_server, run_client):
    server = start_server("echo_server.py")
    result = run_client("echo_client.py", server.port)
    assert_lines(client_stdout(result), [r"server echoed: hello network"])
    server.stop()
    assert_lines(server.stdout, [rf"listening on {server.port}", r"echoing: hello network"])


def test_echo_client_reports_refused_connection(run_client):
    with socket.socket() as s:  # a port with, almost certainly, nobody on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_client("echo_client.py", port)
    assert result.returncode == 1, result.stderr
    (line,) = lines(result.stdout)
    assert line.startswith("error: ")
    assert str(port) in line  # API.md: the address is in the message


def test_pb1_passing_more_references(start_server, run_client):
    server = start_server("pb1server.py")
    result = run_client("pb1client.py", server.port)
    assert_lines(client_stdout(result), [
        r"got first object: .+",
        r"asking it to getTwo",
        r"got second object: .+",
        r"telling it to do three\(12\)",
    ])
    server.stop()
    assert_lines(server.stdout, [
        rf"listening on {server.port}",
        r"returning a Two called .+",
        r"Two\.three was given 12",
    ])


def test_pb2_references_come_back(start_server, run_client):
    server = start_server("pb2server.py")
    result = run_client("pb2client.py", server.port)
    assert_lines(client_stdout(result), [
        r"got one object: .+",
        r"asking it to getTwo",
        r"got two object: .+",
        r"giving it back to one",
        r"one is .+",
    ])
    server.stop()
    got = assert_lines(server.stdout, [
        rf"listening on {server.port}",
        r"One\.getTwo\(\), returning my two called .+",
        r"One\.checkTwo\(\): comparing my two .+",
        r"One\.checkTwo\(\): against your two .+",
        r"One\.checkTwo\(\): our twos are the same",
    ])
    # The returned reference is the server's own object, so both reprs agree.
    mine = got[2].removeprefix("One.checkTwo(): comparing my two ")
    yours = got[3].removeprefix("One.checkTwo(): against your two ")
    assert mine == yours


def test_pb3_server_calls_back_into_blocked_client(start_server, run_client):
    server = start_server("pb3server.py")
    result = run_client("pb3client.py", server.port)
    # Two.print runs while the client is still inside its takeTwo call.
    assert_lines(client_stdout(result), [
        r"got One: .+",
        r"giving it our two",
        r"Two\.print\(\) called with 12",
    ])
    server.stop()
    assert_lines(server.stdout, [
        rf"listening on {server.port}",
        r"received a Two called .+",
        r"telling it to print\(12\)",
    ])


def test_exc_expected_and_unexpected_errors(start_server, run_client):
    server = start_server("exc_server.py")
    result = run_client("exc_client.py", server.port, "broken")
    assert_lines(client_stdout(result), [
        r"got remote Exception",
        r"\.__class__ = .+",
        r"\.getErrorMessage\(\) = fall down go boom",
        r"\.type = __main__\.MyError",
    ])
    result = run_client("exc_client.py", server.port, "broken2")
    assert_lines(client_stdout(result), [
        r"got remote Exception",
        r"\.__class__ = .+",
        r"\.getErrorMessage\(\) = hadda owie",
        r"\.type = __main__\.MyError2",
    ])
    marker = "Peer Will Receive PB Traceback"
    assert server.wait_for_stderr(marker), f"server never logged {marker!r}:\n{server.stderr}"
    server.stop()
    assert_lines(server.stdout, [
        rf"listening on {server.port}",
        r"raising a MyError exception with data 'fall down go boom'",
        r"raising a MyError2 exception with data 'hadda owie'",
    ])
    # Only the plain Exception is logged; the pb.Error one (called first,
    # so it would have been logged first) is not.
    err = server.stderr
    assert err.count(marker) == 1, err
    assert "MyError2" in err and "hadda owie" in err
    assert "fall down go boom" not in err


def test_trap_try_except_instead_of_errbacks(start_server, run_client):
    server = start_server("trap_server.py")
    result = run_client("trap_client.py", server.port)
    assert_lines(client_stdout(result), [
        r"callOne: call with safe object",
        r"method successful, response: response",
        r"callTwo: call with dangerous object",
        r"InsecureJelly: you tried to send something unsafe to them",
        r"callThree: call that raises remote exception",
        r"remote raised a MyException",
        r"telling them to shut down",
        r"callFour: call on stale reference",
        r"stale reference: the client disconnected or crashed",
    ])
    # remote_shutdown stops the server: serve_forever returns, the script ends.
    assert server.wait_exit() == 0, server.stderr
    server.stop()
    assert_lines(server.stdout, [rf"listening on {server.port}"])
    assert server.stderr == ""  # a clean stop: nothing logged


def shut_down(port):
    """Call the receiver's remote_shutdown from this process."""
    with pb.PBClient("127.0.0.1", port, timeout=10) as client:
        try:
            client.getRootObject().callRemote("shutdown")
        except pb.PBConnectionLost:
            pass  # the server may hang up before its answer gets out


def test_copy_sends_a_pond_by_value(start_server, run_client):
    server = start_server("copy_receiver.py")
    result = run_client("copy_sender.py", server.port)
    assert_lines(client_stdout(result), [
        r"7 frogs",
        # Sent as copy_sender.CopyPond, not __main__.CopyPond.
        r"copy_sender\.CopyPond",
        r"pond arrived safe and sound",
    ])
    shut_down(server.port)
    assert server.wait_exit() == 0, server.stderr
    server.stop()
    assert_lines(server.stdout, [
        rf"listening on {server.port}",
        # Rebuilt as the receiver's own class, with the sender's state.
        r"got pond: <__main__\.ReceiverPond object at .+>",
        r"7 frogs",
    ])
    assert server.stderr == ""


def test_copy2_controls_the_copied_state(start_server, run_client):
    server = start_server("copy2_receiver.py")
    result = run_client("copy2_sender.py", server.port)
    assert_lines(client_stdout(result), [
        r"count 7",
        r"pond arrived safe and sound",
    ])
    shut_down(server.port)
    assert server.wait_exit() == 0, server.stderr
    server.stop()
    assert_lines(server.stdout, [
        rf"listening on {server.port}",
        r"got pond: <copy2_classes\.ReceiverPond object at .+>",
        # ReceiverPond only has the total that getStateToCopy computed.
        r"count 7",
    ])
    assert server.stderr == ""


def test_cache_keeps_the_copy_in_sync(start_server, run_client):
    server = start_server("cache_receiver.py")
    result = run_client("cache_sender.py", server.port)
    assert_lines(client_stdout(result), [
        r"I have \[2\] ducks",
        r"I have \[3\] ducks",
        r"I have \[2\] ducks",
        # Dropping the receiver's last reference reached the sender.
        r"stoppedObserving ran: nobody watches the pond now",
    ])
    # remote_shutdown stops the server: serve_forever returns, the script ends.
    assert server.wait_exit() == 0, server.stderr
    server.stop()
    # Each update arrives before the checkDucks call that was sent after it.
    assert_lines(server.stdout, [
        rf"listening on {server.port}",
        r"cache - sitting, er, setting ducks",
        r"got pond: <cache_classes\.SlaveDuckPond object at .+>",
        r"\[2\] ducks:  \['one duck', 'two duck'\]",
        r"cache - addDuck",
        r"\[3\] ducks:  \['one duck', 'two duck', 'ugly duckling'\]",
        r"cache - removeDuck",
        r"\[2\] ducks:  \['two duck', 'ugly duckling'\]",
        r"dropping pond",
    ])
    assert server.stderr == ""


def _processes_with(marker: bytes):
    """PIDs of live processes whose environment holds `marker` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.mark.timeout(300)
def test_demo_runs_every_pair_and_cleans_up(examples_dir):
    marker = f"PBGREEN_DEMO_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    env = dict(os.environ, **{key: value})
    result = subprocess.run(
        [sys.executable, str(examples_dir / "demo.py")],
        capture_output=True, text=True, timeout=240, env=env, cwd=examples_dir,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = lines(result.stdout)
    for expected in [
        "server echoed: hello network",
        "Two.three was given 12",
        "One.checkTwo(): our twos are the same",
        "Two.print() called with 12",
        ".type = __main__.MyError",
        ".type = __main__.MyError2",
        "remote raised a MyException",
        "stale reference: the client disconnected or crashed",
        "copy_sender.CopyPond",
        "pond arrived safe and sound",
        "count 7",
        "[3] ducks:  ['one duck', 'two duck', 'ugly duckling']",
        "[2] ducks:  ['two duck', 'ugly duckling']",
        "dropping pond",
        "stoppedObserving ran: nobody watches the pond now",
        "all 9 examples ran",
    ]:
        assert expected in out, f"{expected!r} missing from demo output:\n{result.stdout}"
    assert "Peer Will Receive PB Traceback" in result.stdout
    if Path("/proc/self/environ").exists():
        assert _processes_with(marker.encode()) == []
