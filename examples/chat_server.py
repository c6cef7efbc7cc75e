#!/usr/bin/env python3
"""A chat room behind a login: perspectives, avatars and minds, server side.

Usage: chat_server.py [PORT]    (default 8800; 0 picks a free port)

Two users may log in: alice (password wonderland) and bob (password
builder). Login goes through a pb.Portal, as in twisted.cred: the checker
knows the passwords (which never cross the wire: PB login is a challenge
and a hashed response), and the realm makes each user a Member avatar. A
client calls the avatar's perspective_say(text) and perspective_who().

At login the client hands over a *mind* (login's client= argument, a
pb.Referenceable on its side). The room pushes every message to every
member's mind with mind.callRemote("receive", sender, text), and says who
joined and left. Logging out -- the client dropping its avatar or just
disconnecting -- runs the realm's logout once, which leaves the room.
"""
import sys

import gevent

import pbgreen as pb

DELIVERY_TIMEOUT = 10.0  # seconds a member's client has to take a message


class Member(pb.Avatar):
    """One logged-in user: what the client's avatar reference calls."""

    def __init__(self, name, mind, room):
        self.name = name
        self.mind = mind
        self.room = room

    def perspective_say(self, text):
        """Send `text` to everyone; returns once every member has it."""
        self.room.send(self.name, str(text))

    def perspective_who(self):
        """The names of the members, sorted."""
        return self.room.names()


class Room:
    def __init__(self):
        self.members = []

    def names(self):
        return sorted(member.name for member in self.members)

    def join(self, member):
        self.members.append(member)
        print(f"{member.name} joined; in the room: {', '.join(self.names())}", flush=True)
        self.announce("joined", member)

    def leave(self, member):
        if member not in self.members:
            return
        self.members.remove(member)
        print(f"{member.name} left; in the room: {', '.join(self.names()) or 'nobody'}",
              flush=True)
        self.announce("left", member)

    def announce(self, what, member):
        """Tell the other members; nobody waits for these (pbanswer=False)."""
        for other in list(self.members):
            if other is not member:
                try:
                    other.mind.callRemote(what, member.name, pbanswer=False)
                except pb.DeadReferenceError:
                    pass  # its logout is on the way

    def send(self, sender, text):
        print(f"<{sender}> {text}", flush=True)
        # Send to everyone at once, then wait for each answer: one slow
        # client does not hold up the others.
        deliveries = []
        for member in list(self.members):
            try:
                deliveries.append((member, member.mind.callRemoteAsync("receive", sender, text)))
            except pb.DeadReferenceError:
                pass  # disconnected: its logout leaves the room
        for member, delivery in deliveries:
            try:
                delivery.get(timeout=DELIVERY_TIMEOUT)
            except (pb.PBConnectionLost, pb.DeadReferenceError):
                pass
            except gevent.Timeout:
                print(f"{member.name} did not take a message within {DELIVERY_TIMEOUT} s",
                      flush=True)


class ChatRealm:
    """Makes a Member for each login (satisfies pb.IRealm)."""

    def __init__(self, room):
        self.room = room

    def requestAvatar(self, avatarId, mind, *interfaces):
        assert pb.IPerspective in interfaces
        if mind is None:
            raise pb.Error("log in with a mind (client=...) to hear the room")
        member = Member(avatarId.decode("utf-8"), mind, self.room)
        self.room.join(member)
        return pb.IPerspective, member, lambda: self.room.leave(member)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8800
    checker = pb.InMemoryPasswordChecker(alice=b"wonderland")
    checker.addUser(b"bob", b"builder")
    portal = pb.Portal(ChatRealm(Room()), [checker])
    server = pb.PBServer(portal, port=port, host="127.0.0.1")
    server.start()
    print("listening on", server.address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
