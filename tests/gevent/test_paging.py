"""pbgreen.util between pbgreen peers over real sockets: pagers, getAllPages, page_iter.

Flow control is checked through public measures only: the sending
connection's ``buffered`` (bytes queued for the peer), and how far the
sender's pages run ahead of what the receiving loop has read.
"""

from __future__ import annotations

import hashlib
import os

import gevent
import pytest
import zope.interface
from gevent.event import Event

import pbgreen as pb
from pbgreen import util
from pbgreen.testing.plugin import leftovers, snapshot

# A pager is at most this many pages ahead of the reader: the pages waiting
# for an answer, the reader's queue, the page being read, one being made.
MAX_LEAD = util.PAGES_IN_FLIGHT + util.PAGES_BUFFERED + 2


class CountingFilePager(util.FilePager):
    """A FilePager that records, before each page, what its connection has queued."""

    def __init__(self, collector, fd, callback=None, *args):
        self.sent = 0
        self.most_buffered = 0
        super().__init__(collector, fd, callback, *args)

    def sendNextPage(self):
        self.most_buffered = max(self.most_buffered, self.collector.broker.buffered)
        super().sendNextPage()
        self.sent += 1


class Source(pb.Root):
    def __init__(self):
        self.callbacks = 0
        self.done = Event()
        self.pager = None
        self.pulled = 0
        self.closed = Event()
        self.failure = None

    def _finished(self, *args):
        self.callbacks += 1
        self.args = args
        self.done.set()

    def remote_string(self, collector, data, chunk):
        util.StringPager(collector, data, chunk, self._finished, "a", "b")

    def remote_string_by_keyword(self, collector, data):  # the names API.md gives
        util.StringPager(collector, data=data, chunkSize=2, callback=self._finished)

    def remote_file(self, collector, path):
        fd = open(path, "rb")
        self.pager = CountingFilePager(collector, fd, self._close, fd)

    def _close(self, fd):
        fd.close()
        self._finished()

    def remote_raises(self, collector):
        raise pb.Error("nothing to page")

    def remote_custom(self, collector, count):
        source = self

        class Countdown(util.Pager):  # Twisted style: override nextPage, stopPaging at the end
            left = count

            def nextPage(self):
                self.left -= 1
                if self.left == 0:
                    self.stopPaging()
                return {"left": self.left}

        source.pager = Countdown(collector, source._finished)

    @util.paged
    def remote_numbers(self, limit=None):
        try:
            n = 0
            while limit is None or n < limit:
                self.pulled += 1
                yield n
                n += 1
        finally:
            self.closed.set()

    @util.paged
    def remote_failing(self, good):
        yield from range(good)
        raise KeyError("the source broke")

    @util.paged
    def remote_hangs_up(self):
        try:
            yield "first"
            self.conn.close()
            yield "never read"
        finally:
            self.closed.set()

    def remote_pages_from(self, ref, *args):
        """Read another peer's pager from the server side (the other direction)."""
        return util.getAllPages(ref, *args)

    def remote_no_pager(self, collector):
        return "answered, but pages nothing"

    def remote_bare_generator(self):
        return (i for i in range(3))


@pytest.fixture
def served(pb_server, pb_client):
    """serve(root=Source()) -> (root, the client's RemoteReference to it)."""

    def serve(root=None):
        root = root or Source()
        return root, pb_client(pb_server(root), timeout=10).getRootObject()

    return serve


def test_string_pager_sends_every_slice_then_runs_the_callback_once(served):
    source, root = served()
    data = bytes(range(256)) * 40 + b"tail"
    pages = util.getAllPages(root, "string", data, 1000)
    assert pages == [data[i:i + 1000] for i in range(0, len(data), 1000)]
    assert source.done.wait(5)
    assert source.callbacks == 1 and source.args == ("a", "b")


def test_an_empty_string_is_one_empty_page(served):
    _, root = served()
    assert util.getAllPages(root, "string", b"", 10) == [b""]
    assert util.getAllPages(root, "string", "text", 3) == ["tex", "t"]
    assert util.getAllPages(root, "string_by_keyword", b"abc") == [b"ab", b"c"]


def test_a_pager_subclass_with_its_own_nextPage(served):
    source, root = served()
    assert util.getAllPages(root, "custom", 3) == [{"left": 2}, {"left": 1}, {"left": 0}]
    assert source.pager.wait(5) and not source.pager.stillPaging()
    assert source.done.is_set()  # the callback ran before the pager ended


