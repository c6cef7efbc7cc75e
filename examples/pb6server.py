#!/usr/bin/env python3
"""Two users, each with an avatar of their own (a port of Twisted's pb6server).

Usage: pb6server.py [PORT]    (default 8800; 0 picks a free port)

user1 (password pass1) and user2 (pass2) may log in; each login gets a new
MyPerspective named after its user. Run pb6client.py once per user.
"""
import sys

import pbgreen as pb


class MyPerspective(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_foo(self, arg):
        print(f"I am {self.name}: perspective_foo({arg}) called on {self}", flush=True)


class MyRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        if pb.IPerspective not in interfaces:
            raise NotImplementedError
        return pb.IPerspective, MyPerspective(avatarId.decode("utf-8")), lambda: None


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8800
    portal = pb.Portal(MyRealm())
    portal.registerChecker(pb.InMemoryPasswordChecker(user1=b"pass1", user2=b"pass2"))
    server = pb.PBServer(portal, port=port, host="127.0.0.1")
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
