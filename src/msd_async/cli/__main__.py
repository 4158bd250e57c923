"""``python -m msd_async.cli``: the same as ``msd``."""

import sys

from . import main

sys.exit(main())
