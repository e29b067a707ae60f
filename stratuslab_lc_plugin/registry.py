"""Entry-point drivers -> Libcloud provider tables, without importing the drivers.

Libcloud finds drivers only in the ``DRIVERS`` dict of ``libcloud.<type>.providers``
(``<type>`` is compute, storage, dns, loadbalancer, container or backup), as
``name -> (module, class)`` pairs that its ``get_driver`` imports on first use. This module
fills those dicts from the entry-point groups ``libcloud.<type>.drivers``::

    [options.entry_points]
    libcloud.compute.drivers =
        stratuslab = stratuslab_lc_plugin.driver:StratusLabNodeDriver

Entry points are listed through stevedore without loading them
(``ExtensionManager.make_test_instance([], namespace=group).list_entry_points()``; the
normal constructor would import every plugin), so registering costs a metadata scan, not a
driver import. The finder that importing :mod:`stratuslab_lc_plugin` installs hands each
``libcloud.<type>.providers`` import to :func:`find_providers_spec`, whose loader wrapper
calls :func:`register_providers_module` right after the module has executed; tools can call
:func:`register` and :func:`available_drivers` themselves.

Rules, applied per type in the order importlib.metadata lists distributions (the order of
``sys.path``):

* Libcloud's own names always win, compared case-insensitively (retired names that
  Libcloud still answers with an error count as Libcloud's too): the entry point is
  ``shadowed-by-builtin``.
* The first entry point for a name wins; a later one with another target is
  ``shadowed-by-plugin``; a later identical one (same name, same target) is ignored quietly.
* An entry point whose name or ``module:Class`` target is not usable, or whose module
  cannot be found (checked without importing it), is ``malformed``.
* Every entry point that is not registered is logged as a warning, once per process.
* A registered name ``foo`` also becomes a member ``Provider.FOO`` (value ``'foo'``) of
  that type's ``Provider`` enum when the name is free (:func:`add_provider_member`), so
  ``get_driver(Provider.FOO)``, ``Provider['FOO']``, ``Provider('foo')`` and iterating
  ``Provider`` work as for Libcloud's own providers.

Old scripts
-----------
StratusLab's 14.06 driver told users to write::

    set_driver('stratuslab', 'stratuslab.libcloud.compute_driver', 'StratusLabNodeDriver')

With the name registered automatically, Libcloud's ``set_driver`` would raise a bare
``AttributeError: Provider stratuslab already registered`` (and without this plugin, an
ImportError for a Python 2 package). Of the two friendly choices, keeping the line working
is the better one: the scripts that contain it are exactly the ones we want to run
unchanged. So, for the providers modules where this registry registered a plugin, the
module attribute ``set_driver`` is replaced by a thin wrapper (:func:`_make_set_driver`)
that changes behaviour only for names registered from entry points:

* the entry point's own ``module, class`` or a former path listed in
  :data:`LEGACY_TARGETS` -> no-op returning the registered class (what ``set_driver``
  returns), with a :class:`DeprecationWarning` saying the line can be deleted;
* any other ``module, class`` for such a name -> :class:`ProviderAlreadyRegisteredError`
  (an ``AttributeError``, as before) that names the plugin and the way out.

Every other call goes to Libcloud's own function untouched, ``libcloud.common.providers``
is not modified, and the original stays reachable as ``set_driver.__wrapped__``.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import warnings
from dataclasses import asdict, dataclass, replace
from enum import EnumMeta
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence

__all__ = [
    "DRIVER_TYPES",
    "LEGACY_TARGETS",
    "MALFORMED",
    "REGISTERED",
    "SHADOWED_BY_BUILTIN",
    "SHADOWED_BY_PLUGIN",
    "UNREGISTERED",
    "DriverRecord",
    "PluginEntry",
    "ProviderAlreadyRegisteredError",
    "add_provider_member",
    "available_drivers",
    "entry_point_group",
    "register",
    "register_providers_module",
]

LOG = logging.getLogger(__name__)

#: Libcloud's driver types, each with a ``libcloud.<type>.providers`` table.
DRIVER_TYPES: tuple[str, ...] = ("compute", "storage", "dns", "loadbalancer", "container", "backup")

#: Statuses of a :class:`DriverRecord`.
REGISTERED = "registered"
SHADOWED_BY_BUILTIN = "shadowed-by-builtin"
SHADOWED_BY_PLUGIN = "shadowed-by-plugin"
MALFORMED = "malformed"
#: Would be registered, but is not in ``DRIVERS`` (automatic registration turned off).
UNREGISTERED = "unregistered"

#: ``(type, name) -> targets`` that earlier releases told users to pass to ``set_driver``;
#: such calls become no-ops (see "Old scripts" above).
LEGACY_TARGETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("compute", "stratuslab"): ("stratuslab.libcloud.compute_driver:StratusLabNodeDriver",),
}

_NAME = re.compile(r"^\w[\w.+-]*$")
_TARGET = re.compile(
    r"^\s*(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*:\s*(?P<attr>[A-Za-z_]\w*)\s*(?:\[[^\]]*\])?\s*$"
)
_WRAPPED = "_stratuslab_lc_plugin_set_driver"


def entry_point_group(driver_type: str) -> str:
    """The entry-point group of a driver type: ``libcloud.<type>.drivers``."""
    return f"libcloud.{driver_type}.drivers"


@dataclass(frozen=True)
class DriverRecord:
    """What became of one entry point offered to Libcloud."""

    type: str  #: driver type, e.g. ``"compute"``
    name: str  #: provider name, e.g. ``"stratuslab"``
    target: str  #: ``module:attr`` as declared
    distribution: Optional[str]  #: distribution declaring it (None if unknown)
    version: Optional[str]  #: version of that distribution
    status: str  #: REGISTERED, SHADOWED_BY_BUILTIN, SHADOWED_BY_PLUGIN, MALFORMED or UNREGISTERED
    reason: str = ""  #: why it is not registered, or a note

    @property
    def group(self) -> str:
        return entry_point_group(self.type)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PluginEntry(tuple):
    """A ``(module, class)`` pair in ``DRIVERS`` that came from an entry point.

    Libcloud unpacks and compares it as the plain tuple it is; the subclass only lets this
    module tell its own registrations from Libcloud's.
    """

    __slots__ = ()

    def __new__(cls, pair: Iterable[str]) -> "PluginEntry":
        return super().__new__(cls, pair)


class ProviderAlreadyRegisteredError(AttributeError):
    """``set_driver`` tried to replace a driver registered from an entry point."""


class _Decision(NamedTuple):
    record: DriverRecord
    entry: Optional[PluginEntry]  # set when the record wins its name


# -- discovery ---------------------------------------------------------------------------

def _entry_points(group: str) -> list:
    from stevedore.extension import ExtensionManager

    return list(ExtensionManager.make_test_instance([], namespace=group).list_entry_points())


def _module_findable(module_name: str) -> bool:
    """Whether ``module_name`` can be imported, judged without importing it or its parents."""
    if module_name in sys.modules:
        return True
    import importlib.machinery
    import importlib.util

    parts = module_name.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return False
    for index in range(1, len(parts)):
        if spec is None:
            return False
        name = ".".join(parts[: index + 1])
        parent = sys.modules.get(".".join(parts[:index]))
        locations = getattr(parent, "__path__", None) if parent is not None else None
        if locations is None:
            locations = spec.submodule_search_locations
        if locations is None:
            return False  # the parent is a plain module
        loaded = sys.modules.get(name)
        spec = loaded.__spec__ if loaded is not None else importlib.machinery.PathFinder.find_spec(name, list(locations))
    return spec is not None


_DIST_INDEX: Optional[dict[tuple[str, str, str], list[tuple[str, str]]]] = None


def _distribution_index() -> dict[tuple[str, str, str], list[tuple[str, str]]]:
    """``(group, name, value) -> [(distribution, version), ...]`` in sys.path order.

    Stevedore's entry points do not say which distribution declared them; this slower scan
    is only done for warnings and :func:`available_drivers`.
    """
    global _DIST_INDEX
    if _DIST_INDEX is None:
        import importlib.metadata

        index: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        for dist in importlib.metadata.distributions():
            try:
                name, version = dist.metadata["Name"], dist.version
                entry_points = list(dist.entry_points)
            except Exception:  # a broken dist-info must not hide the others
                continue
            for ep in entry_points:
                if ep.group.startswith("libcloud.") and ep.group.endswith(".drivers"):
                    owners = index.setdefault((ep.group, ep.name, ep.value.strip()), [])
                    if (name, version) not in owners:
                        owners.append((name, version))
        _DIST_INDEX = index
    return _DIST_INDEX


def _owners(group: str, name: str, value: str) -> list[tuple[str, str]]:
    try:
        return _distribution_index().get((group, name, value.strip()), [])
    except Exception:
        return []


def _owner_text(group: str, name: str, value: str) -> str:
    owners = _owners(group, name, value)
    return f"{owners[0][0]} {owners[0][1]}" if owners else "an unknown distribution"


# -- decisions -----------------------------------------------------------------------------

def _key_text(key: Any) -> str:
    return str(getattr(key, "value", key))


def _reserved_names(module: Any) -> dict[str, str]:
    """Lower-cased names that belong to Libcloud in this providers module, with a reason."""
    reserved: dict[str, str] = {}
    for key, value in module.DRIVERS.items():
        if not isinstance(value, PluginEntry):
            reserved[_key_text(key).lower()] = f"Libcloud already has a provider {_key_text(key)!r}"
    for table in ("DEPRECATED_DRIVERS", "OLD_CONSTANT_TO_NEW_MAPPING"):
        for key in getattr(module, table, None) or {}:
            reserved.setdefault(_key_text(key).lower(), f"{_key_text(key)!r} is a retired Libcloud provider name")
    return reserved


def _evaluate(driver_type: str, module: Any, entry_points: Sequence[Any]) -> list[_Decision]:
    reserved = _reserved_names(module)
    winners: dict[str, str] = {}
    decisions = []
    for ep in entry_points:
        name, value = str(ep.name), str(ep.value).strip()
        match = _TARGET.match(value)
        entry = None
        if not _NAME.match(name):
            status, reason = MALFORMED, f"{name!r} is not a usable provider name"
        elif match is None:
            status, reason = MALFORMED, f"target {value!r} is not of the form 'module:Class'"
        else:
            target = f"{match['module']}:{match['attr']}"
            key = name.lower()
            if key in reserved:
                status, reason = SHADOWED_BY_BUILTIN, reserved[key]
            elif key in winners:
                if winners[key] == target:
                    status, reason = REGISTERED, "identical to an earlier entry point; ignored"
                else:
                    status, reason = SHADOWED_BY_PLUGIN, f"{name!r} is already registered as {winners[key]}"
            elif not _module_findable(match["module"]):
                status, reason = MALFORMED, f"module {match['module']!r} cannot be found"
            else:
                winners[key] = target
                status, reason = REGISTERED, ""
                entry = PluginEntry((match["module"], match["attr"]))
        record = DriverRecord(driver_type, name, value, None, None, status, reason)
        decisions.append(_Decision(record, entry))
    return decisions


_WARNED: set[tuple[str, str, str, str]] = set()


def _log(decisions: Sequence[_Decision]) -> None:
    for record, _entry in decisions:
        if record.status in (REGISTERED, UNREGISTERED):
            continue
        key = (record.type, record.name, record.target, record.status)
        if key in _WARNED:
            continue
        _WARNED.add(key)
        LOG.warning(
            "ignoring Libcloud driver entry point %r = %r (group %s, from %s): %s: %s",
            record.name,
            record.target,
            record.group,
            _owner_text(record.group, record.name, record.target),
            record.status,
            record.reason,
        )


# -- applying ------------------------------------------------------------------------------

def _plugin_key(drivers: dict, provider: Any) -> Optional[Any]:
    """The ``DRIVERS`` key of the entry-point registration matching ``provider``, if any."""
    text = _key_text(provider)
    if isinstance(drivers.get(text), PluginEntry):
        return text
    lowered = text.lower()
    for key, value in drivers.items():
        if isinstance(value, PluginEntry) and _key_text(key).lower() == lowered:
            return key
    return None


def _make_set_driver(providers: Any, driver_type: str, original: Callable) -> Callable:
    def set_driver(provider, module, klass):
        """Libcloud's ``set_driver``, aware of drivers registered from entry points.

        For a name registered from an entry point: the same ``module, klass`` (or a former
        path from ``LEGACY_TARGETS``) returns the registered class with a
        DeprecationWarning; another one raises ProviderAlreadyRegisteredError. Every
        other call is Libcloud's own ``set_driver`` (``set_driver.__wrapped__``).
        """
        key = _plugin_key(providers.DRIVERS, provider)
        if key is None:
            return original(provider, module, klass)
        registered = providers.DRIVERS[key]
        current = f"{registered[0]}:{registered[1]}"
        wanted = f"{module}:{klass}"
        name = _key_text(key)
        group = entry_point_group(driver_type)
        owner = _owner_text(group, name, current)
        if wanted == current or wanted in LEGACY_TARGETS.get((driver_type, name.lower()), ()):
            warnings.warn(
                f"set_driver({_key_text(provider)!r}, {module!r}, {klass!r}) is no longer needed: "
                f"{owner} registers the {name!r} driver automatically. Delete this line; "
                f"get_driver({name!r}) returns {current.replace(':', '.')}.",
                DeprecationWarning,
                stacklevel=2,
            )
            return providers.get_driver(key)
        raise ProviderAlreadyRegisteredError(
            f"Provider {name!r} is already registered by {owner} (entry point {name} = {current}) "
            f"and set_driver() cannot replace it with {wanted}. Use another provider name, or "
            f"set STRATUSLAB_LC_PLUGIN_DISABLE=1 to turn automatic registration off."
        )

    set_driver.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(set_driver, _WRAPPED, True)
    return set_driver


def _apply(module: Any, driver_type: str, decisions: Sequence[_Decision]) -> None:
    drivers = module.DRIVERS
    wanted = {d.record.name: d.entry for d in decisions if d.entry is not None}
    for key in [k for k, v in drivers.items() if isinstance(v, PluginEntry) and _key_text(k) not in wanted]:
        del drivers[key]  # a plugin that is no longer installed, or lost its name
    provider_class = getattr(module, "Provider", None)
    for name, entry in wanted.items():
        current = drivers.get(name)
        if not (isinstance(current, PluginEntry) and current == entry):
            drivers[name] = entry
        attribute = name.upper()
        if provider_class is not None and attribute.isidentifier() and not hasattr(provider_class, attribute):
            add_provider_member(provider_class, attribute, name)
    original = getattr(module, "set_driver", None)
    if wanted and callable(original) and not getattr(original, _WRAPPED, False):
        module.set_driver = _make_set_driver(module, driver_type, original)


def add_provider_member(provider_class: Any, attribute: str, value: str) -> Any:
    """Make ``provider_class.<attribute>`` (Libcloud's ``Provider``) stand for ``value``.

    Libcloud 3's ``Provider`` is a ``str`` Enum, so the constant is added as a real member:
    it is iterated, ``Provider['NAME']`` and ``Provider('name')`` find it, and it is an
    instance of the class, like Libcloud's own. Enums do not offer that, so the member is
    put in the class's member tables as ``EnumType`` itself does (checked on Python 3.9 to
    3.13); the result is verified, and when anything differs the member is taken out again
    and a plain ``str`` attribute is set instead (``get_driver(Provider.NAME)`` works either
    way). Returns what was set.
    """
    try:
        if isinstance(provider_class, EnumMeta) and issubclass(provider_class, str):
            member = _enum_member(provider_class, attribute, value)
            if member is not None:
                return member
        setattr(provider_class, attribute, value)
        return value
    except Exception:  # an unusual Provider class; get_driver('name') still works
        LOG.debug("could not add %s.%s", getattr(provider_class, "__name__", "Provider"), attribute)
        return None


def _enum_member(cls: Any, name: str, value: str) -> Any:
    member = str.__new__(cls, value)
    member._name_ = name
    member._value_ = value
    member.__objclass__ = cls
    member._sort_order_ = len(cls._member_names_)
    member.__init__(value)
    cls._member_names_.append(name)
    cls._member_map_[name] = member
    cls._value2member_map_[value] = member
    type.__setattr__(cls, name, member)  # EnumType.__setattr__ refuses to bind members
    try:
        works = (cls[name] is member and cls(value) is member and getattr(cls, name) is member
                 and list(cls)[-1] is member and member.value == value and isinstance(member, cls))
    except Exception:
        works = False
    if not works:
        cls._member_names_.remove(name)
        del cls._member_map_[name]
        del cls._value2member_map_[value]
        type.__delattr__(cls, name)
        return None
    return member


def register_providers_module(module: Any, driver_type: str) -> list[DriverRecord]:
    """Register the ``libcloud.<driver_type>.drivers`` entry points in ``module.DRIVERS``.

    ``module`` is the already executed ``libcloud.<driver_type>.providers`` module. Safe to
    call again (the result is the same). Returns one record per entry point, without
    distribution details (see :func:`available_drivers`).
    """
    if not isinstance(getattr(module, "DRIVERS", None), dict):
        return []
    decisions = _evaluate(driver_type, module, _entry_points(entry_point_group(driver_type)))
    _apply(module, driver_type, decisions)
    _log(decisions)
    return [d.record for d in decisions]


# -- the import hook (called by the package's finder) -------------------------------------

# Modules named libcloud.<type>.providers that are helpers, not provider tables.
_NOT_A_PROVIDER_TABLE = frozenset(("common",))


def _driver_type(fullname: str) -> Optional[str]:
    """``'compute'`` for ``'libcloud.compute.providers'``; None for any other module name."""
    parts = fullname.split(".")
    if len(parts) != 3 or parts[0] != "libcloud" or parts[2] != "providers" or parts[1] in _NOT_A_PROVIDER_TABLE:
        return None
    return parts[1]


def _register_safely(module: Any, driver_type: str) -> None:
    try:
        register_providers_module(module, driver_type)
    except Exception:  # a plugin problem must never break ``import libcloud``
        LOG.warning("could not register entry-point drivers for libcloud.%s", driver_type, exc_info=True)


class _RegisteringLoader:
    """Wraps a providers module's loader to register drivers once the module has executed."""

    def __init__(self, loader: Any, driver_type: str) -> None:
        self._loader = loader
        self._driver_type = driver_type

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        # Put the real loader back first: once loaded, the module must look exactly as if
        # this wrapper had never been there (reload, inspect, pkgutil, tracebacks).
        module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = self._loader
        self._loader.exec_module(module)
        # The finder checked the switch-off variable before wrapping this loader.
        _register_safely(module, self._driver_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def find_providers_spec(fullname: str, path: Any = None, target: Any = None) -> Any:
    """The spec the other finders give for a providers module, its loader wrapped.

    None for any other module, or when no other finder knows it.
    """
    driver_type = _driver_type(fullname)
    if driver_type is None:
        return None
    for finder in list(sys.meta_path):
        find_spec = getattr(finder, "find_spec", None)
        if getattr(finder, "_stratuslab_lc_plugin_finder", False) or find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            break
    else:
        return None
    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
        spec.loader = _RegisteringLoader(spec.loader, driver_type)
    return spec


def register_imported() -> None:
    """Register into the providers modules that are already imported (never raises)."""
    for name, module in list(sys.modules.items()):
        driver_type = _driver_type(name)
        if driver_type is None or module is None:
            continue
        # A module still executing is registered by its wrapped loader when done.
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            continue
        _register_safely(module, driver_type)


# -- public API ----------------------------------------------------------------------------

def _providers_modules(types: Optional[Iterable[str]]) -> list[tuple[str, Any]]:
    selected = DRIVER_TYPES if types is None else ((types,) if isinstance(types, str) else tuple(types))
    modules = []
    for driver_type in selected:
        try:
            module = importlib.import_module(f"libcloud.{driver_type}.providers")
        except ImportError as exc:
            raise ValueError(
                f"unknown Libcloud driver type {driver_type!r} (known: {', '.join(DRIVER_TYPES)})"
            ) from exc
        modules.append((driver_type, module))
    return modules


def _with_distributions(records: Iterable[DriverRecord]) -> list[DriverRecord]:
    result = []
    for record in records:
        owners = _owners(record.group, record.name, record.target)
        if owners:
            reason = record.reason
            if len(owners) > 1:
                others = ", ".join(f"{n} {v}" for n, v in owners[1:])
                reason = f"{reason}; also declared by {others}" if reason else f"also declared by {others}"
            record = replace(record, distribution=owners[0][0], version=owners[0][1], reason=reason)
        result.append(record)
    return result


def register(types: Optional[Iterable[str]] = None) -> list[DriverRecord]:
    """Register entry-point drivers now, whatever :data:`stratuslab_lc_plugin.DISABLE_ENV` says.

    For environments where the interpreter-start hook does not run (``python -S``, frozen
    applications, a disabled hook). ``types`` selects driver types (default: all of
    :data:`DRIVER_TYPES`); their providers modules are imported. Returns the records.
    Stevedore reads each group's entry points once per process, so distributions
    installed after that are seen by the next process.
    """
    records: list[DriverRecord] = []
    for driver_type, module in _providers_modules(types):
        records.extend(register_providers_module(module, driver_type))
    return _with_distributions(records)


def available_drivers(types: Optional[Iterable[str]] = None) -> list[DriverRecord]:
    """Every driver the ``libcloud.<type>.drivers`` entry points offer, and what became of it.

    Imports the providers modules of ``types`` (default: all) but no driver module. Does
    not register anything itself: an entry point that would win its name but is not in
    ``DRIVERS`` (automatic registration turned off) is reported as ``unregistered``.
    """
    records: list[DriverRecord] = []
    for driver_type, module in _providers_modules(types):
        drivers = getattr(module, "DRIVERS", None)
        if not isinstance(drivers, dict):
            continue
        for record, entry in _evaluate(driver_type, module, _entry_points(entry_point_group(driver_type))):
            if entry is not None and drivers.get(record.name) != entry:
                record = replace(
                    record,
                    status=UNREGISTERED,
                    reason="not in Libcloud's DRIVERS: automatic registration is off and register() was not called",
                )
            records.append(record)
    return _with_distributions(records)
