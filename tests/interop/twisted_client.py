"""A real Twisted PB client: the peer for pbgreen's server-side interop tests.

Usage: python twisted_client.py SCENARIO HOST PORT

Connects with ``pb.PBClientFactory``, runs one scenario against the root
object and prints its results as one JSON line on stdout, then exits 0.
On any failure (including the scenario's own deadline) it prints the reason
on stderr and exits 1.

The scenarios only use root methods that twisted_server.py also implements,
so each one can be checked Twisted-to-Twisted first.
"""

import gc
import sys

from twisted.internet import defer, reactor, task
from twisted.spread import flavors, jelly, pb

import interop_values
from twisted_common import (Checker, MyError, Point, RemoteCounter, describe_point,
                            run_scenario)

DEADLINE = 20.0  # seconds for a whole scenario


class Pinger(pb.Referenceable):
    def __init__(self, root=None):
        self.root = root
        self.calls = []

    def remote_ping(self, value):
        self.calls.append(value)
        if self.root is not None:
            # Re-entrant: call the server back while the server is itself
            # waiting for this answer.
            return self.root.callRemote("add", value, 1)
        return value * 2


def outcome(d):
    """A Deferred firing with ("ok", result) or ("err", failure).

    inlineCallbacks would turn a CopiedFailure into a RemoteError and lose
    check(); this keeps the real Failure object.
    """
    return d.addCallbacks(lambda r: ("ok", r), lambda f: ("err", f))


def failure_report(f):
    return {
        "type": repr(f.type),
        "message": f.getErrorMessage(),
        "is_copied": isinstance(f, pb.CopiedFailure),
    }


@defer.inlineCallbacks
def poll(check, deadline=10.0, interval=0.02):
    """Call check() (may return a Deferred) until it is true or time is up."""
    end = reactor.seconds() + deadline
    while True:
        if (yield check()):
            return True
        if reactor.seconds() > end:
            return False
        yield task.deferLater(reactor, interval, lambda: None)


# --- scenarios ----------------------------------------------------------------


@defer.inlineCallbacks
def scenario_echo(root):
    pairs = []
    for name, value in interop_values.basic_values():
        result = yield root.callRemote("echo", value)
        pairs.append((name, [[value], {}], result))
    # Everything at once, positionally and as keywords.
    values = interop_values.basic_values()
    args = [v for _, v in values]
    kwargs = {name: v for name, v in values}
    result = yield root.callRemote("echo", *args, **kwargs)
    pairs.append(("all_at_once", [args, kwargs], result))

    # Shared and cyclic structure inside one argument.
    shared = [1]
    cyclic = [shared, shared]
    cyclic.append(cyclic)
    (echoed,), _ = yield root.callRemote("echo", cyclic)
    return {
        "checked": len(pairs),
        "mismatches": interop_values.mismatches(pairs),
        "shared_identity": echoed[0] is echoed[1],
        "cycle_identity": echoed[2] is echoed,
        "shared_value": echoed[0] == [1],
    }


@defer.inlineCallbacks
def scenario_args(root):
    added = yield root.callRemote("add", 1, 2, c=3)
    echoed = yield root.callRemote("echo", 1, "a", k=b"v", other=None)
    return {
        "add": added,
        "echo_same": interop_values.same(
            echoed, [[1, "a"], {"k": b"v", "other": None}]
        ),
        "echo_repr": repr(echoed),
    }


@defer.inlineCallbacks
def scenario_noanswer(root):
    # answerRequired = 0: the callee runs the method and sends nothing back,
    # not even for an error. A stray answer or error for an unknown request
    # id would make this Twisted client drop the connection.
    first = root.callRemote("note", "one", pbanswer=False)
    second = root.callRemote("raiseAndNote", "two", pbanswer=False)
    notes = yield root.callRemote("notes")
    after = yield root.callRemote("add", 1, 2)
    return {
        "first": repr(first),  # callRemote(pbanswer=False) returns None
        "second": repr(second),
        "notes": notes,
        "after": after,
    }


