"""One worker process of a ``WorkerPool`` (``pbgreen serve --workers``).

How it works. The supervisor starts ``python -m pbgreen._worker CONFIG``
(CONFIG is JSON) with three inherited file descriptors: the listening
socket, the write end of its ready pipe and the read end of the lifeline
pipe. The worker loads the root the same way ``pbgreen serve`` does, serves
on the inherited socket, writes one byte on the ready pipe, and then runs
until SIGTERM from the supervisor, or end-of-file on the lifeline (the
supervisor is gone, even by SIGKILL); either way it stops gracefully
(``PBServer.stop(timeout=graceful_timeout)``) and exits 0. Further SIGTERMs
change nothing: one sent to the whole process group (systemd's default
``KillMode=control-group``) arrives beside the supervisor's relayed one, and
the supervisor hurries a stop with SIGKILL instead. SIGINT is ignored: the
supervisor relays it.
A root that cannot be loaded is reported as one line on stderr, exit 2.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Sequence

from ._cli_args import WORKERS_LOG_FORMAT, _Fail
from ._cli_load import _load_root
from ._cli_serve import _configure_logging, _server_context, run_until_stopped


def main(argv: Sequence[str] | None = None) -> int:
    """Serve as one worker, as ``argv[0]`` (a JSON config) says; the exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = json.loads((sys.argv[1:] if argv is None else argv)[0])
    if config["log_level"]:
        _configure_logging(config["log_level"], WORKERS_LOG_FORMAT)
    if config["path"] and config["path"] not in sys.path:
        sys.path.insert(0, config["path"])
    try:
        context = _server_context(config["tls_cert"], config["tls_key"]) \
            if config["tls_cert"] else None
        root = _load_root(config["target"])
    except _Fail as exc:
        print(f"pbgreen serve: {exc}", file=sys.stderr, flush=True)
        return exc.status

    from gevent import socket

    from .server import PBServer

    listener = socket.socket(fileno=config["listen_fd"])
    server = PBServer(root, listener=listener, ssl_context=context, **config["options"])
    server.start()
    os.write(config["ready_fd"], b"1")
    os.close(config["ready_fd"])
    status = run_until_stopped(server, config["graceful_timeout"], (signal.SIGTERM,),
                                   lifeline_fd=config["lifeline_fd"],
                                   second_signal_hurries=False)
    logging.getLogger("pbgreen.workers").info("worker stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
