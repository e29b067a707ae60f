"""Registration as users get it: the project built and installed into fresh virtual envs.

Covers a regular install (wheel, as ``pip install .`` does) and an editable one
(``pip install -e .``): the ``.pth``/``.start`` files and their RECORD lines, the three
``get_driver`` spellings, laziness (nothing heavy at interpreter start, no driver import
before the first ``get_driver``), ``python -S``, the switch-off variable, old ``set_driver``
lines, broken third-party entry points, and a clean ``pip uninstall``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import venvkit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DRIVER_CLASS = "stratuslab_lc_plugin.driver.StratusLabNodeDriver"
HEAVY_AT_START = ("libcloud", "stevedore", "importlib.metadata", "importlib_metadata", "paramiko", "requests")

# Run inside a venv: the three get_driver spellings, and when the driver module is imported.
GET_DRIVER_PROBE = textwrap.dedent(
    """
    import json, sys
    import libcloud.compute.providers as providers
    out = {"driver_imported_by_providers": "stratuslab_lc_plugin.driver" in sys.modules,
           "entry": list(providers.DRIVERS.get("stratuslab", ()))}
    from libcloud.compute.types import Provider
    import libcloud
    classes = [providers.get_driver("stratuslab"), providers.get_driver(Provider.STRATUSLAB),
               libcloud.get_driver(libcloud.DriverType.COMPUTE, "stratuslab")]
    out["classes"] = [c.__module__ + "." + c.__qualname__ for c in classes]
    out["provider_attr"] = Provider.STRATUSLAB
    import stratuslab_lc_plugin
    out["package_file"] = stratuslab_lc_plugin.__file__
    print(json.dumps(out))
    """
)

LEGACY_PROBE = textwrap.dedent(
    """
    import json, warnings
    from libcloud.compute.providers import set_driver, get_driver
    out = {}
    for module in ("stratuslab.libcloud.compute_driver", "stratuslab_lc_plugin.driver"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cls = set_driver("stratuslab", module, "StratusLabNodeDriver")
        out[module] = {"returned": cls.__module__ + "." + cls.__qualname__,
                       "warnings": [(w.category.__name__, w.filename, str(w.message)) for w in caught]}
    try:
        set_driver("stratuslab", "my_fork.driver", "MyDriver")
    except AttributeError as exc:
        out["other"] = [type(exc).__name__, str(exc)]
    out["after"] = get_driver("stratuslab").__module__
    print(json.dumps(out))
    """
)

AVAILABLE_PROBE = textwrap.dedent(
    """
    import json
    from stratuslab_lc_plugin import registry
    print(json.dumps([r.as_dict() for r in registry.available_drivers()]))
    """
)


def imported_at_start(env: venvkit.Venv, *options: str) -> list[str]:
    proc = env.python_code("pass", "-X", "importtime", *options)
    names = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.append(line.rsplit("|", 1)[1].strip())
    assert names, proc.stderr
    return names


def ours(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith("stratuslab")]


def heavy(names: list[str]) -> list[str]:
    return [n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY_AT_START)]


def record_lines(env: venvkit.Venv) -> list[str]:
    record = next(env.site_packages.glob("stratuslab_lc_plugin-*.dist-info")) / "RECORD"
    return [line.split(",")[0] for line in record.read_text(encoding="utf-8").splitlines()]


def leftovers(env: venvkit.Venv) -> list[str]:
    found = []
    for path in env.site_packages.rglob("*"):
        # pip leaves a namespace package's emptied parent directory (stratuslab/) in place.
        if "stratuslab" in path.name.lower() and not (path.is_dir() and not any(path.iterdir())):
            found.append(str(path.relative_to(env.site_packages)))
    found += [f"bin/{p.name}" for p in env.bin.iterdir() if p.name.startswith("stratus")]
    return sorted(found)


def check_get_driver(env: venvkit.Venv, package_dir: Path) -> None:
    out = json.loads(env.python_code(GET_DRIVER_PROBE).stdout)
    assert out["driver_imported_by_providers"] is False
    assert out["entry"] == ["stratuslab_lc_plugin.driver", "StratusLabNodeDriver"]
    assert out["classes"] == [DRIVER_CLASS] * 3
    assert out["provider_attr"] == "stratuslab"
    assert Path(out["package_file"]).parent == package_dir


def check_uninstall(env: venvkit.Venv) -> None:
    env.pip("uninstall", "-y", venvkit.DISTRIBUTION)
    assert leftovers(env) == []
    proc = env.python_code(
        "import libcloud.compute.providers as p; print('stratuslab' in p.DRIVERS)"
    )
    assert proc.stdout.strip() == "False"
    assert "stratuslab" not in proc.stderr.lower() and "Error processing" not in proc.stderr


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("venvs")


@pytest.fixture(scope="module")
def deps(workdir) -> Path:
    return venvkit.dependency_view(workdir / "deps")


@pytest.fixture(scope="module")
def project(workdir) -> Path:
    return venvkit.copy_project(workdir / "project")


@pytest.fixture(scope="module")
def wheel(workdir, deps, project) -> Path:
    builder = venvkit.make_venv(workdir / "builder", deps)
    return venvkit.build_wheel(project, workdir / "dist", builder)


def fresh(workdir: Path, deps: Path, wheel: Path, name: str) -> venvkit.Venv:
    env = venvkit.make_venv(workdir / name, deps)
    venvkit.install_wheel(env, wheel)
    return env


@pytest.fixture(scope="module")
def regular(workdir, deps, wheel) -> venvkit.Venv:
    return fresh(workdir, deps, wheel, "regular")


@pytest.fixture(scope="module")
def editable(workdir, deps, project) -> venvkit.Venv:
    env = venvkit.make_venv(workdir / "editable", deps)
    venvkit.install_editable(env, project)
    return env


# -- regular install -----------------------------------------------------------------------

def test_wheel_installs_startup_files_listed_in_record(regular):
    site = regular.site_packages
    assert (site / "stratuslab_lc_plugin.pth").read_text().split("\n") == ["import stratuslab_lc_plugin", ""]
    assert (site / "stratuslab_lc_plugin.start").read_text().split() == ["stratuslab_lc_plugin:install"]
    assert {"stratuslab_lc_plugin.pth", "stratuslab_lc_plugin.start"} <= set(record_lines(regular))


def test_regular_install_three_get_driver_forms_lazily(regular):
    check_get_driver(regular, regular.site_packages / "stratuslab_lc_plugin")


def test_interpreter_start_imports_nothing_heavy(regular):
    names = imported_at_start(regular)
    assert ours(names) == ["stratuslab_lc_plugin"]  # the .pth line did run, and loaded one module
    assert heavy(names) == []


def test_start_file_entry_point_registers(regular, deps):
    # What Python 3.15's site does with a .start file (PEP 829), where the .pth import
    # line no longer runs: resolve each entry point with pkgutil and call it.
    start = regular.site_packages / "stratuslab_lc_plugin.start"
    paths = [str(regular.site_packages), str(deps)]
    code = (
        f"import sys, pkgutil; sys.path[:0] = {paths!r}; "
        f"[pkgutil.resolve_name(line.strip())() for line in open({str(start)!r}) if line.strip()]; "
        "mine = sorted(m for m in sys.modules if m.startswith('stratuslab')); "
        "import libcloud.compute.providers as p; "
        "print(mine, p.get_driver('stratuslab').__module__)"
    )
    proc = regular.python_code(code, "-S")
    assert proc.stdout.split() == ["['stratuslab_lc_plugin']", "stratuslab_lc_plugin.driver"]


def test_python_dash_s_registers_on_package_import(regular, deps):
    paths = [str(regular.site_packages), str(deps)]
    for first in ("import stratuslab_lc_plugin; import libcloud.compute.providers as p",
                  "import libcloud.compute.providers as p; import stratuslab_lc_plugin"):
        code = f"import sys; sys.path[:0] = {paths!r}; {first}; print(p.get_driver('stratuslab').__module__)"
        proc = regular.python_code(code, "-S")
        assert proc.stdout.strip() == "stratuslab_lc_plugin.driver", first


def test_disable_variable_then_explicit_register(regular):
    code = (
        "import sys, libcloud.compute.providers as p\n"
        "print('stratuslab' in p.DRIVERS, 'stevedore' in sys.modules)\n"
        "from stratuslab_lc_plugin import registry\n"
        "print(sorted(r.status for r in registry.available_drivers(['compute'])))\n"
        "registry.register(['compute'])\n"
        "print(p.get_driver('stratuslab').__module__)\n"
    )
    proc = regular.python_code(code, env={"STRATUSLAB_LC_PLUGIN_DISABLE": "1"})
    assert proc.stdout.splitlines() == ["False False", "['unregistered']", "stratuslab_lc_plugin.driver"]


def test_old_set_driver_lines_keep_working(regular):
    out = json.loads(regular.python_code(LEGACY_PROBE).stdout)
    for module in ("stratuslab.libcloud.compute_driver", "stratuslab_lc_plugin.driver"):
        assert out[module]["returned"] == DRIVER_CLASS
        # Older Libcloud releases warn about their own imports too; keep ours.
        [(category, filename, message)] = [w for w in out[module]["warnings"] if w[2].startswith("set_driver(")]
        assert category == "DeprecationWarning"
        assert filename == "<string>"  # points at the caller's line
        assert "registers the 'stratuslab' driver automatically" in message
        assert "Delete this line" in message
    kind, message = out["other"]
    assert kind == "ProviderAlreadyRegisteredError"
    assert "stratuslab-lc-plugin 0.1.0" in message and "my_fork.driver:MyDriver" in message
    assert out["after"] == "stratuslab_lc_plugin.driver"


def test_old_script_shows_the_deprecation_by_default(regular, workdir):
    script = workdir / "old_script.py"
    script.write_text(
        "from libcloud.compute.providers import get_driver, set_driver\n"
        "set_driver('stratuslab', 'stratuslab.libcloud.compute_driver', 'StratusLabNodeDriver')\n"
        "print(get_driver('stratuslab').__name__)\n"
    )
    proc = regular.run([str(script)])
    assert proc.stdout.strip() == "StratusLabNodeDriver"
    assert f"{script}:2: DeprecationWarning: set_driver(" in proc.stderr
    assert "Delete this line" in proc.stderr


def test_target_install_registers_on_package_import(workdir, deps, wheel):
    env = venvkit.make_venv(workdir / "target-host", deps)
    target = workdir / "target"
    env.pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    code = "import stratuslab_lc_plugin, libcloud.compute.providers as p; print(p.get_driver('stratuslab').__module__)"
    proc = env.python_code(code, env={"PYTHONPATH": str(target)})
    assert proc.stdout.strip() == "stratuslab_lc_plugin.driver"


def test_available_drivers_reports_our_distribution(regular):
    records = json.loads(regular.python_code(AVAILABLE_PROBE).stdout)
    assert records == [{
        "type": "compute", "name": "stratuslab",
        "target": "stratuslab_lc_plugin.driver:StratusLabNodeDriver",
        "distribution": "stratuslab-lc-plugin", "version": "0.1.0",
        "status": "registered", "reason": "",
    }]


def test_uninstall_removes_every_file(workdir, deps, wheel):
    env = fresh(workdir, deps, wheel, "uninstall")
    assert "stratuslab_lc_plugin.pth" in leftovers(env)
    check_uninstall(env)


# -- broken third-party entry points -------------------------------------------------------

def write_dist(site: Path, name: str, version: str, entry_points: str, modules: dict[str, str]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def broken(workdir, deps, wheel) -> venvkit.Venv:
    env = fresh(workdir, deps, wheel, "broken")
    write_dist(
        env.site_packages, "broken-plugin", "1.0",
        """
        [libcloud.compute.drivers]
        missing = no_such_module_for_tests.sub:Driver
        Ec2 = broken_plugin_mod:FakeEc2
        bad = this is not a target
        [libcloud.storage.drivers]
        teststore = broken_plugin_mod:FakeStorage
        """,
        {"broken_plugin_mod": "class FakeEc2: pass\nclass FakeStorage: pass\n"},
    )
    # Another distribution claiming 'stratuslab', later on sys.path than ours.
    later = workdir / "later-on-path"
    later.mkdir()
    write_dist(later, "rogue-stratuslab", "2.0", "[libcloud.compute.drivers]\nstratuslab = rogue_mod:Driver\n",
               {"rogue_mod": "class Driver: pass\n"})
    (env.site_packages / "zz_later.pth").write_text(f"{later}\n")
    return env


def test_broken_entry_points_do_not_break_the_interpreter(broken):
    proc = broken.python_code("pass")
    assert proc.stderr == ""


def test_broken_entry_points_are_logged_and_builtins_win(broken):
    code = textwrap.dedent(
        """
        import json
        import libcloud.compute.providers as providers
        import libcloud.storage.providers as storage
        print(json.dumps({
            "ec2": providers.get_driver("ec2").__name__,
            "EC2": providers.get_driver("EC2").__name__,
            "stratuslab": providers.get_driver("stratuslab").__module__,
            "missing": "missing" in providers.DRIVERS,
            "teststore": storage.get_driver(storage.Provider.TESTSTORE).__name__,
        }))
        """
    )
    proc = broken.python_code(code)
    assert json.loads(proc.stdout) == {
        "ec2": "EC2NodeDriver", "EC2": "EC2NodeDriver", "stratuslab": "stratuslab_lc_plugin.driver",
        "missing": False, "teststore": "FakeStorage",
    }
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("ignoring Libcloud driver entry point")]
    assert len(warnings) == 4, proc.stderr
    stderr = proc.stderr
    assert "'missing'" in stderr and "cannot be found" in stderr
    assert "'Ec2'" in stderr and "shadowed-by-builtin" in stderr and "broken-plugin 1.0" in stderr
    assert "'bad'" in stderr and "malformed" in stderr
    assert "rogue-stratuslab 2.0" in stderr and "shadowed-by-plugin" in stderr


def test_broken_entry_points_in_available_drivers(broken):
    records = json.loads(broken.python_code(AVAILABLE_PROBE).stdout)
    statuses = {(r["type"], r["name"], r["distribution"]): r["status"] for r in records}
    assert statuses == {
        ("compute", "stratuslab", "stratuslab-lc-plugin"): "registered",
        ("compute", "missing", "broken-plugin"): "malformed",
        ("compute", "Ec2", "broken-plugin"): "shadowed-by-builtin",
        ("compute", "bad", "broken-plugin"): "malformed",
        ("compute", "stratuslab", "rogue-stratuslab"): "shadowed-by-plugin",
        ("storage", "teststore", "broken-plugin"): "registered",
    }


# -- editable install ----------------------------------------------------------------------

def test_editable_install_startup_files_listed_in_record(editable):
    site = editable.site_packages
    assert (site / "stratuslab_lc_plugin.pth").is_file() and (site / "stratuslab_lc_plugin.start").is_file()
    assert {"stratuslab_lc_plugin.pth", "stratuslab_lc_plugin.start"} <= set(record_lines(editable))
    # site reads .pth files in name order: the editable finder's must come first.
    pth_files = sorted(p.name for p in site.glob("*.pth"))
    editable_pth = [n for n in pth_files if n.startswith("__editable__")]
    if editable_pth:
        assert pth_files.index(editable_pth[0]) < pth_files.index("stratuslab_lc_plugin.pth")


def test_editable_install_three_get_driver_forms_lazily(editable, project):
    check_get_driver(editable, project / "stratuslab_lc_plugin")


def test_editable_interpreter_start_imports_nothing_heavy(editable):
    names = imported_at_start(editable)
    assert "stratuslab_lc_plugin" in names
    assert heavy(names) == []


def test_editable_uninstall_removes_every_file(editable):
    check_uninstall(editable)
