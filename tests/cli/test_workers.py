"""``pbgreen serve --workers N`` and ``pbgreen.workers.WorkerPool``: real processes, one port."""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
import time

import gevent
import pytest
from gevent import socket

import pbgreen as pb
from pbgreen.testing.processes import children, start

WORKER_APP = textwrap.dedent('''
    import os

    import gevent

    import pbgreen as pb

    class Root(pb.Root):
        def rootObject(self, broker):
            return PerConnection(broker)

    class PerConnection(pb.Referenceable):
        def __init__(self, broker):
            self.broker = broker

        def remote_pid(self):
            return os.getpid()

        def remote_peer(self):
            return tuple(self.broker.peer[:2])

        def remote_exit(self, status):
            os._exit(status)

        def remote_work(self, seconds):
            print("WORK STARTED", os.getpid(), flush=True)
            gevent.sleep(seconds)
            return "work done"
''')

POOL_SCRIPT = textwrap.dedent('''
    import sys
    import threading

    from pbgreen.workers import WorkerPool
    from workerapp import Root

    def stop_on_request(pool):
        for line in sys.stdin:
            if line.strip() == "stop":
                pool.stop()

    if __name__ == "__main__":
        pool = WorkerPool(Root, host="127.0.0.1", port=0, workers=2, log_level="INFO",
                          graceful_timeout=5, max_calls=10)
        pool.start()
        threading.Thread(target=stop_on_request, args=(pool,), daemon=True).start()
        print("PORT", pool.address[1], *pool.pids, flush=True)
        sys.exit(pool.serve_forever())
''')


@pytest.fixture
def workerapp(app_dir):
    (app_dir / "workerapp.py").write_text(WORKER_APP)
    return app_dir


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s: {what}", pytrace=False)
        gevent.sleep(0.02)
    return result


def pid_of_new_connection(port):
    with pb.PBClient("127.0.0.1", port, timeout=10) as client:
        return client.getRootObject().callRemote("pid")


def connections_to_every_worker(port, pids, timeout=20):
    """Open connections until one reaches each of ``pids``: {pid: (client, root)}."""
    reached = {}
    spare = []
    deadline = time.monotonic() + timeout
    try:
        while set(reached) != set(pids):
            if time.monotonic() > deadline:
                pytest.fail(f"connections reached only {sorted(reached)} of {sorted(pids)}")
            client = pb.PBClient("127.0.0.1", port, timeout=10)
            root = client.getRootObject()
            pid = root.callRemote("pid")
            if pid in reached:
                spare.append(client)
            else:
                reached[pid] = (client, root)
    finally:
        for client in spare:
            client.close()
    return reached


def test_two_workers_serve_one_port(serve, workerapp):
    server, port = serve("workerapp:Root", "--workers", "2")
    assert server.stdout.rstrip().endswith("(2 workers)")
    workers = children(server.pid)
    assert len(workers) == 2 and server.pid not in workers
    reached = connections_to_every_worker(port, workers)
    try:
        # many connections, all served, only ever by those two processes
        seen = {pid_of_new_connection(port) for _ in range(20)}
        assert seen <= workers
    finally:
        for client, _ in reached.values():
            client.close()


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(serve, workerapp):
    server, port = serve("workerapp:Root", "--workers", "2")
    workers = children(server.pid)
    reached = connections_to_every_worker(port, workers)
    victim, survivor = sorted(workers)
    try:
        os.kill(victim, signal.SIGKILL)
        # the connection to the other worker carries on
        assert reached[survivor][1].callRemote("pid") == survivor
        with pytest.raises((pb.PBConnectionLost, pb.DeadReferenceError)):
            reached[victim][1].callRemote("pid")
        # within a few seconds a new worker serves
        replacement = wait_for(lambda: children(server.pid) - workers, 10,
                               "no new worker started")
        wait_for(lambda: pid_of_new_connection(port) in replacement, 10,
                 "the new worker serves no connection")
        assert reached[survivor][1].callRemote("pid") == survivor
        assert re.search(rf"WARNING pbgreen.workers\[{server.pid}\]: worker \d \(pid {victim}\) "
                         r"was killed by SIGKILL", server.stderr), server.stderr
    finally:
        for client, _ in reached.values():
            client.close()