@defer.inlineCallbacks
def scenario_limits(root):
    # Exactly at Twisted's 640 KiB limits, both ways.
    big_bytes = b"x" * 655360
    big_str = "\u00e9" * (655360 // 2)
    big_list = [0] * 655359  # plus the 'list' tag: 655360 elements
    (got_bytes,), _ = yield root.callRemote("echo", big_bytes)
    (got_str,), _ = yield root.callRemote("echo", big_str)
    (got_list,), _ = yield root.callRemote("echo", big_list)
    return {
        "bytes": got_bytes == big_bytes,
        "str": got_str == big_str,
        "list": got_list == big_list,
    }


@defer.inlineCallbacks
def scenario_refs(root):
    ref = yield root.callRemote("getRef")
    hello = yield ref.callRemote("hello", "bob")
    is_child = yield root.callRemote("isChild", ref)
    refs = yield root.callRemote("getTwoRefs")
    hellos = []
    for r in refs:
        hellos.append((yield r.callRemote("hello", "x")))
    both_child = []
    for r in refs:
        both_child.append((yield root.callRemote("isChild", r)))
    return {
        "is_remote_reference": isinstance(ref, pb.RemoteReference),
        "hello": hello,
        "is_child": is_child,
        "two_refs": len(refs),
        "two_refs_remote": all(isinstance(r, pb.RemoteReference) for r in refs),
        "two_hellos": hellos,
        "two_refs_are_child": both_child,
    }


@defer.inlineCallbacks
def scenario_callback(root):
    broker = root.broker
    table_before = len(broker.localObjects)
    pinger = Pinger()
    answer = yield root.callRemote("callback", pinger, 21)
    # The server drops its reference to the pinger when its method is
    # done: the decref must bring our table back.
    # (Each poll is a round trip, so a peer that only flushes queued decrefs
    # with its next write gets the chance to.)
    table_restored = yield poll(
        lambda: root.callRemote("add", 0, 0).addCallback(
            lambda _: len(broker.localObjects) == table_before
        )
    )

    # A reference to our own object handed back comes back as the object.
    keeper = Pinger()
    returned = yield root.callRemote("keepAndReturn", keeper)
    released = yield root.callRemote("releaseKept")

    # The same when the callee does not keep it: Twisted (as callee) decrefs
    # the argument before it writes the answer, so the answer's
    # ['local', luid] names a freed luid and arrives as None. pbgreen (WIRE
    # 4.3) decrefs argument references only after the answer is written.
    passed = Pinger()
    returned_unkept = yield root.callRemote("returnIt", passed)
    return {
        "answer": answer,
        "pings": pinger.calls,
        "table_before": table_before,
        "table_restored": table_restored,
        "returned_is_original": returned is keeper,
        "returned_unkept": (
            "original" if returned_unkept is passed else repr(returned_unkept)
        ),
        "released": released,
    }


@defer.inlineCallbacks
def scenario_reentrant(root):
    pinger = Pinger(root)
    answer = yield root.callRemote("callback", pinger, 20)
    return {"answer": answer, "pings": pinger.calls}


@defer.inlineCallbacks
def scenario_decref(root):
    index, ref = yield root.callRemote("makeFresh")
    alive_while_held = yield root.callRemote("freshAlive", index)
    hello = yield ref.callRemote("hello", "one")
    del ref
    gc.collect()
    freed = yield poll(
        lambda: root.callRemote("freshAlive", index).addCallback(lambda a: not a)
    )

    # The same object twice in one answer: two references, two decrefs;
    # the object must live until the second one is gone.
    index2, refs = yield root.callRemote("makeFreshTwice")
    first, second = refs
    del refs, first
    gc.collect()
    alive_with_one_left = yield root.callRemote("freshAlive", index2)
    hello_second = yield outcome(second.callRemote("hello", "two"))
    if hello_second[0] == "err":
        hello_second = ("err", failure_report(hello_second[1]))
    del second
    gc.collect()
    freed2 = yield poll(
        lambda: root.callRemote("freshAlive", index2).addCallback(lambda a: not a)
    )
    return {
        "alive_while_held": alive_while_held,
        "hello": hello,
        "freed": freed,
        "alive_with_one_left": alive_with_one_left,
        "hello_second": list(hello_second),
        "freed_after_both": freed2,
    }


@defer.inlineCallbacks
def scenario_errors(root):
    report = {}

    kind, f = yield outcome(root.callRemote("raiseMyError"))
    report["myerror"] = dict(
        failure_report(f),
        kind=kind,
        check_own_class=f.check(MyError) is MyError,
        check_pb_error=f.check(pb.Error) is pb.Error,
        check_exception=f.check(Exception) is Exception,
        check_unrelated=f.check(KeyError) is None,
    )

    kind, f = yield outcome(root.callRemote("raisePlain"))
    report["plain"] = dict(
        failure_report(f),
        kind=kind,
        check_value_error=f.check(ValueError) is ValueError,
        check_exception=f.check(Exception) is Exception,
        not_pb_error=f.check(pb.Error) is None,
    )

    kind, f = yield outcome(root.callRemote("nosuch", 1))
    report["nosuch"] = dict(
        failure_report(f),
        kind=kind,
        check_no_such_method=f.check(flavors.NoSuchMethod) is flavors.NoSuchMethod,
        check_attribute_error=f.check(AttributeError) is AttributeError,
    )

    # Something pbgreen's security refuses in the arguments.
    kind, f = yield outcome(root.callRemote("echo", Unregistered()))
    report["insecure"] = dict(
        failure_report(f),
        kind=kind,
        check_insecure_jelly=f.check(jelly.InsecureJelly) is jelly.InsecureJelly,
    )

    # Errors do not break the connection.
    report["add_after_errors"] = yield root.callRemote("add", 2, 3)
    return report


class Unregistered(pb.Copyable):
    """A Copyable nobody registered on the receiving side."""

    def __init__(self):
        self.x = 1


@defer.inlineCallbacks
def scenario_concurrent(root):
    waits = [outcome(root.callRemote("waitRelease", i)) for i in range(5)]
    released = yield root.callRemote("release", 5)
    results = yield defer.gatherResults(waits)
    return {
        "released": released,
        "results": [r if kind == "ok" else repr(r) for kind, r in results],
    }


@defer.inlineCallbacks
def scenario_hang(root):
    kind, f = yield outcome(root.callRemote("hang"))
    report = {"kind": kind}
    if kind == "err":
        report.update(
            failure_report(f),
            connection_lost=f.check(pb.PBConnectionLost) is pb.PBConnectionLost,
        )
    try:
        root.callRemote("add", 1, 2)
    except pb.DeadReferenceError:
        report["after"] = "DeadReferenceError"
    else:
        report["after"] = "no error"
    return report


# --- copies and caches (interop_shapes.*) -----------------------------------------

# Caches the cache_hold scenario keeps until the process exits.
KEPT = []


@defer.inlineCallbacks
def scenario_copy(root):
    sent = Point(1, 2)
    described = yield root.callRemote("describePoint", sent)
    got = yield root.callRemote("getPoint", 3, 4)
    mine = Point(5, 6)
    returned = yield root.callRemote("returnIt", mine)
    two = yield root.callRemote("getTwoPoints")
    shared = Point(7, 8)
    sent_two = yield root.callRemote("describeTwo", [shared, shared])
    return {
        "described": described,
        "got": describe_point(got),
        "got_state": vars(got),
        "returned": describe_point(returned),
        "returned_is_copy": returned is not mine,
        "two_same": two[0] is two[1],
        "two": describe_point(two[0]),
        "sent_two": sent_two,
        "after": (yield root.callRemote("add", 1, 2)),
    }


def stats_match(root, predicate):
    return lambda: root.callRemote("counterStats").addCallback(predicate)


@defer.inlineCallbacks
def scenario_cache(root):
    report = {}
    c = yield root.callRemote("getCounter")
    report["is_remote_cache"] = isinstance(c, RemoteCounter)
    report["initial_state"] = c.initial_state
    report["stats_initial"] = yield root.callRemote("counterStats")

    report["set_answer"] = yield root.callRemote("setCounter", 4)
    report["updated"] = yield poll(lambda: c.value == 4)
    report["updates"] = list(c.updates)

    again = yield root.callRemote("getCounter")  # ['cached', id]
    report["again_is_remote_cache"] = isinstance(again, RemoteCounter)
    report["again_value"] = again.value
    report["again_shares_state"] = again.__dict__ is c.__dict__
    report["again_is_first"] = again is c

    # lcache: our handles go back to the owner as its own object.
    report["is_counter"] = yield root.callRemote("isCounter", c)
    report["is_counter_again"] = yield root.callRemote("isCounter", again)
    report["stats_held"] = yield root.callRemote("counterStats")

    # Two handles, two decaches: one dropped, the owner still observes.
    del c
    gc.collect()
    report["stats_one_dropped"] = yield root.callRemote("counterStats")
    del again
    gc.collect()
    report["stopped"] = yield poll(stats_match(root, lambda s: s["stopped"] == 1))
    report["stats_dropped"] = yield root.callRemote("counterStats")

    # Cached anew after the release: the current state, and observed again.
    fresh = yield root.callRemote("getCounter")
    report["fresh_state"] = fresh.initial_state
    report["stats_fresh"] = yield root.callRemote("counterStats")
    yield root.callRemote("setCounter", 5)
    report["fresh_updated"] = yield poll(lambda: fresh.value == 5)
    del fresh
    gc.collect()
    report["fresh_stopped"] = yield poll(stats_match(root, lambda s: s["stopped"] == 2))
    report["after"] = yield root.callRemote("add", 1, 2)
    return report


@defer.inlineCallbacks
def scenario_cache_twice(root):
    # The same Cacheable twice in one answer: one object, one count, one
    # decache.
    pair = yield root.callRemote("getCounterTwice")
    report = {
        "same": pair[0] is pair[1],
        "is_remote_cache": isinstance(pair[0], RemoteCounter),
        "value": pair[0].value,
        "both_counter": [],
    }
    for c in pair:
        report["both_counter"].append((yield root.callRemote("isCounter", c)))
    del c
    report["stats_held"] = yield root.callRemote("counterStats")
    del pair
    gc.collect()
    report["stopped"] = yield poll(stats_match(root, lambda s: s["stopped"] == 1))
    report["stats_dropped"] = yield root.callRemote("counterStats")
    report["after"] = yield root.callRemote("add", 1, 2)
    return report


@defer.inlineCallbacks
def scenario_cache_order(root):
    report = {}
    c = yield root.callRemote("getCounter")
    # The owner pushes an update, then calls us: the update comes first.
    report["checked"] = yield root.callRemote("setAndCheck", 11, Checker(c))
    report["updates"] = list(c.updates)

    # An observe_ method that does not answer does not hold up the owner.
    answers = []
    d = root.callRemote("pushHang")
    d.addBoth(answers.append)
    report["hang_arrived"] = yield poll(lambda: len(c.hung) == 1)
    report["answered_while_hung"] = yield poll(lambda: bool(answers), deadline=5)
    for h in c.hung:
        h.callback("late")
    yield poll(lambda: bool(answers))
    report["hang_answer"] = [
        a if isinstance(a, str) else repr(a) for a in answers
    ]

    # An observe_ method we lack: the owner gets an error answer.
    report["unknown"] = yield root.callRemote("pushUnknown")

    # Updates still flow afterwards, in order.
    yield root.callRemote("setCounter", 12)
    yield root.callRemote("setCounter", 13)
    report["updated"] = yield poll(lambda: c.value == 13)
    report["all_updates"] = list(c.updates)
    report["after"] = yield root.callRemote("add", 1, 2)
    return report


@defer.inlineCallbacks
def scenario_cache_hold(root):
    # Keep two handles until the connection goes: the owner must stop
    # observing once, on disconnect.
    c = yield root.callRemote("getCounter")
    again = yield root.callRemote("getCounter")
    KEPT.extend([c, again])
    return {
        "value": c.value,
        "stats_held": (yield root.callRemote("counterStats")),
    }


@defer.inlineCallbacks
def scenario_cache_fanout(root):
    # Hold the Counter; the owner pushes a series of updates to every holder
    # at once and ends with "end". Report what arrived, in order, as reprs.
    c = yield root.callRemote("getCounter")
    KEPT.append(c)
    ended = yield poll(lambda: c.updates[-1:] == ["end"], deadline=15)
    return {"ended": ended, "updates": [repr(u) for u in c.updates]}


SCENARIOS = {
    name[len("scenario_"):]: func
    for name, func in list(globals().items())
    if name.startswith("scenario_")
}


# --- driver -------------------------------------------------------------------


def main(argv):
    if len(argv) != 4 or argv[1] not in SCENARIOS:
        sys.stderr.write(
            "usage: twisted_client.py {%s} HOST PORT\n" % ",".join(sorted(SCENARIOS))
        )
        return 2
    scenario, host, port = argv[1], argv[2], int(argv[3])
    factory = pb.PBClientFactory()
    reactor.connectTCP(host, port, factory, timeout=10)
    d = factory.getRootObject()
    d.addCallback(SCENARIOS[scenario])
    return run_scenario(factory, d, scenario, DEADLINE)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
