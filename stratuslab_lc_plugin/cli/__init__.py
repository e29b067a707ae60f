"""The command line: ``stratuslab-lc`` (look at and drive StratusLab clouds, run the local
cloud or the demo) and ``stratus-copy-config`` (start a configuration file).

Laid out in :mod:`.program` (options, help, exit status), carried out in :mod:`.commands`,
shown by :mod:`.console` and :mod:`.rows`, failures reported by :mod:`.failures`; the demo
is :mod:`.demo`. Importing this package imports neither Libcloud nor rich.
"""

from stratuslab_lc_plugin.cli.program import copy_config_main, main

__all__ = ["main", "copy_config_main"]
