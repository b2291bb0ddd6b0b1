"""``python -m rdbench`` is the ``rdbench`` command."""

import sys

from rdbench.cli import main

sys.exit(main())
