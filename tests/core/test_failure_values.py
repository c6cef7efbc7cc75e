"""Failures as values and pb.RemoteError, in the sans-I/O core.

The bytes come from Twisted's own jelly and banana (a Twisted ``Broker``
serializing ``pb.CopyableFailure``), fed straight into pbgreen's broker.
"""

from __future__ import annotations

import pytest
from twisted.python.failure import Failure
from twisted.spread import banana as tbanana
from twisted.spread import jelly as tjelly
from twisted.spread import pb as tpb

import pbgreen as pb
from pbgreen import banana, dispatch, errors, flavors
from pbgreen.events import Reply
from pbgreen.jelly import jelly, unjelly
from pbgreen.testing.pump import drive, pair


class Boom(flavors.Root):
    def remote_boom(self):
        raise ValueError("plain failure")


def twisted_pair(root, **server_options):
    """A pbgreen client and server speaking Twisted's dialect, calls run as they come."""
    return pair(root=root, on_event=drive, dialects=(b"pb", b"none"),
                server_options=server_options)


def call(p, method, *args):
    """Call ``method`` on the root; the answer, or the error raised."""
    request = dispatch.send_call(p.client, b"root", method, args, {}, None, True)
    (reply,) = [e for e in p.pump().client if type(e) is Reply and e.request_id == request]
    value = dispatch.read_reply(p.client, reply, None)
    if not reply.ok or isinstance(value, pb.CopiedFailure):
        raise value
    return value


def twisted_failure(exc: BaseException) -> Failure:
    try:
        raise exc
    except BaseException:
        return Failure()


def twisted_sexp(value):
    """What a connected Twisted broker writes for ``value``."""
    return tpb.Broker().serialize(value)


class Taker(flavors.Root):
    def __init__(self):
        self.got = []

    def remote_take(self, *args, **kwargs):
        self.got.append((args, kwargs))
        return "taken"

    def remote_giveFailures(self):
        return [pb.CopyableFailure(KeyError("k")), {"x": (pb.CopyableFailure(ValueError("v")),)}]

    def remote_returnFailure(self):
        return pb.CopyableFailure(ZeroDivisionError("returned"))


def assert_copied(value, type_name, message):
    assert isinstance(value, pb.CopiedFailure), value
    assert value.type == type_name and type(value.type) is str
    assert value.getErrorMessage() == message
    assert value.remoteTraceback == "Traceback unavailable\n"


def test_a_twisted_copyable_failure_anywhere_in_the_arguments_arrives_as_copied_failure():
    root = Taker()
    p = twisted_pair(root)
    f = twisted_failure(ValueError("bad job"))
    args = twisted_sexp((tpb.CopyableFailure(f),
                         [1, tpb.CopyableFailure(twisted_failure(KeyError("deep")))],
                         {"k": (tpb.CopyableFailure(f),)}))
    kwargs = twisted_sexp({"why": tpb.CopyableFailure(twisted_failure(tpb.Error("expected")))})
    p.deliver("C>S", tbanana.encode([b"message", 7, b"root", b"take", 1, args, kwargs]))
    answer = banana.decode(p.server.data_to_send())
    assert answer == [b"answer", 7, [b"unicode", b"taken"]]  # the caller is answered
    assert len(root.got) == 1, "the method ran once"
    (top, in_list, in_dict), kw = root.got[0]
    assert_copied(top, "builtins.ValueError", "bad job")
    assert isinstance(top, ValueError)  # a builtin: also an instance of the local class
    assert top.check(ValueError) is ValueError and top.check(KeyError) is None
    assert top.trap(ValueError) is ValueError
    with pytest.raises(pb.CopiedFailure):
        top.trap(KeyError)
    assert in_list[0] == 1
    assert_copied(in_list[1], "builtins.KeyError", "'deep'")
    assert_copied(in_dict["k"][0], "builtins.ValueError", "bad job")
    assert_copied(kw["why"], "twisted.spread.pb.Error", "expected")
    assert isinstance(kw["why"], pb.Error)  # Twisted's pb.Error is pbgreen's


def test_the_same_twisted_failure_twice_is_one_object():
    cf = tpb.CopyableFailure(twisted_failure(ValueError("once")))
    value = unjelly(twisted_sexp([cf, cf]))
    assert value[0] is value[1]
    assert_copied(value[0], "builtins.ValueError", "once")


def test_only_copyable_failure_passes_without_registration():
    state = twisted_sexp(tpb.CopyableFailure(twisted_failure(ValueError("x"))))[1]
    with pytest.raises(pb.InsecureJelly, match="refused instance of 'twisted.spread.pb.Other'"):
        unjelly([b"twisted.spread.pb.Other", state])
    with pytest.raises(pb.InsecureJelly, match="not a dictionary"):
        unjelly([b"twisted.spread.pb.CopyableFailure", [b"list", 1]])
    with pytest.raises(pb.InsecureJelly, match="malformed failure"):
        unjelly([b"twisted.spread.pb.CopyableFailure", state, state])


def test_pbgreen_copyable_failure_is_what_twisted_reads_as_copied_failure():
    sexp = jelly([pb.CopyableFailure(KeyError("gone")), {"e": pb.CopyableFailure(pb.Error("e"))}])
    # Twisted's unjelly with its own registration (CopyableFailure -> CopiedFailure)
    value = tjelly.unjelly(sexp)
    first, second = value[0], value[1]["e"]
    assert isinstance(first, tpb.CopiedFailure) and isinstance(second, tpb.CopiedFailure)
    assert first.type == b"builtins.KeyError" and first.getErrorMessage() == "'gone'"
    assert first.check("builtins.KeyError") and first.check("builtins.LookupError")
    assert second.check(tpb.Error)  # our parents name Twisted's pb.Error


