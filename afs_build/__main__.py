"""``python -m afs_build`` is the ``afs`` command."""

import sys

from .cli import main

sys.exit(main())
