#!/usr/bin/env python3
"""A chat room behind a login, client side: log in with a mind, talk, listen.

Usage: chat_client.py HOST PORT USER PASSWORD [--wait-for NAME] [--listen SECONDS]
                      [MESSAGE ...]

Logs in to chat_server.py as USER, handing the server a *mind* (a
pb.Referenceable whose remote_receive the room calls for every message),
says each MESSAGE, prints everything it hears, and leaves once it has heard
its own messages and, for each --wait-for NAME, at least one message from
NAME. With --wait-for it also waits for NAME to be in the room before
saying anything, so two clients started together hear each other. With
--listen SECONDS it then stays in the room that long, printing what it
hears, before it leaves. Gives up
after --deadline seconds (default 20) and exits 1; a refused login or an
unreachable server also exits 1, with the reason on stderr.

The server calls the mind while this script is blocked in its own
avatar.callRemote("say", ...): each incoming call runs in a greenlet of
its own, so nothing here waits on anything but the answers it wants.

How a plain script waits. Messages (calls to the mind) arrive only while
this script waits cooperatively: in a callRemote, an Event.wait (as
wait_until does, to wait for something in particular), or gevent.sleep
(to wait for a time, as --listen does). time.sleep would block the whole
process: no message would arrive until it returned.
"""
import argparse
import sys
import time

import gevent
import gevent.event

import pbgreen as pb


class Listener(pb.Referenceable):
    """The mind: the room calls these while we are logged in."""

    def __init__(self):
        self.heard = []  # (sender, text), in order
        self.seen = set()  # everyone we have known to be in the room
        self._changed = gevent.event.Event()

    def remote_receive(self, sender, text):
        print(f"<{sender}> {text}", flush=True)
        self.heard.append((sender, text))
        self._changed.set()

    def remote_joined(self, name):
        print(f"* {name} joined", flush=True)
        self.seen.add(name)
        self._changed.set()

    def remote_left(self, name):
        print(f"* {name} left", flush=True)
        self._changed.set()

    def wait_until(self, predicate, deadline):
        """Wait until predicate() holds or time.monotonic() passes deadline."""
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            self._changed.wait(remaining)
        return True


def parse(argv):
    parser = argparse.ArgumentParser(description="Log in to chat_server.py and talk.")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("user")
    parser.add_argument("password")
    parser.add_argument("messages", nargs="*", metavar="MESSAGE")
    parser.add_argument("--wait-for", action="append", default=[], metavar="NAME",
                        help="wait for NAME to join before talking, and for a message "
                             "from NAME before leaving")
    parser.add_argument("--deadline", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--listen", type=float, default=0.0, metavar="SECONDS",
                        help="then stay in the room this long, printing what is said")
    return parser.parse_intermixed_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    deadline = time.monotonic() + args.deadline
    listener = Listener()
    try:
        client = pb.PBClient(args.host, args.port, timeout=10)
    except OSError as reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    with client:
        credentials = pb.UsernamePassword(args.user.encode(), args.password.encode())
        try:
            avatar = client.login(credentials, client=listener)
        except pb.UnauthorizedLogin:
            print(f"login refused: wrong user name or password for {args.user!r}",
                  file=sys.stderr)
            return 1
        who = avatar.callRemote("who")
        listener.seen.update(who)
        print(f"logged in as {args.user}; in the room: {', '.join(who)}", flush=True)

        waited = set(args.wait_for)
        if not listener.wait_until(lambda: waited <= listener.seen, deadline):
            missing = ", ".join(sorted(waited - listener.seen))
            print(f"gave up: {missing} did not join within {args.deadline} s", file=sys.stderr)
            return 1

        for text in args.messages:
            avatar.callRemote("say", text)  # returns once every member has it

        def heard_enough():
            mine = [text for sender, text in listener.heard if sender == args.user]
            speakers = {sender for sender, _ in listener.heard}
            return mine[:len(args.messages)] == args.messages and waited <= speakers

        if not listener.wait_until(heard_enough, deadline):
            print(f"gave up: did not hear everything expected within {args.deadline} s",
                  file=sys.stderr)
            return 1

        if args.listen > 0:
            # gevent.sleep, not time.sleep: the room's calls to the listener
            # keep arriving (and are printed) while this script waits.
            gevent.sleep(args.listen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
