"""The pytest plugin, tested by running small test files with pytester."""

from __future__ import annotations

import pytest

ROOT = '''
import gevent
import gevent.event
import pytest
import pbgreen as pb

class Root(pb.Root):
    def __init__(self):
        self.waiting = gevent.event.Event()
    def remote_add(self, a, b):
        return a + b
    def remote_wait(self):
        self.waiting.set()
        gevent.sleep(30)
'''


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_it=ROOT + body)
    pytester.makeini("[pytest]\nusefixtures = pb_leak_check\npbgreen_leak_deadline = 0.5\n")
    return pytester.runpytest_subprocess(*args)  # loaded through its pytest11 entry point


def test_fixtures_serve_connect_and_clean_up(pytester):
    result = run(pytester, '''
@pytest.fixture
def pb_root_object():
    return Root()

def test_root(pb_root):
    assert pb_root.callRemote("add", 2, 3) == 5

def test_server_and_client(pb_server, pb_client):
    server = pb_server(Root())
    assert server.address[0] == "127.0.0.1" and server.address[1] > 0
    assert pb_client(server).getRootObject().callRemote("add", 1, 1) == 2
''')
    result.assert_outcomes(passed=2)


def test_leak_check_catches_a_leaked_connection(pytester):
    result = run(pytester, '''
def test_leaks(pb_server):
    server = pb_server(Root())
    client = pb.PBClient("127.0.0.1", server.address[1])  # never closed
    assert client.getRootObject().callRemote("add", 1, 2) == 3
    test_leaks.client = client
''')
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test left behind*connection(s) the test opened*"])


def test_leak_check_catches_a_call_left_waiting(pytester):
    result = run(pytester, '''
def test_waits(pb_server, pb_client):
    root = Root()
    ref = pb_client(pb_server(root)).getRootObject()
    test_waits.job = gevent.spawn(ref.callRemote, "wait")
    assert root.waiting.wait(5)  # the call reached the server and waits for its answer
''')
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test left behind*connection(s) with calls waiting*"])


def test_leak_check_catches_a_stray_greenlet(pytester):
    result = run(pytester, '''
def test_stray():
    test_stray.g = gevent.spawn(gevent.sleep, 30)
    gevent.sleep(0)
''')
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*live greenlet*"])


def test_allow_leaks_marker_skips_the_check(pytester):
    result = run(pytester, '''
@pytest.mark.allow_leaks
def test_stray():
    test_stray.g = gevent.spawn(gevent.sleep, 30)
''')
    result.assert_outcomes(passed=1)


def test_pb_root_without_a_root_object_explains_itself(pytester):
    result = run(pytester, '''
def test_root(pb_root):
    pass
''')
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a pb_root_object fixture*"])
