#!/usr/bin/env python3
"""Log in as one user and call your avatar (a port of Twisted's pb6client1 and pb6client2).

Usage: pb6client.py [HOST [PORT [USER PASSWORD NUMBER]]]
       (default localhost 8800 user1 pass1 13; Twisted's pb6client2 is
       `pb6client.py localhost 8800 user2 pass2 14`)

Twisted's two listings differ only in the user and the number, so here they
are one script with arguments. Unlike them, it exits when it is done: the
call returns once the server has run perspective_foo. A refused login
exits 1 with the reason on stderr.
"""
import sys

import pbgreen as pb


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8800
    user, password, number = sys.argv[3:6] if len(sys.argv) > 5 else ("user1", "pass1", "13")
    with pb.PBClient(host, port) as client:
        try:
            perspective = client.login(pb.UsernamePassword(user.encode(), password.encode()))
        except pb.UnauthorizedLogin:
            print(f"login refused for {user}", file=sys.stderr)
            return 1
        print(f"got perspective ref for {user}: {perspective}")
        print(f"asking it to foo({number})")
        perspective.callRemote("foo", int(number))
    return 0


if __name__ == "__main__":
    sys.exit(main())
