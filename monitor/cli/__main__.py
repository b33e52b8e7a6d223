"""``python -m monitor.cli``: the same as the ``margin-monitor`` command."""

import sys

from monitor.cli import main

sys.exit(main())
