"""``python -m estkit``."""

import sys

from estkit.cli.main import main

sys.exit(main())