def test_getAllPages_raises_the_remote_methods_error(served):
    _, root = served()
    with pytest.raises(pb.Error, match="nothing to page"):
        util.getAllPages(root, "raises")
    assert util.getAllPages(root, "string", b"ok", 10) == [b"ok"]  # the connection is fine


def test_50_mb_file_to_a_slow_reader_keeps_the_sender_a_few_pages_ahead(served, tmp_path):
    path = tmp_path / "big"
    block = os.urandom(1 << 20)
    expected = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(50):
            chunk = block[i:] + block[:i]  # 50 different megabytes
            f.write(chunk)
            expected.update(chunk)
    source, root = served()
    received = hashlib.sha256()
    read = lead = 0
    for page in util.page_iter(root, "file", str(path)):
        received.update(page)
        read += 1
        lead = max(lead, source.pager.sent - read)
        if read % 16 == 0:
            gevent.sleep(0.001)  # a slow reader: the pager runs as far ahead as it may
    assert received.hexdigest() == expected.hexdigest()
    assert read == 50 * (1 << 20) // util.FILE_CHUNK_SIZE
    assert source.done.wait(5) and source.callbacks == 1
    assert lead <= MAX_LEAD
    # Bytes ever queued for the peer: a few pages (plus framing), never the file.
    assert source.pager.most_buffered <= util.PAGES_IN_FLIGHT * (util.FILE_CHUNK_SIZE + 64)


def test_page_iter_pulls_from_a_generator_only_as_the_reader_reads(served):
    source, root = served()
    seen = []
    for n in util.page_iter(root, "numbers", 200):
        seen.append(n)
        assert source.pulled - len(seen) <= MAX_LEAD
        gevent.sleep(0.0005)  # give the sender every chance to run ahead
    assert seen == list(range(200))
    assert source.closed.wait(5)


def test_breaking_out_of_page_iter_stops_the_sender_and_closes_its_generator(served):
    source, root = served()
    for n in util.page_iter(root, "numbers"):  # an endless generator
        if n == 2:
            break
    assert source.closed.wait(5), "the generator was not closed"
    assert source.pulled <= 3 + MAX_LEAD
    assert util.getAllPages(root, "numbers", 3) == [0, 1, 2]  # the connection goes on


def test_a_generator_that_fails_to_close_still_gets_the_callback_run(served, caplog):
    stopped = Event()

    def stubborn():
        try:
            yield from range(1000)
        finally:
            raise RuntimeError("cannot close")

    class Stubborn(Source):
        def remote_stubborn(self, collector):
            util.IteratorPager(collector, stubborn(), stopped.set)

    _, root = served(Stubborn())
    with util.page_iter(root, "stubborn") as pages:
        assert next(pages) == 0
    assert stopped.wait(5)
    assert "closing the source of pages" in caplog.text


def test_closing_page_iter_stops_the_sender(served):
    source, root = served()
    with util.page_iter(root, "numbers") as pages:
        assert next(pages) == 0
    assert source.closed.wait(5)
    with pytest.raises(StopIteration):
        next(pages)


def test_a_generator_that_raises_raises_PagingFailed_in_the_reader(served):
    _, root = served()
    pages = util.page_iter(root, "failing", 3)
    assert [next(pages) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(util.PagingFailed, match="KeyError") as caught:
        next(pages)
    assert caught.value.remoteType == "builtins.KeyError"
    with pytest.raises(util.PagingFailed):
        util.getAllPages(root, "failing", 2)


def test_a_lost_connection_ends_page_iter_with_PBConnectionLost(served):
    class HangUp(Source):
        def remote_hangs_up(self, collector):
            self.conn = collector.broker
            return Source.remote_hangs_up(self, collector)

    source = HangUp()
    _, root = served(source)
    pages = util.page_iter(root, "hangs_up")
    assert next(pages) == "first"
    with pytest.raises(pb.PBConnectionLost):
        next(pages)
    assert source.closed.wait(5)


def test_a_timeout_around_next_closes_the_iterator(served):
    _, root = served()
    pages = util.page_iter(root, "no_pager")  # answers, never pages: waits like Twisted
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.2):
            next(pages)
    with pytest.raises(StopIteration):
        next(pages)
    assert util.getAllPages(root, "numbers", 2) == [0, 1]


def test_the_server_can_read_a_clients_pager(served):
    _, root = served()

    class Uploader(pb.Referenceable):
        @util.paged
        def remote_chunks(self, n):
            return (b"%d" % i for i in range(n))

    assert root.callRemote("pages_from", Uploader(), "chunks", 5) == [b"0", b"1", b"2", b"3",
                                                                       b"4"]


