"""``python -m pbgreen``: the same as the ``pbgreen`` command."""

import sys

from .cli import main

sys.exit(main())