def test_a_worker_that_keeps_dying_quickly_waits_longer_each_time(serve, workerapp):
    server, port = serve("workerapp:Root", "--workers", "1")
    dead = set()
    for _ in range(3):
        pid = wait_for(lambda: children(server.pid) - dead, 10, "no worker running")
        pid = pid.pop()
        with pb.PBClient("127.0.0.1", port, timeout=10) as client:
            root = client.getRootObject()
            assert root.callRemote("pid") == pid
            root.callRemoteAsync("exit", 3)
            wait_for(lambda: not alive(pid), 10, "the worker did not exit")
        dead.add(pid)
    wait_for(lambda: children(server.pid) - dead, 10, "no worker after three deaths")
    pattern = (r"WARNING pbgreen.workers\[\d+\]: worker 1 \(pid \d+\) exited with status 3 "
               r"after [\d.]+ s; starting another (now|in [\d.]+ s)")
    server.wait_for(lambda text: len(re.findall(pattern, text)) == 3, stream="stderr",
                    timeout=10)
    delays = re.findall(pattern, server.stderr)
    assert delays == ["now", "in 0.5 s", "in 1 s"], server.stderr
    assert pid_of_new_connection(port) not in dead


def test_restart_delay_doubles_up_to_its_cap():
    from pbgreen.workers import MAX_BACKOFF, restart_delay
    assert [restart_delay(n) for n in range(1, 8)] == [0, 0.5, 1, 2, 4, 8, 16]
    assert restart_delay(8) == restart_delay(1000) == MAX_BACKOFF == 30


def sigterm_during_a_call(server, client, seconds):
    """Start a call of ``seconds``, SIGTERM the supervisor once it runs; its AsyncResult."""
    answer = client.getRootObject().callRemoteAsync("work", seconds)
    server.expect(r"^WORK STARTED \d+$", timeout=20)
    server.signal(signal.SIGTERM)
    return answer


def assert_all_gone(server, workers):
    assert "Traceback" not in server.stderr, server.stderr
    assert not [pid for pid in workers if alive(pid)]


def test_sigterm_lets_running_calls_finish_then_everything_exits(serve, workerapp):
    server, port = serve("workerapp:Root", "--workers", "2", "--graceful-timeout", "20")
    workers = children(server.pid)
    with pb.PBClient("127.0.0.1", port, timeout=10) as client:
        answer = sigterm_during_a_call(server, client, 1.5)
        assert answer.get(timeout=20) == "work done"
    assert server.wait(20) == 0
    assert_all_gone(server, workers)


def test_sigterm_to_the_whole_group_still_lets_running_calls_finish(serve, workerapp):
    """systemd's default KillMode=control-group signals every process at once."""
    server, port = serve("workerapp:Root", "--workers", "2", "--graceful-timeout", "20")
    workers = children(server.pid)
    with pb.PBClient("127.0.0.1", port, timeout=10) as client:
        answer = client.getRootObject().callRemoteAsync("work", 1.5)
        server.expect(r"^WORK STARTED \d+$", timeout=20)
        for pid in (*workers, server.pid):
            os.kill(pid, signal.SIGTERM)
        assert answer.get(timeout=20) == "work done"
    assert server.wait(20) == 0
    assert "again" not in server.stderr, server.stderr
    assert_all_gone(server, workers)


def test_a_second_sigterm_stops_at_once(serve, workerapp):
    server, port = serve("workerapp:Root", "--workers", "2", "--graceful-timeout", "60")
    workers = children(server.pid)
    with pb.PBClient("127.0.0.1", port, timeout=10) as client:
        answer = sigterm_during_a_call(server, client, 60)
        assert server.wait_for_text("SIGTERM: stopping 2 workers", stream="stderr", timeout=10)
        assert server.wait(0.5) is None, "the first SIGTERM did not wait for the running call"
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 1
        with pytest.raises(pb.PBConnectionLost):
            answer.get(timeout=10)
    assert_all_gone(server, workers)


