"""Interpreter-start hook run by the ``.pth``/``.start`` files; tiny: imports sys and os only.

:func:`install` puts a finder first on ``sys.meta_path`` that hands ``libcloud.<type>.providers``
imports to :mod:`stratuslab_lc_plugin.registry` (which registers entry-point drivers once the
module has executed) and ignores every other import.
"""

import os
import sys

#: Environment variable that turns automatic registration off ("1", "true", "yes", "on").
DISABLE_ENV = "STRATUSLAB_LC_PLUGIN_DISABLE"
# An attribute rather than isinstance(), so that a reloaded copy still recognises it.
_MARKER = "_stratuslab_lc_plugin_finder"


def disabled() -> bool:
    """Whether the environment turned automatic registration off."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _ProvidersFinder:
    _stratuslab_lc_plugin_finder = True

    def find_spec(self, fullname, path=None, target=None):
        if not (fullname.startswith("libcloud.") and fullname.endswith(".providers")) or disabled():
            return None
        try:
            from stratuslab_lc_plugin import registry

            return registry.find_providers_spec(fullname, path, target)
        except Exception:  # never stand in the way of importing Libcloud
            return None


def installed() -> bool:
    """Whether the finder is on ``sys.meta_path``."""
    return any(getattr(finder, _MARKER, False) for finder in sys.meta_path)


def install() -> bool:
    """Register entry-point drivers with Libcloud, now and on import. Idempotent; never raises.

    (Virtual environments may run ``.pth`` lines twice.) Returns False when disabled or on failure.
    """
    try:
        if disabled():
            return False
        if not installed():
            sys.meta_path.insert(0, _ProvidersFinder())
        if "libcloud" in sys.modules:
            from stratuslab_lc_plugin import registry

            registry.register_imported()
        return True
    except Exception:
        return False


def uninstall() -> None:
    """Remove the finder; registrations already made stay."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not getattr(finder, _MARKER, False)]
