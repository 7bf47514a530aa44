"""``python -m bn3d``: the ``bn3d`` command."""

import sys

from .cli import main

sys.exit(main())
