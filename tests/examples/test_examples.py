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
import time
import uuid
from pathlib import Path

import pytest

import pbgreen as pb
from pbgreen.testing.processes import Child

from example_output import assert_lines, client_stdout, lines

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
    "chat_server.py", "chat_client.py",
    "demo.py",
    # Ported from Twisted's listings; run by test_ported_listings.py.
    "anon_server.py", "anon_client.py",
    "pb6server.py", "pb6client.py",
}


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
    assert server.wait_for_text(marker, stream="stderr"), (
        f"server never logged {marker!r}:\n{server.stderr}")
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
    assert server.wait(10) == 0, server.stderr
    server.stop()
    assert_lines(server.stdout, [rf"listening on {server.port}"])
    assert server.stderr == ""  # a clean stop: nothing logged


def shut_down(pb_client, port):
    """Call the receiver's remote_shutdown from this process (pbgreen's pytest plugin)."""
    try:
        pb_client(port).getRootObject().callRemote("shutdown")
    except pb.PBConnectionLost:
        pass  # the server may hang up before its answer gets out


def test_copy_sends_a_pond_by_value(start_server, run_client, pb_client):
    server = start_server("copy_receiver.py")
    result = run_client("copy_sender.py", server.port)
    assert_lines(client_stdout(result), [
        r"7 frogs",
        # Sent as copy_sender.CopyPond, not __main__.CopyPond.
        r"copy_sender\.CopyPond",
        r"pond arrived safe and sound",
    ])
    shut_down(pb_client, server.port)
    assert server.wait(10) == 0, server.stderr
    server.stop()
    assert_lines(server.stdout, [
        rf"listening on {server.port}",
        # Rebuilt as the receiver's own class, with the sender's state.
        r"got pond: <__main__\.ReceiverPond object at .+>",
        r"7 frogs",
    ])
    assert server.stderr == ""


def test_copy2_controls_the_copied_state(start_server, run_client, pb_client):
    server = start_server("copy2_receiver.py")
    result = run_client("copy2_sender.py", server.port)
    assert_lines(client_stdout(result), [
        r"count 7",
        r"pond arrived safe and sound",
    ])
    shut_down(pb_client, server.port)
    assert server.wait(10) == 0, server.stderr
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
    assert server.wait(10) == 0, server.stderr
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


def run_together(examples_dir, port, *arg_lists, timeout=60):
    """Run chat_client.py once per argument list, all at the same time;
    a CompletedProcess for each. Every client is reaped, killed if need be."""
    clients = []
    try:
        for args in arg_lists:
            clients.append(Child(
                [sys.executable, str(examples_dir / "chat_client.py"), "127.0.0.1", str(port),
                 *args],
                stdin=subprocess.DEVNULL, cwd=examples_dir))
        deadline = time.monotonic() + timeout
        for client in clients:
            if client.wait(max(0.0, deadline - time.monotonic())) is None:
                pytest.fail(f"chat client still running after {timeout} s\n{client.describe()}")
        return [subprocess.CompletedProcess(c.argv, c.returncode, c.stdout, c.stderr)
                for c in clients]
    finally:
        for client in clients:
            client.kill()


def check_chat_client(text, user, other, said, heard):
    """What one of two chat clients printed: its login, its own message and
    the other's message once each; joined/left notices at most once."""
    got = lines(text)
    login = rf"logged in as {user}; in the room: ({user}|alice, bob)"
    mine = re.escape(f"<{user}> {said}")
    theirs = re.escape(f"<{other}> {heard}")
    optional = [rf"\* {other} joined", rf"\* {other} left"]
    for line in got:
        assert any(re.fullmatch(p, line) for p in [login, mine, theirs, *optional]), (
            f"unexpected line {line!r} from {user}'s client:\n{text}")

    def where(pattern):
        return [i for i, line in enumerate(got) if re.fullmatch(pattern, line)]

    assert len(where(login)) == 1, text
    assert len(where(mine)) == 1, text   # its own message came back once ...
    assert len(where(theirs)) == 1, text  # ... and so did the other user's
    assert all(len(where(p)) <= 1 for p in optional), text
    # It said its message only after logging in.
    assert where(login)[0] < where(mine)[0], text


