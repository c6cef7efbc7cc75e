"""pbgreen: Twisted's Perspective Broker on gevent (work in progress)."""
__version__ = "0.1.0"