def test_sigint_stops_the_workers_once(serve, workerapp):
    """Ctrl-C reaches the whole group; the workers leave it to the supervisor."""
    server, port = serve("workerapp:Root", "--workers", "2")
    workers = children(server.pid)
    for pid in (*workers, server.pid):  # as a terminal's Ctrl-C does
        os.kill(pid, signal.SIGINT)
    assert server.wait(20) == 0
    assert "again" not in server.stderr, server.stderr
    assert_all_gone(server, workers)


def test_workers_exit_when_the_supervisor_is_killed(serve, workerapp):
    server, port = serve("workerapp:Root", "--workers", "2")
    workers = children(server.pid)
    server.kill()
    wait_for(lambda: not [pid for pid in workers if alive(pid)], 15,
             "workers still running after their supervisor was killed")
    with pytest.raises(OSError):
        pid_of_new_connection(port)


def test_workers_0_is_one_per_cpu(serve, workerapp):
    server, port = serve("workerapp:Root", "--workers", "0")
    count = os.cpu_count()
    assert server.stdout.rstrip().endswith(f"({count} workers)")
    assert len(children(server.pid)) == count


def test_workers_with_proxy_protocol(serve, workerapp, proxy):
    server, port = serve("workerapp:Root", "--workers", "2", "--proxy-protocol")
    front = proxy(("127.0.0.1", port),
                  header=lambda address: b"PROXY TCP4 203.0.113.9 127.0.0.1 5151 8800\r\n")
    with pb.PBClient("127.0.0.1", front.port, timeout=10) as client:
        assert client.getRootObject().callRemote("peer") == ("203.0.113.9", 5151)
    # straight to the port, without a header: closed, with a warning in a worker's log
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
    assert server.wait_for_text("no PROXY protocol header", stream="stderr", timeout=10)


def test_workers_with_tls(serve, workerapp, certificate, client_context):
    cert, key = certificate
    server, port = serve("workerapp:Root", "--workers", "2", "--tls-cert", str(cert),
                         "--tls-key", str(key), "--max-connections", "5")
    assert server.stdout.rstrip().endswith("(TLS) (2 workers)")
    with pb.PBClient("127.0.0.1", port, timeout=10, ssl_context=client_context) as client:
        assert client.getRootObject().callRemote("pid") in children(server.pid)


def test_a_root_that_cannot_load_is_one_line(run_cli, workerapp):
    result = run_cli("serve", "workerapp:Nope", "--port", "0", "--workers", "3",
                     cwd=workerapp, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("pbgreen serve:")]
    assert lines == ["pbgreen serve: module 'workerapp' has no attribute 'Nope'"], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["SIGTERM", "stop() from another thread"])
def test_worker_pool_library_entry_point(workerapp, how):
    (workerapp / "poolscript.py").write_text(POOL_SCRIPT)
    with start([sys.executable, "poolscript.py"], ready=r"^PORT (\d+) (\d+) (\d+)$",
               cwd=workerapp, timeout=30) as supervisor:
        pids = {int(pid) for pid in supervisor.stdout.split()[2:4]}
        assert pids == children(supervisor.pid)
        reached = connections_to_every_worker(supervisor.port, pids)
        for client, _ in reached.values():
            client.close()
        if how == "SIGTERM":
            supervisor.signal(signal.SIGTERM)
        else:
            supervisor.send("stop\n")
        assert supervisor.wait(20) == 0
        assert_all_gone(supervisor, pids)
        # each worker stopped gracefully, with the pool's graceful_timeout
        stops = re.findall(r"INFO pbgreen.cli\[(\d+)\]: SIGTERM: stopping; running calls have "
                           r"up to 5 s", supervisor.stderr)
        assert {int(pid) for pid in stops} == pids, supervisor.stderr


def test_workers_usage_mistakes_are_one_line(run_cli, workerapp, one_line_error):
    one_line_error(run_cli("serve", "workerapp:Root", "--workers", "-1", cwd=workerapp),
                   "--workers", "0 (one per CPU) or more", "'-1'")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        one_line_error(run_cli("serve", "workerapp:Root", "--port", str(port), "--workers", "2",
                               cwd=workerapp),
                       f"cannot listen on 127.0.0.1:{port}", "Address already in use")