def test_chat_login_two_users_hear_each_other(start_server, run_client, examples_dir):
    server = start_server("chat_server.py")
    alice, bob = run_together(
        examples_dir, server.port,
        ["alice", "wonderland", "--wait-for", "bob", "hello from alice"],
        ["bob", "builder", "hi alice, bob here", "--wait-for", "alice"],
    )
    check_chat_client(client_stdout(alice), "alice", "bob", "hello from alice",
                      "hi alice, bob here")
    check_chat_client(client_stdout(bob), "bob", "alice", "hi alice, bob here",
                      "hello from alice")
    # Both disconnected: each logout ran and left the room.
    assert server.wait_for_text("alice left"), server.stdout
    assert server.wait_for_text("bob left"), server.stdout

    # A wrong password, or a user the server does not know: a clear refusal
    # on stderr, nothing on stdout, a non-zero exit, and nobody joins.
    for user, password in [("alice", "builder"), ("mallory", "wonderland")]:
        refused = run_client("chat_client.py", server.port, user, password, "let me in")
        assert refused.returncode == 1, refused
        assert refused.stdout == "", refused.stdout
        assert lines(refused.stderr) == [
            f"login refused: wrong user name or password for '{user}'"
        ], refused.stderr

    # The room is empty again: bob comes back alone and hears only himself.
    alone = run_client("chat_client.py", server.port, "bob", "builder", "anyone there?")
    assert_lines(client_stdout(alone), [
        r"logged in as bob; in the room: bob",
        r"<bob> anyone there\?",
    ])
    assert server.wait_for_text("<bob> anyone there?\nbob left; in the room: nobody\n"), (
        server.stdout)
    server.stop()

    got = lines(server.stdout)
    assert got[0] == f"listening on {server.port}"
    joins, talk, leaves, last_round = got[1:3], got[3:5], got[5:7], got[7:]
    # Both joined before anyone spoke (--wait-for) ...
    first, second = [line.split()[0] for line in joins]
    assert {first, second} == {"alice", "bob"}, got
    assert joins == [f"{first} joined; in the room: {first}",
                     f"{second} joined; in the room: alice, bob"], got
    assert sorted(talk) == ["<alice> hello from alice", "<bob> hi alice, bob here"], got
    # ... and nobody left before hearing the other; logout emptied the room.
    gone, stayed = [line.split()[0] for line in leaves]
    assert {gone, stayed} == {"alice", "bob"}, got
    assert leaves == [f"{gone} left; in the room: {stayed}",
                      f"{stayed} left; in the room: nobody"], got
    assert last_round == [
        "bob joined; in the room: bob",
        "<bob> anyone there?",
        "bob left; in the room: nobody",
    ], server.stdout
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
        "<alice> hello from alice",
        "<bob> hi alice, bob here",
        "all 10 examples ran",
    ]:
        assert expected in out, f"{expected!r} missing from demo output:\n{result.stdout}"
    assert "Peer Will Receive PB Traceback" in result.stdout
    if Path("/proc/self/environ").exists():
        assert _processes_with(marker.encode()) == []


def test_chat_client_hears_messages_while_it_waits_in_gevent_sleep(start_server, run_client,
                                                                   examples_dir):
    """--listen waits with gevent.sleep: calls to the mind keep arriving."""
    server = start_server("chat_server.py")
    with Child([sys.executable, str(examples_dir / "chat_client.py"), "127.0.0.1",
                str(server.port), "alice", "wonderland", "--listen", "60"],
               stdin=subprocess.DEVNULL, cwd=examples_dir) as alice:
        assert alice.wait_for_text("logged in as alice", timeout=30), alice.describe()
        # alice now sits in gevent.sleep(60); bob's "say" returns once every
        # member (alice included) has the message.
        bob = run_client("chat_client.py", server.port, "bob", "builder", "anyone there?")
        assert bob.returncode == 0, bob
        assert alice.wait_for_text("<bob> anyone there?", timeout=10), alice.describe()
        assert alice.returncode is None  # still listening: it got it during the sleep
