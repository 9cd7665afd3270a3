"""``python -m mnd.cli``: the same as the ``mnd`` command."""

import sys

from mnd.cli.main import main

sys.exit(main())
