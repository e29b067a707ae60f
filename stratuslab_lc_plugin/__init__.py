"""StratusLab driver for Apache Libcloud, registered with Libcloud through entry points.

Importing the package is cheap (stdlib only) and is enough to register the drivers where
``.pth`` files are not processed (``python -S``, ``--target`` installs, frozen apps).

PYTEST_DONT_REWRITE: the interpreter-start hook imports this package before pytest runs,
so pytest, which rewrites the packages of its plugins (ours is ``testing``), cannot rewrite
it and would say so in a warning in every test run of every user.
"""

from stratuslab_lc_plugin import autoload as _autoload

__version__ = "0.1.0"

_autoload.install()
