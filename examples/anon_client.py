#!/usr/bin/env python3
"""Log in anonymously and by name, both at once (a port of Twisted's pbAnonClient).

Usage: anon_client.py [HOST [PORT [USER PASSWORD]]]    (default localhost 8800 user1 pass1)

Runs against anon_server.py (or Twisted's pbAnonServer). Both logins share
one connection and run side by side, each in a greenlet of its own, where
Twisted's listing used two Deferreds and gatherResults. Each one calls
foo(13) on the perspective it got. A refused login is reported on stderr
and the script exits 1.
"""
import sys

import gevent

import pbgreen as pb


def log_in_and_call_foo(client, credentials, label):
    """One login and one call; what went wrong, or None."""
    try:
        perspective = client.login(credentials)
    except (pb.UnauthorizedLogin, pb.UnhandledCredentials):
        return f"{label} login refused"
    print(f"{label}: got perspective ref: {perspective}", flush=True)
    print(f"{label}: asking it to foo(13)", flush=True)
    perspective.callRemote("foo", 13)
    return None


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    user, password = sys.argv[3:5] if len(sys.argv) > 4 else ("user1", "pass1")
    named = pb.UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
    with pb.PBClient(host, port) as client:
        logins = [
            gevent.spawn(log_in_and_call_foo, client, pb.Anonymous(), "anonymous"),
            gevent.spawn(log_in_and_call_foo, client, named, user),
        ]
        gevent.joinall(logins, raise_error=True)   # anything unexpected is raised here
    refusals = [login.value for login in logins if login.value]
    for refusal in refusals:
        print(refusal, file=sys.stderr)
    return 1 if refusals else 0


if __name__ == "__main__":
    sys.exit(main())
