"""Build shim: the metadata lives in pyproject.toml; this adds the optional C codec.

``pbgreen._ccodec`` is the compiled plain-data codec. It is optional: where
it cannot be built (no C compiler, no Python headers) the install still
succeeds and pbgreen uses the pure-Python codec (``pbgreen.plaincodec.COMPILED``
says which one is in use).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("pbgreen._ccodec", ["pbgreen/_ccodec.c"], optional=True)])
