"""``python -m harness`` runs the ``harness`` command."""

import sys

from .cli import main

sys.exit(main())
