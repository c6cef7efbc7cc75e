"""Paging (pbgreen.util) against Twisted's own twisted.spread.util, both directions.

* twisted_paging.py SCENARIO: a Twisted client calling
  ``twisted.spread.util.getAllPages`` on a pbgreen server whose methods
  answer with ``util.StringPager`` / ``util.FilePager`` / ``@util.paged``.
* twisted_paging.py serve: a Twisted server paging with Twisted's
  ``StringPager`` / ``FilePager``, read by pbgreen's ``util.getAllPages``
  and ``util.page_iter``.
"""

import hashlib
import io
import sys
from pathlib import Path

import pytest
from gevent.event import Event

import pbgreen as pb
from pbgreen import util
from pbgreen.testing.processes import start

SCRIPT = Path(__file__).resolve().parent / "twisted_paging.py"
SIZE = 1_000_003  # twisted_paging.SIZE


def pattern(size):
    """The bytes twisted_paging.py sends and expects (its own ``pattern``)."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def digest(pages):
    joined = b"".join(pages)
    return {"pages": len(pages), "bytes": len(joined),
            "sha256": hashlib.sha256(joined).hexdigest()}


def pages_of(size, chunk):
    return max(1, -(-size // chunk))


@pytest.fixture(scope="module")
def twisted_pager():
    """twisted_paging.py serve: a Twisted server paging with Twisted's pagers."""
    with start([sys.executable, str(SCRIPT), "serve"], timeout=20, cwd=SCRIPT.parent,
               grace=5) as child:
        yield child


# ===================================================================================
# Twisted getAllPages -> pbgreen pagers
# ===================================================================================


class PagingRoot(pb.Root):
    def __init__(self):
        self.callbacks = {}
        self.finished = Event()

    def _called_back(self, name):
        self.callbacks[name] = self.callbacks.get(name, 0) + 1
        if len(self.callbacks) == 4:
            self.finished.set()

    def remote_stringPages(self, collector, size, chunkSize):
        util.StringPager(collector, pattern(size), chunkSize, self._called_back, "string")

    def remote_filePages(self, collector, size):
        util.FilePager(collector, io.BytesIO(pattern(size)), self._called_back, "file")

    def remote_emptyString(self, collector):
        util.StringPager(collector, b"", 1000, self._called_back, "emptyString")

    def remote_emptyFile(self, collector):
        util.FilePager(collector, io.BytesIO(), self._called_back, "emptyFile")

    @util.paged
    def remote_generated(self, size, chunk):
        data = pattern(size)
        for offset in range(0, size, chunk):
            yield data[offset:offset + chunk]


def test_twisted_getAllPages_reads_pbgreen_string_and_file_pagers(serve_pbgreen, twisted_client):
    root = PagingRoot()
    server = serve_pbgreen(root)
    result = twisted_client("pagers", *server.address, script=SCRIPT).result()
    expected = digest([pattern(SIZE)])
    assert result["stringPages"] == {**expected, "pages": pages_of(SIZE, 1000)}
    assert result["filePages"] == {**expected, "pages": pages_of(SIZE, util.FILE_CHUNK_SIZE)}
    assert result["emptyString"] == {**digest([b""]), "pages": 1}  # one empty page, as Twisted
    assert result["emptyFile"] == {**digest([]), "pages": 0}
    assert root.finished.wait(10)
    assert root.callbacks == {"string": 1, "file": 1, "emptyString": 1, "emptyFile": 1}


def test_twisted_getAllPages_reads_a_paged_generator(serve_pbgreen, twisted_client):
    server = serve_pbgreen(PagingRoot())
    result = twisted_client("generated", *server.address, script=SCRIPT).result()
    assert result["generated"] == {**digest([pattern(SIZE)]), "pages": pages_of(SIZE, 4096)}


# ===================================================================================
# pbgreen getAllPages / page_iter -> Twisted pagers
# ===================================================================================


@pytest.fixture
def twisted_root(twisted_pager):
    client = pb.PBClient("127.0.0.1", twisted_pager.port, timeout=10)
    yield client.getRootObject()
    client.close()


def test_getAllPages_reads_twisted_string_pager(twisted_root):
    before = twisted_root.callRemote("callbacks")
    pages = util.getAllPages(twisted_root, "stringPages", SIZE, 3000)
    assert len(pages) == pages_of(SIZE, 3000)
    assert all(len(p) == 3000 for p in pages[:-1])
    assert b"".join(pages) == pattern(SIZE)
    assert twisted_root.callRemote("callbacks") == before + 1


def test_getAllPages_reads_twisted_file_pager(twisted_root):
    pages = util.getAllPages(twisted_root, "filePages", SIZE)
    assert len(pages) == pages_of(SIZE, 2 ** 14)  # Twisted's FileSender.CHUNK_SIZE
    assert b"".join(pages) == pattern(SIZE)


def test_page_iter_reads_twisted_file_pager(twisted_root):
    hashed = hashlib.sha256()
    count = 0
    for page in util.page_iter(twisted_root, "filePages", SIZE):
        hashed.update(page)
        count += 1
    assert count == pages_of(SIZE, 2 ** 14)
    assert hashed.digest() == hashlib.sha256(pattern(SIZE)).digest()


def test_getAllPages_raises_the_error_of_a_twisted_method_instead_of_waiting(twisted_root):
    # Twisted's own getAllPages would wait forever here: no pager, no endedPaging.
    with pytest.raises(ValueError, match="no pages for you") as caught:
        util.getAllPages(twisted_root, "raises")
    assert isinstance(caught.value, pb.CopiedFailure)
    assert twisted_root.callRemote("callbacks") >= 0  # the connection is still usable
