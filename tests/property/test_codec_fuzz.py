"""A short run of the codec fuzz harness (``fuzz/codec_fuzz.py``): compiled vs pure Python.

The harness checks that ``pbgreen._ccodec.loads`` and ``pbgreen._pycodec.loads``
give the same outcome on mutated and truncated messages, that both encode
what they rebuilt to the same bytes, and that a ``banana.Decoder`` gives the
same expressions with either as its fast hook. Here it runs a few thousand
generated inputs through its pure-Python driver (no atheris needed); see
``fuzz/README.md`` for long and coverage-guided runs.
"""

from __future__ import annotations

import pytest

from pbgreen import plaincodec
from support import load_harness

fz = load_harness("codec_fuzz")

pytestmark = pytest.mark.skipif("compiled" not in plaincodec.implementations(),
                                reason="the C extension is not built here")


@pytest.mark.parametrize("seed", [1, 2])
def test_a_short_fuzz_run_finds_no_mismatch(seed):
    assert fz.run(3000, seed) == []


def test_the_harness_reports_a_mismatch(monkeypatch):
    """A codec that decides differently must be caught (the harness is not a no-op)."""
    data = bytes([1, 0, 0]) + plaincodec.python.dumps([b"answer", 1], ([1, 2],),
                                                      fz.banana.VOCAB_CODES)
    fz.check(data)
    monkeypatch.setattr(fz, "C", plaincodec.python.__class__("fake"))
    fz.C.loads = lambda *args: None
    fz.C.dumps_values = plaincodec.python.dumps_values
    with pytest.raises(fz.Mismatch):
        fz.check(data)
