"""``python -m stratuslab_lc_plugin.cli``: the ``stratuslab-lc`` command."""

import sys

from stratuslab_lc_plugin.cli.program import main

sys.exit(main())
