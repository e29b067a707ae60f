"""The registrar's rules and the start-up hook (the package's finder), in-process and in child interpreters.

Registry rules are exercised on a stand-in providers module (a ``DRIVERS`` dict, a
``Provider`` class and Libcloud's real ``get_driver``/``set_driver`` helpers) with entry
points injected, so no test touches Libcloud's real tables. The hook itself is exercised in
child interpreters of the running Python, where importing Libcloud for the first time is
what is being tested. ``test_registration_venv.py`` covers real installs.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest
from libcloud.common import providers as common

import stratuslab_lc_plugin as hook
from stratuslab_lc_plugin import registry

pytestmark = pytest.mark.timeout(60)

GROUP = "libcloud.compute.drivers"
BUILTINS = {"ec2": ("libcloud.compute.drivers.ec2", "EC2NodeDriver"), "MixedCase": ("json", "JSONDecoder")}


def ep(name: str, value: str, group: str = GROUP) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name, value, group)


def fake_providers() -> types.ModuleType:
    module = types.ModuleType("fake_libcloud_providers")

    class Provider:
        EC2 = "ec2"
        TAKEN = "something-else"

    module.Provider = Provider
    module.DRIVERS = dict(BUILTINS)
    module.DEPRECATED_DRIVERS = {"retired": {"url": "u", "reason": "r"}}
    module.get_driver = lambda provider: common.get_driver(module.DRIVERS, provider)
    module.set_driver = lambda provider, module_name, klass: common.set_driver(module.DRIVERS, provider, module_name, klass)
    return module


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch) -> Path:
    """A sys.path directory holding the plugin module, which is not imported yet."""
    (tmp_path / "lazy_plugin_for_tests.py").write_text("class Driver:\n    pass\n\nclass Other:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("lazy_plugin_for_tests", None)
    yield tmp_path
    sys.modules.pop("lazy_plugin_for_tests", None)


@pytest.fixture
def plugin(plugin_dir) -> str:
    return "lazy_plugin_for_tests"


@pytest.fixture
def offer(monkeypatch):
    """Set the entry points the registrar sees: ``offer([ep(...), ...])``."""
    offered: dict[str, list] = {}
    monkeypatch.setattr(registry, "_entry_points", lambda group: list(offered.get(group, [])))
    monkeypatch.setattr(registry, "_WARNED", set())
    monkeypatch.setattr(registry, "_DIST_INDEX", {})

    def set_offer(entry_points):
        offered.clear()
        for item in entry_points:
            offered.setdefault(item.group, []).append(item)

    return set_offer


def statuses(records):
    return [(r.name, r.target, r.status) for r in records]


# -- registry rules ------------------------------------------------------------------------

def test_registers_lazily_as_module_class_pair(offer, plugin):
    providers = fake_providers()
    offer([ep("lazyone", f"{plugin}:Driver")])
    records = registry.register_providers_module(providers, "compute")
    assert statuses(records) == [("lazyone", f"{plugin}:Driver", registry.REGISTERED)]
    assert providers.DRIVERS["lazyone"] == (plugin, "Driver")
    assert isinstance(providers.DRIVERS["lazyone"], registry.PluginEntry)
    assert plugin not in sys.modules
    assert providers.get_driver("lazyone").__name__ == "Driver"
    assert providers.get_driver("LAZYONE").__name__ == "Driver"  # Libcloud's own fallback
    assert plugin in sys.modules


def test_provider_attribute_added_only_when_free(offer, plugin):
    providers = fake_providers()
    offer([ep("lazyone", f"{plugin}:Driver"), ep("taken", f"{plugin}:Other"), ep("with-dash", f"{plugin}:Other")])
    registry.register_providers_module(providers, "compute")
    assert providers.Provider.LAZYONE == "lazyone"
    assert providers.Provider.TAKEN == "something-else"
    assert not hasattr(providers.Provider, "WITH-DASH")
    assert providers.get_driver(providers.Provider.LAZYONE).__name__ == "Driver"


def test_builtin_and_retired_names_win_case_insensitively(offer, plugin, caplog):
    providers = fake_providers()
    offer([ep("EC2", f"{plugin}:Driver"), ep("mixedcase", f"{plugin}:Driver"), ep("Retired", f"{plugin}:Driver")])
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        records = registry.register_providers_module(providers, "compute")
    assert [r.status for r in records] == [registry.SHADOWED_BY_BUILTIN] * 3
    assert providers.DRIVERS == BUILTINS
    assert "'EC2'" in caplog.text and "Libcloud already has a provider 'ec2'" in caplog.text
    assert "retired Libcloud provider name" in caplog.text


def test_first_plugin_wins_and_identical_duplicate_is_quiet(offer, plugin, caplog):
    providers = fake_providers()
    offer([ep("dup", f"{plugin}:Driver"), ep("dup", f"{plugin} : Driver"), ep("DUP", f"{plugin}:Other")])
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        records = registry.register_providers_module(providers, "compute")
    assert [r.status for r in records] == [registry.REGISTERED, registry.REGISTERED, registry.SHADOWED_BY_PLUGIN]
    assert "identical" in records[1].reason
    assert providers.DRIVERS["dup"] == (plugin, "Driver")
    assert len(caplog.records) == 1 and "shadowed-by-plugin" in caplog.text


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("has space", "json:JSONDecoder", "not a usable provider name"),
        ("nocolon", "json.JSONDecoder", "not of the form"),
        ("dotted", "json:JSONDecoder.decode", "not of the form"),
        ("missing", "no_such_top_level_module_x:Driver", "cannot be found"),
        ("missingsub", "json.no_such_submodule:Driver", "cannot be found"),
        ("undermodule", "json.decoder.deeper:Driver", "cannot be found"),
    ],
)
def test_malformed_entries_are_logged_and_skipped(offer, caplog, name, value, reason):
    providers = fake_providers()
    offer([ep(name, value)])
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        [record] = registry.register_providers_module(providers, "compute")
    assert record.status == registry.MALFORMED and reason in record.reason
    assert name not in providers.DRIVERS
    assert reason in caplog.text


def test_module_check_does_not_import_the_plugin_package(tmp_path, monkeypatch):
    package = tmp_path / "explosive_pkg_for_tests"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported!')\n")
    (package / "driver.py").write_text("class Driver: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry._module_findable("explosive_pkg_for_tests.driver")
    assert not registry._module_findable("explosive_pkg_for_tests.nothing")
    assert "explosive_pkg_for_tests" not in sys.modules


def test_registration_is_idempotent_and_warns_once(offer, plugin, caplog):
    providers = fake_providers()
    offer([ep("lazyone", f"{plugin}:Driver"), ep("ec2", f"{plugin}:Driver")])
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        first = registry.register_providers_module(providers, "compute")
        snapshot = dict(providers.DRIVERS)
        second = registry.register_providers_module(providers, "compute")
    assert first == second
    assert providers.DRIVERS == snapshot
    assert len(caplog.records) == 1


def test_entries_of_removed_plugins_are_dropped(offer, plugin):
    providers = fake_providers()
    offer([ep("lazyone", f"{plugin}:Driver")])
    registry.register_providers_module(providers, "compute")
    offer([])
    registry.register_providers_module(providers, "compute")
    assert providers.DRIVERS == BUILTINS


def test_providers_module_without_drivers_table_is_ignored(offer):
    offer([ep("x", "json:JSONDecoder")])
    assert registry.register_providers_module(types.ModuleType("empty"), "compute") == []


# -- old set_driver lines ------------------------------------------------------------------

@pytest.fixture
def with_stratuslab(offer, monkeypatch):
    providers = fake_providers()
    offer([ep("stratuslab", "stratuslab_lc_plugin.driver:StratusLabNodeDriver")])
    monkeypatch.setattr(
        registry, "_DIST_INDEX",
        {(GROUP, "stratuslab", "stratuslab_lc_plugin.driver:StratusLabNodeDriver"): [("stratuslab-lc-plugin", "0.1.0")]},
    )
    registry.register_providers_module(providers, "compute")
    return providers


@pytest.mark.parametrize(
    "module", ["stratuslab.libcloud.compute_driver", "stratuslab_lc_plugin.driver"]
)
def test_old_set_driver_line_is_a_deprecated_no_op(with_stratuslab, module):
    with pytest.warns(DeprecationWarning, match="can be deleted|Delete this line") as caught:
        cls = with_stratuslab.set_driver("stratuslab", module, "StratusLabNodeDriver")
    assert cls.__name__ == "StratusLabNodeDriver"
    assert caught[0].filename == __file__  # points at the caller's line
    assert "stratuslab-lc-plugin 0.1.0 registers the 'stratuslab' driver automatically" in str(caught[0].message)
    assert with_stratuslab.DRIVERS["stratuslab"] == ("stratuslab_lc_plugin.driver", "StratusLabNodeDriver")


def test_set_driver_with_another_class_names_the_plugin(with_stratuslab):
    with pytest.raises(registry.ProviderAlreadyRegisteredError, match="stratuslab-lc-plugin 0.1.0") as info:
        with_stratuslab.set_driver("StratusLab", "my_fork.driver", "MyDriver")
    assert isinstance(info.value, AttributeError)
    assert "STRATUSLAB_LC_PLUGIN_DISABLE" in str(info.value)


def test_set_driver_for_other_names_is_libcloud_unchanged(with_stratuslab):
    assert with_stratuslab.set_driver.__wrapped__ is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert with_stratuslab.set_driver("myjson", "json", "JSONDecoder").__name__ == "JSONDecoder"
    with pytest.raises(AttributeError, match="Provider ec2 already registered") as info:
        with_stratuslab.set_driver("ec2", "json", "JSONDecoder")
    assert not isinstance(info.value, registry.ProviderAlreadyRegisteredError)


def test_set_driver_is_wrapped_once(with_stratuslab):
    wrapper = with_stratuslab.set_driver
    registry.register_providers_module(with_stratuslab, "compute")
    assert with_stratuslab.set_driver is wrapper


# -- public API ----------------------------------------------------------------------------

def test_available_drivers_reports_unregistered_and_distributions(offer, plugin, monkeypatch):
    providers = fake_providers()
    offer([ep("lazyone", f"{plugin}:Driver"), ep("ec2", f"{plugin}:Other")])
    monkeypatch.setattr(registry, "_providers_modules", lambda types: [("compute", providers)])
    monkeypatch.setattr(registry, "_DIST_INDEX", {
        (GROUP, "lazyone", f"{plugin}:Driver"): [("lazy-dist", "1.2"), ("copy-dist", "1.3")],
        (GROUP, "ec2", f"{plugin}:Other"): [("lazy-dist", "1.2")],
    })
    before = registry.available_drivers()
    assert [(r.name, r.status, r.distribution, r.version) for r in before] == [
        ("lazyone", registry.UNREGISTERED, "lazy-dist", "1.2"),
        ("ec2", registry.SHADOWED_BY_BUILTIN, "lazy-dist", "1.2"),
    ]
    assert "also declared by copy-dist 1.3" in before[0].reason
    assert "lazyone" not in providers.DRIVERS  # listing registers nothing

    after = registry.register()
    assert [(r.name, r.status) for r in after] == [("lazyone", registry.REGISTERED), ("ec2", registry.SHADOWED_BY_BUILTIN)]
    assert registry.available_drivers()[0].status == registry.REGISTERED
    assert after[0].group == GROUP and "group" not in after[0].as_dict()


def test_register_rejects_unknown_types():
    with pytest.raises(ValueError, match="unknown Libcloud driver type 'nope'"):
        registry.register(["nope"])


# -- the start-up hook ----------------------------------------------------------------------

def test_install_is_idempotent_and_can_be_disabled(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    hook.uninstall()
    assert not hook.installed()
    assert hook.install() and hook.install()
    assert sum(1 for f in sys.meta_path if getattr(f, "_stratuslab_lc_plugin_finder", False)) == 1
    assert getattr(sys.meta_path[0], "_stratuslab_lc_plugin_finder", False)
    hook.uninstall()
    monkeypatch.setenv(hook.DISABLE_ENV, "1")
    assert hook.install() is False
    assert not hook.installed()


def test_finder_only_wraps_provider_tables(monkeypatch):
    finder = hook._ProvidersFinder()
    assert finder.find_spec("json") is None
    assert finder.find_spec("libcloud.common.providers") is None
    assert finder.find_spec("libcloud.compute.drivers.ec2") is None
    import libcloud.dns

    spec = finder.find_spec("libcloud.dns.providers", libcloud.dns.__path__)
    assert isinstance(spec.loader, registry._RegisteringLoader)
    assert spec.loader.get_filename("libcloud.dns.providers").endswith("providers.py")  # delegation
    monkeypatch.setenv(hook.DISABLE_ENV, "1")
    assert finder.find_spec("libcloud.dns.providers", libcloud.dns.__path__) is None


def run_child(code: str, env_extra: dict | None = None, path: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter of the running environment (same sys.path setup)."""
    env = dict(os.environ)
    env.pop(hook.DISABLE_ENV, None)
    env.update(env_extra or {})
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