def test_a_pager_whose_answers_outlast_call_timeout_fails_the_readers_pages(
        pb_server, pb_client):
    gave_up, read = Event(), Event()
    outcome = []

    class Uploader(pb.Referenceable):
        def remote_chunks(self, collector):
            util.IteratorPager(collector, iter(range(1000)), gave_up.set)

    class Reader(pb.Root):
        def remote_upload(self, uploader):
            pages = util.page_iter(uploader, "chunks")
            first = next(pages)
            assert gave_up.wait(5), "the client's pager never stopped"
            try:
                for _ in pages:
                    pass
                outcome.extend([first, "ended without an error"])
            except util.PagingFailed as error:
                outcome.extend([first, error.remoteType])
            read.set()

    client = pb_client(pb_server(Reader()), timeout=10, call_timeout=0.3)
    # The reader stops reading after one page; the client's held pages time out.
    # (No answer asked for: the upload itself takes longer than call_timeout.)
    client.getRootObject().callRemote("upload", Uploader(), pbanswer=False)
    assert read.wait(10)
    assert outcome == [0, "pbgreen.errors.CallTimeout"]


def test_a_remote_method_returning_a_bare_generator_is_still_refused(served):
    _, root = served()
    with pytest.raises(pb.InsecureJelly, match="util.paged"):
        root.callRemote("bare_generator")
    assert util.getAllPages(root, "numbers", 1) == [0]


def test_callback_page_collector_collects_then_calls_back(served):
    _, root = served()
    got = []
    ended = Event()

    def callback(pages):
        got.append(list(pages))
        ended.set()

    root.callRemote("string", util.CallbackPageCollector(callback), b"abcde", 2)
    assert ended.wait(5)
    assert got == [[b"ab", b"cd", b"e"]]


# --- local stand-ins ------------------------------------------------------------------


class Local(util.LocalAsRemote):
    reportAllTracebacks = False

    def sync_add(self, a, b):
        return a + b

    def async_fail(self):
        raise ValueError("local failure")


def test_local_as_remote_calls_sync_then_async_methods():
    local = Local()
    assert local.callRemote("add", 2, 3) == 5
    assert local.remoteMethod("add")(1, 1) == 2
    with pytest.raises(ValueError, match="local failure"):
        local.callRemote("fail")
    with pytest.raises(AttributeError):
        local.callRemote("missing")
    assert local.callRemoteAsync("add", 1, 2).get(timeout=1) == 3
    with pytest.raises(ValueError):
        local.callRemoteAsync("fail").get(timeout=1)


class IGreeter(zope.interface.Interface):
    def greet(name):
        """Say hello."""


@zope.interface.implementer(IGreeter)
class Greeter:
    def greet(self, name):
        return f"hello {name}"

    def secret(self):
        return "not in the interface"


def test_local_async_forwarder_forwards_the_interface_only():
    forwarder = util.LocalAsyncForwarder(Greeter(), IGreeter)
    assert forwarder.callRemote("greet", "bob") == "hello bob"
    assert forwarder.callRemote("secret") is None
    strict = util.LocalAsyncForwarder(Greeter(), IGreeter, failWhenNotImplemented=True)
    with pytest.raises(NotImplementedError, match="secret"):
        strict.callRemote("secret")
    with pytest.raises(TypeError):
        util.LocalAsyncForwarder(object(), IGreeter)

    class Plain:  # a plain class as the interface
        def greet(self, name):
            raise NotImplementedError

    class Impl(Plain):
        def greet(self, name):
            return name.upper()

        def other(self):
            return 1

    plain = util.LocalAsyncForwarder(Impl(), Plain, failWhenNotImplemented=True)
    assert plain.callRemote("greet", "x") == "X"
    with pytest.raises(NotImplementedError):
        plain.callRemote("other")


def test_a_reader_that_stops_reading_holds_the_sender_until_its_connection_goes(
        pb_server, pb_client, wait_until):
    source = Source()
    server = pb_server(source)
    before = snapshot()
    client = pb_client(server, timeout=10)
    pages = util.page_iter(client.getRootObject(), "numbers")  # endless; read once, then not
    assert next(pages) == 0
    wait_until(lambda: source.pulled >= util.PAGES_BUFFERED)
    gevent.sleep(0.05)  # the sender had every chance to run further ahead
    assert source.pulled <= MAX_LEAD
    client.close()
    assert source.closed.wait(5)
    # The answers the reader held are let go: no greenlet stays blocked in them.
    assert leftovers(before, deadline=3) == []
    with pytest.raises(pb.PBConnectionLost):
        for _ in pages:  # what was queued, then the loss
            pass
