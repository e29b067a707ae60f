"""The distribution as it is published: built with ``python -m build``, checked with ``twine``.

The sdist and the wheel must pass ``twine check --strict``, hold the Apache-2.0 LICENSE and
say true things: a License classifier, an author, the Python versions tox tests, every
third-party module the package imports among its requirements. ``pip check`` must be
clean where the package is installed.
"""

from __future__ import annotations

import ast
import configparser
import email
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import venvkit

ROOT = venvkit.PROJECT_ROOT
#: Imported by the pytest plugin only, which pytest itself loads: not a requirement.
IMPORTED_BY_PYTEST_ONLY = {"pytest"}
#: SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the standard text.
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"

def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip()).group(0))


def declared_requirements() -> set:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    lines = parser["options"]["install_requires"].strip().splitlines()
    return {requirement_name(line) for line in lines if line.strip()}


def shipped_top_level_packages() -> list:
    """The top-level packages setup.cfg ships (``stratuslab_lc_plugin``, the 14.06 ``stratuslab`` path)."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    names = parser["options.packages.find"]["include"].split()
    return sorted({name.split(".")[0] for name in names})


def imported_top_level_modules() -> dict:
    """Top-level module name -> files of the shipped packages that import it (also inside functions)."""
    found: dict = {}
    for path in (p for package in shipped_top_level_packages() for p in (ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def module_owners() -> dict:
    """Top-level module name -> distributions that install it (what the running environment has)."""
    owners: dict = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or canonical(name) == venvkit.DISTRIBUTION:
            continue
        for file in dist.files or ():
            top = file.parts[0]
            if len(file.parts) == 1:
                if file.suffix == ".py":
                    owners.setdefault(file.stem, set()).add(canonical(name))
            elif not top.endswith((".dist-info", ".egg-info", ".data")) and top not in ("..", "__pycache__"):
                owners.setdefault(top, set()).add(canonical(name))
    return owners


def test_every_imported_third_party_module_is_a_declared_requirement():
    declared = declared_requirements()
    owners = module_owners()
    undeclared = {}
    for module, files in sorted(imported_top_level_modules().items()):
        if module in IMPORTED_BY_PYTEST_ONLY or module in shipped_top_level_packages():
            continue
        distributions = owners.get(module, set())
        if distributions and not distributions & declared:
            undeclared[module] = (sorted(distributions), sorted(files))
    assert undeclared == {}
    # The check sees the modules that matter (a scan that found nothing would pass too).
    assert {"libcloud", "requests", "urllib3", "paramiko", "stevedore"} <= set(imported_top_level_modules())
    assert owners.get("requests") == {"requests"} and owners.get("libcloud") == {"apache-libcloud"}


def test_pip_check_is_clean_where_the_package_is_installed():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "No broken requirements found."


# -- the built artefacts --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict:
    """{"sdist": path, "wheel": path}, built by ``python -m build`` from a copy of the tree."""
    work = tmp_path_factory.mktemp("build")
    project = work / "project"
    # A copy, so the build leaves nothing (build/, egg-info) in the working tree.
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__", "*.pyc"))
    out = work / "dist"
    isolation = ["--no-isolation"] if venvkit.can_build_without_isolation() else []
    proc = subprocess.run([sys.executable, "-m", "build", *isolation, "--sdist", "--wheel", "--outdir", str(out),
                           str(project)], capture_output=True, text=True, timeout=500,
                          env=venvkit.child_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_string(archive.read(name).decode("utf-8"))


def tox_python_versions() -> set:
    text = (ROOT / "tox.ini").read_text(encoding="utf-8")
    env_list = text.split("env_list =", 1)[1].split("\n[", 1)[0]
    versions = set()
    for match in re.finditer(r"py(\{[0-9,]+\}|[0-9]+)", env_list):
        for digits in match.group(1).strip("{}").split(","):
            versions.add("%s.%s" % (digits[0], digits[1:]))
    return versions


@pytest.mark.parametrize("kind", ["sdist", "wheel"])
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_twine_check_passes(dists, kind):
    proc = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dists[kind])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout and "WARNING" not in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_license_is_in_the_sdist_and_the_wheel(dists):
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert hashlib.sha256(license_text.encode("utf-8")).hexdigest() == APACHE_2_SHA256
    with tarfile.open(dists["sdist"]) as archive:
        [member] = [m for m in archive.getmembers() if m.name.count("/") == 1 and m.name.endswith("/LICENSE")]
        assert archive.extractfile(member).read().decode("utf-8") == license_text
    with zipfile.ZipFile(dists["wheel"]) as archive:
        [name] = [n for n in archive.namelist() if ".dist-info/" in n and n.endswith("/LICENSE")]
        assert archive.read(name).decode("utf-8") == license_text


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_metadata_tells_the_truth(dists):
    meta = wheel_metadata(dists["wheel"])
    classifiers = meta.get_all("Classifier")
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert meta["License"] == "Apache-2.0" or meta["License-Expression"] == "Apache-2.0"
    assert meta["Author"]
    if "Typing :: Typed" in classifiers:  # a claim PEP 561 type checkers read from py.typed
        with zipfile.ZipFile(dists["wheel"]) as archive:
            assert "stratuslab_lc_plugin/py.typed" in archive.namelist()
    claimed = {c.rsplit(" :: ", 1)[1] for c in classifiers
               if re.fullmatch(r"Programming Language :: Python :: 3\.[0-9]+", c)}
    assert claimed == tox_python_versions()
    assert meta["Requires-Python"] == ">=3.9" and min(claimed, key=lambda v: int(v.split(".")[1])) == "3.9"
    requires = {requirement_name(r) for r in meta.get_all("Requires-Dist") if "extra ==" not in r}
    assert requires == declared_requirements() and {"requests", "urllib3"} <= requires
    with zipfile.ZipFile(dists["wheel"]) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(name).decode("utf-8")
    assert "[pytest11]\nstratuslab = stratuslab_lc_plugin.testing.pytest_plugin" in entry_points