INJECT = """
import importlib.metadata, sys
import stratuslab_lc_plugin as hook
from stratuslab_lc_plugin import registry
registry._entry_points = lambda group: (
    [importlib.metadata.EntryPoint("lazyone", "{plugin}:Driver", group)] if group == "libcloud.compute.drivers" else [])
"""


def test_hook_registers_after_providers_import_without_importing_driver(plugin_dir, plugin):
    code = INJECT.format(plugin=plugin) + textwrap.dedent(
        f"""
        import json
        hook.install()
        import libcloud.compute.providers as p
        out = dict(entry=list(p.DRIVERS.get("lazyone", ())), before={plugin!r} in sys.modules,
                   loader=type(p.__loader__).__name__, spec_loader=type(p.__spec__.loader).__name__,
                   attr=p.Provider.LAZYONE)
        out["cls"] = p.get_driver("lazyone").__name__
        out["after"] = {plugin!r} in sys.modules
        print(json.dumps(out))
        """
    )
    out = json.loads(run_child(code, path=plugin_dir).stdout)
    assert out == {"entry": [plugin, "Driver"], "before": False, "loader": "SourceFileLoader",
                   "spec_loader": "SourceFileLoader", "attr": "lazyone", "cls": "Driver", "after": True}


def test_install_after_libcloud_import_registers_at_once(plugin_dir, plugin):
    code = (
        "import os, libcloud.compute.providers as p\n"
        + INJECT.format(plugin=plugin)
        + "print('lazyone' in p.DRIVERS)\n"
        + "os.environ.pop('STRATUSLAB_LC_PLUGIN_DISABLE')\n"
        + "hook.install()\n"
        + "print('lazyone' in p.DRIVERS, p.get_driver('lazyone').__name__)\n"
    )
    proc = run_child(code, env_extra={hook.DISABLE_ENV: "1"}, path=plugin_dir)
    assert proc.stdout.split() == ["False", "True", "Driver"]


