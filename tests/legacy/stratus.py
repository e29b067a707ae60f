"""Run one original ``stratus-*`` command (StratusLab client 14.06, Python 2.7) unchanged.

Usage: ``python2.7 stratus.py stratus-describe-instance -c FILE ...``

The command scripts live in the ``bin`` directory of the ``pip install --target`` tree
that is on PYTHONPATH; their ``#!`` line names whichever interpreter installed them, so
they are run here, as ``__main__``, by the interpreter running this file. Reverse DNS is
answered from /etc/hosts only (see :mod:`offline_resolver`).
"""

from __future__ import print_function

import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import offline_resolver  # noqa: E402


def find_command(name):
    for entry in sys.path:
        candidate = os.path.join(entry, "bin", name)
        if entry and os.path.isfile(candidate):
            return candidate
    raise SystemExit("stratus.py: %s not found in a bin/ directory beside PYTHONPATH" % name)


def main():
    if len(sys.argv) < 2 or not sys.argv[1].startswith("stratus-"):
        raise SystemExit("usage: stratus.py stratus-COMMAND [ARGS...]")
    path = find_command(sys.argv[1])
    offline_resolver.install()
    sys.argv = [path] + sys.argv[2:]
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main()
