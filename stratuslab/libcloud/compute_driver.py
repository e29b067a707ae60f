"""The module path of the StratusLab 14.06 Libcloud driver, kept for scripts written for it.

14.06 scripts start with ``import stratuslab.libcloud.compute_driver`` and a ``set_driver``
line; both keep working, and this module offers the 14.06 classes. New code needs neither:
``get_driver('stratuslab')`` finds the driver by itself.

``stratuslab`` and ``stratuslab.libcloud`` are namespace packages here (PEP 420: no
``__init__.py``), so another distribution's ``stratuslab`` modules live beside this one.
"""

import sys
import warnings
from types import FrameType
from typing import Optional

from stratuslab_lc_plugin.driver import StratusLabNode, StratusLabNodeDriver, StratusLabNodeSize

__all__ = ["StratusLabNodeDriver", "StratusLabNode", "StratusLabNodeSize"]


def _importer_depth() -> int:
    """The stacklevel of the code that imported this module, past importlib's own frames."""
    depth = 1
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        depth += 1
        frame = frame.f_back
    return depth + 1


warnings.warn(
    "stratuslab.libcloud.compute_driver is the module of the StratusLab 14.06 driver. With "
    "stratuslab-lc-plugin installed, write: from libcloud.compute.providers import get_driver; "
    "cls = get_driver('stratuslab') (no set_driver line is needed), or import StratusLabNodeDriver "
    "from stratuslab_lc_plugin.driver.",
    DeprecationWarning,
    stacklevel=_importer_depth(),
)