def test_registrar_failure_never_breaks_libcloud_import():
    code = """
        import stratuslab_lc_plugin as hook
        from stratuslab_lc_plugin import registry
        def boom(module, driver_type):
            raise RuntimeError("registrar exploded")
        registry.register_providers_module = boom
        hook.install()
        import libcloud.compute.providers as p
        print(p.get_driver("ec2").__name__)
        """
    proc = run_child(code)
    assert proc.stdout.strip() == "EC2NodeDriver"
    assert "could not register entry-point drivers for libcloud.compute" in proc.stderr
    assert "registrar exploded" in proc.stderr


def test_package_import_is_cheap():
    # What the interpreter-start cost was measured on (bench/startup.py): one module of
    # ours, nothing heavy, and no module kept in the package's namespace but sys.
    code = """
        import json, sys, types
        before = set(sys.modules)
        import stratuslab_lc_plugin
        heavy = [m for m in ("libcloud", "stevedore", "importlib.metadata", "paramiko", "requests", "logging")
                 if m in sys.modules]
        print(json.dumps({
            "version": stratuslab_lc_plugin.__version__, "heavy": heavy,
            "loaded": sorted(m for m in set(sys.modules) - before if m.startswith("stratuslab")),
            "modules_held": sorted(name for name, value in vars(stratuslab_lc_plugin).items()
                                   if isinstance(value, types.ModuleType)),
        }))
        """
    # -S: no .pth file has imported the package before the probe looks.
    paths = [str(Path(hook.__file__).parents[1])] + [p for p in sys.path if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    env.pop(hook.DISABLE_ENV, None)
    proc = subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"version": "0.1.0", "heavy": [], "loaded": ["stratuslab_lc_plugin"], "modules_held": ["sys"]}


@pytest.mark.skipif(os.environ.get("STRATUSLAB_TEST_INSTALLED") != "1", reason="only where tox installed the package")
def test_tests_run_against_the_installed_package():
    assert "site-packages" in Path(hook.__file__).parts
