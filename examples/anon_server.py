#!/usr/bin/env python3
"""Anonymous and named logins to one server (a port of Twisted's pbAnonServer).

Usage: anon_server.py [PORT]    (default 8800; 0 picks a free port)

The portal has two checkers: a password checker for user1/pass1 and
user2/pass2, and one that lets anonymous users in. Either way the realm
hands out a MyPerspective; an anonymous user's is called "Anonymous".

What changed from Twisted's listing: no zope `@implementer` (any object
with `requestAvatar` is a realm), passwords are bytes, the checker is
`pb.InMemoryPasswordChecker`, logging is the standard library's, and
`pb.PBServer` replaces `listenTCP` + `reactor.run()`.
"""
import logging
import sys

import pbgreen as pb


class MyPerspective(pb.Avatar):
    """What every successful login gets; `name` is the user, or "Anonymous"."""

    def __init__(self, name):
        self.name = name

    def perspective_foo(self, arg):
        print(f"I am {self.name}.  perspective_foo({arg}) called on {self}.", flush=True)


class MyRealm:
    """Makes a MyPerspective for a named user and for an anonymous one."""

    def requestAvatar(self, avatarId, mind, *interfaces):
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("MyRealm only hands out pb.IPerspective avatars")
        # The avatar id is the username as bytes, or pb.ANONYMOUS.
        name = "Anonymous" if avatarId is pb.ANONYMOUS else avatarId.decode("utf-8")
        return pb.IPerspective, MyPerspective(name), lambda: None


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8800
    portal = pb.Portal(MyRealm(), [
        pb.InMemoryPasswordChecker(user1=b"pass1", user2=b"pass2"),   # named users
        pb.AllowAnonymousAccess(),                                    # and anonymous ones
    ])
    server = pb.PBServer(portal, port=port, host="127.0.0.1")
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
