"""``python -m flipper_control.cli``: the same as the ``flipper`` command."""

import sys

from flipper_control.cli import main

sys.exit(main())
