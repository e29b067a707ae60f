"""StratusLab driver for Apache Libcloud, registered with Libcloud through entry points.

This module is also the interpreter-start hook. The ``.pth`` file installed beside the
package imports it (``import stratuslab_lc_plugin``), the PEP 829 ``.start`` file names
:func:`install`, and importing it is enough to register the drivers where ``.pth`` files
are not processed (``python -S``, ``--target`` installs, frozen applications).

Importing it puts :class:`_ProvidersFinder` first on ``sys.meta_path``. The finder ignores
every import but ``libcloud.<type>.providers``, which it hands to
:mod:`stratuslab_lc_plugin.registry`: that module wraps the providers module's loader and
registers the entry-point drivers once the module has executed.

Every Python start pays for this module, so it is one module (a second one, to hold the
hook apart from the package, cost about 1 % more instructions of ``python -c pass``),
needs only ``sys`` at module level, and keeps no other module in its namespace (a
module-level ``import os`` cost another 1 %, spent clearing ``os`` at interpreter exit).
``bench/startup.py`` counts it.

PYTEST_DONT_REWRITE: the interpreter-start hook imports this package before pytest runs,
so pytest, which rewrites the packages of its plugins (ours is ``testing``), cannot rewrite
it and would say so in a warning in every test run of every user.
"""

import sys

__version__ = "0.1.0"

#: The provider name: ``get_driver(STRATUSLAB)``. ``Provider.STRATUSLAB`` is the same, as a
#: member of Libcloud's enum added at run time, which type checkers cannot see.
STRATUSLAB = "stratuslab"

#: Environment variable that turns automatic registration off ("1", "true", "yes", "on").
DISABLE_ENV = "STRATUSLAB_LC_PLUGIN_DISABLE"
# An attribute rather than isinstance(), so that a reloaded copy still recognises it.
_MARKER = "_stratuslab_lc_plugin_finder"


def disabled() -> bool:
    """Whether the environment turned automatic registration off."""
    import os

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


install()
