"""Run one of Twisted's PB listings (next to this file) as a test peer.

Usage: run_listing.py LISTING.py [PORT]

Twisted's listings cannot run as they are in a test, for two reasons, and
this runner changes exactly those two things, and adds one observation:

* **Ports.** They listen on and connect to a fixed port (8800). The runner
  replaces the reactor's ``listenTCP`` and ``connectTCP`` before the listing
  runs: a server listens on 127.0.0.1 port 0 (a free port the kernel picks)
  and prints ``listening on PORT`` on the real stdout; a client connects to
  127.0.0.1 at the PORT given on the command line, whatever it asks for.
* **Credentials.** They spell usernames and passwords as ``str``
  (``"user1"``, ``"pass1"``). On Python 3, Twisted hashes passwords as bytes
  and fails (``TypeError: Strings must be encoded before hashing``), so the
  runner turns those string literals into bytes literals (``b"pass1"``), as
  docs/porting.md (step 2) tells a porter to. A listing that has credentials
  but no such literal stops the runner: the fix must never silently miss.
* **Answers** (observed, not changed): each answer to a ``callRemote`` the
  listing makes is announced as ``answered NAME`` on the real stdout, so a
  test can wait for it before stopping a client that never stops itself
  (stopping it earlier would fail the call in flight).

The listing runs as ``__main__`` with its own file name, as if started
directly.
"""

import re
import sys

from twisted.internet import reactor
from twisted.spread import pb

CREDENTIAL_LITERAL = re.compile(r'(?<![\w.])"((?:user|pass)\d)"')


def main() -> None:
    listing, port = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None
    with open(listing) as source:
        text = source.read()
    text, fixed = CREDENTIAL_LITERAL.subn(r'b"\1"', text)
    if fixed == 0 and re.search(r"UsernamePassword\(|DontUse\(", text):
        sys.exit(f"{listing}: credentials found but no str literal to make bytes")

    real_stdout = sys.stdout          # the listing may redirect stdout into Twisted's log
    real_listen, real_connect = reactor.listenTCP, reactor.connectTCP

    def listen_on_a_free_port(_port, factory, backlog=50, interface=""):
        listening = real_listen(0, factory, backlog, "127.0.0.1")
        print(f"listening on {listening.getHost().port}", file=real_stdout, flush=True)
        return listening

    def connect_to_the_test_port(_host, _port, factory, timeout=30, bindAddress=None):
        if port is None:
            sys.exit("run_listing.py: a client listing needs the PORT to connect to")
        return real_connect("127.0.0.1", port, factory, timeout, bindAddress)

    real_call_remote = pb.RemoteReference.callRemote

    def call_remote_and_announce(self, _name, *args, **kw):
        def announce(result):
            print(f"answered {_name}", file=real_stdout, flush=True)
            return result
        return real_call_remote(self, _name, *args, **kw).addCallback(announce)

    pb.RemoteReference.callRemote = call_remote_and_announce
    reactor.listenTCP = listen_on_a_free_port
    reactor.connectTCP = connect_to_the_test_port
    sys.argv = [listing]
    exec(compile(text, listing, "exec"), {"__name__": "__main__", "__file__": listing})


if __name__ == "__main__":
    main()
