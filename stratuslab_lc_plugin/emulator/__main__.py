"""``python -m stratuslab_lc_plugin.emulator``: the same as ``stratuslab-lc cloud serve``."""

import sys

from .cloud import serve_main

if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))