def test_copyable_failure_passes_on_a_copied_failure_with_its_remote_type():
    received = unjelly(twisted_sexp(tpb.CopyableFailure(twisted_failure(OSError("disk")))))
    again = unjelly(jelly(pb.CopyableFailure(received)))
    assert_copied(again, "builtins.OSError", "disk")
    assert again.parents == received.parents
    with pytest.raises(TypeError, match="exception instance"):
        pb.CopyableFailure("not an exception")


def test_an_exception_sent_bare_says_to_wrap_it():
    with pytest.raises(pb.InsecureJelly, match=r"pb.CopyableFailure\(exc\)"):
        jelly([ValueError("bare")])


def test_failures_in_an_answer_and_a_returned_failure_is_an_error():
    p = twisted_pair(Taker())
    answer = call(p, "giveFailures")
    assert_copied(answer[0], "builtins.KeyError", "'k'")
    assert_copied(answer[1]["x"][0], "builtins.ValueError", "v")
    del p.wire[:]
    with pytest.raises(ZeroDivisionError) as info:
        call(p, "returnFailure")
    assert_copied(info.value, "builtins.ZeroDivisionError", "returned")
    assert banana.decode(p.wire[1][1])[0] == b"error"  # on the wire: an error answer


def test_a_twisted_answer_that_is_a_failure_fails_the_call():
    # A Twisted method that returns a CopyableFailure sends it as an *answer*;
    # Twisted's caller sees its Deferred fail, pbgreen's callRemote raises.
    p = twisted_pair(Taker())
    request = dispatch.send_call(p.client, b"root", "take", (), {}, None, True)
    p.server.data_to_send()  # the call is not delivered: we answer as Twisted would
    payload = twisted_sexp(tpb.CopyableFailure(twisted_failure(KeyError("as answer"))))
    (reply,) = p.deliver("S>C", tbanana.encode([b"answer", request, payload]))
    assert reply.ok
    value = dispatch.read_reply(p.client, reply, None)
    assert_copied(value, "builtins.KeyError", "'as answer'")


def test_remote_error_has_twisteds_remote_type_and_traceback():
    p = twisted_pair(Boom(), unsafe_tracebacks=True)
    with pytest.raises(pb.RemoteError) as info:
        call(p, "boom")
    e = info.value
    assert isinstance(e, pb.CopiedFailure) and isinstance(e, ValueError)
    assert e.remoteType == "builtins.ValueError"
    assert e.remoteType == b"builtins.ValueError"  # Twisted's remoteType is bytes
    assert e.remoteType != "builtins.KeyError" and e.remoteType != b"builtins.KeyError"
    assert "remote_boom" in e.remoteTraceback
    assert str(e) == "plain failure"
    direct = pb.RemoteError(b"mod.Err", "text", "tb")  # Twisted's constructor
    assert direct.remoteType == "mod.Err" and str(direct) == "text"
    assert direct.remoteTraceback == "tb"


def test_twisted_remote_error_name_maps_to_pb_remote_error():
    payload = twisted_sexp(tpb.CopyableFailure(twisted_failure(
        tpb.RemoteError("x.Y", "wrapped", "tb"))))
    from pbgreen._failure import failure_from
    exc = failure_from(payload)
    assert isinstance(exc, pb.RemoteError) and exc.remoteType == "twisted.spread.pb.RemoteError"
    assert errors.copied_failure_class(pb.RemoteError) is pb.CopiedFailure


class Report(pb.Copyable):
    def __init__(self, outcome):
        self.outcome = outcome

    def getTypeToCopy(self):
        return "failvalues.Report"


class ReportCopy(pb.RemoteCopy):
    pass


class TwistedReport(tpb.Copyable):
    def __init__(self, outcome):
        self.outcome = outcome

    def getTypeToCopy(self):
        return b"failvalues.Report"


def test_a_failure_inside_a_copys_state_both_ways():
    security = pb.SecurityOptions()
    security.setUnjellyableForClass("failvalues.Report", ReportCopy)
    ours = Report({"job": pb.CopyableFailure(IndexError("gone"))})
    p = pair(root=None, on_event=drive, dialects=(b"pb", b"none"), security=security)
    body = dispatch.prepare(p.client, (ours,), None)  # jellied over a real broker
    sent = banana.decode(body.body)
    built = unjelly(sent, security=security)
    assert isinstance(built, ReportCopy)
    assert_copied(built.outcome["job"], "builtins.IndexError", "gone")
    # Twisted reads the same bytes: a copy whose state holds its CopiedFailure
    tjelly.setUnjellyableForClass("failvalues.Report", tpb.RemoteCopy)
    theirs = tjelly.unjelly(sent)
    assert isinstance(theirs.outcome["job"], tpb.CopiedFailure)
    # ... and what Twisted sends arrives here the same way
    incoming = twisted_sexp(TwistedReport([tpb.CopyableFailure(twisted_failure(OSError("io")))]))
    built = unjelly(incoming, security=security)
    assert_copied(built.outcome[0], "builtins.OSError", "io")
