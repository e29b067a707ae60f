"""Fresh virtual environments with the project installed the way users install it.

Used by the registration tests and by ``bench/startup.py``. Building a venv with every
dependency from an index would be slow and need the network, so each venv sees the
dependencies of the *running* interpreter through a "dependency view": a directory of
symlinks to the running environment's site-packages entries, minus anything of this
project and minus ``.pth`` files, appended to the venv's ``sys.path`` by a path-only
``.pth`` file. The project itself is then built and installed with the venv's own pip
(``--no-deps``; ``--no-build-isolation`` when the running environment has a recent
setuptools, else pip fetches the build requirements).

Child processes get a scrubbed environment (no ``PYTHONPATH``, no user site) so that
nothing but the venv decides what they import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.rst", "LICENSE")
PACKAGE = "stratuslab_lc_plugin"
DISTRIBUTION = "stratuslab-lc-plugin"
DEPS_PTH = "_deps_view.pth"

# Variables that would let the parent's setup leak into a child interpreter.
_SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "PYTHONUSERBASE",
             "PYTHONINSPECT", "PYTHONWARNINGS", "VIRTUAL_ENV", "PIP_TARGET", "PIP_PREFIX",
             "PIP_USER", "PIP_REQUIRE_VIRTUALENV", "STRATUSLAB_LC_PLUGIN_DISABLE", "__PYVENV_LAUNCHER__")


def is_ours(entry_name: str) -> bool:
    """Whether a site-packages entry belongs to this project (any spelling)."""
    return entry_name.lower().startswith(("stratuslab", "__editable__.stratuslab", "__editable___stratuslab"))


def child_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONIOENCODING="utf-8")
    env.update(extra or {})
    return env


def copy_project(dest: Path) -> Path:
    """Copy what a build needs (no build/, egg-info or caches) to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        if (PROJECT_ROOT / name).is_file():
            shutil.copy2(PROJECT_ROOT / name, dest / name)
    for package in (PACKAGE, "stratuslab"):  # stratuslab/: the 14.06 module path
        shutil.copytree(PROJECT_ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return dest


def _site_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    seen: list[Path] = []
    for key in ("purelib", "platlib"):
        path = Path(paths[key])
        if path.is_dir() and path not in seen:
            seen.append(path)
    return seen


def dependency_view(dest: Path) -> Path:
    """A directory of symlinks to the running environment's packages, minus this project."""
    dest.mkdir(parents=True, exist_ok=True)
    for site_dir in _site_dirs():
        for entry in site_dir.iterdir():
            name = entry.name
            if is_ours(name) or name.endswith(".pth") or name.startswith("__editable__") or name == "__pycache__":
                continue
            link = dest / name
            if not link.exists():
                link.symlink_to(entry, target_is_directory=entry.is_dir())
    return dest


def can_build_without_isolation() -> bool:
    """Whether the running environment has what ``--no-build-isolation`` needs."""
    import importlib.metadata

    def version(name: str) -> tuple[int, ...]:
        try:
            text = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return ()
        return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())

    setuptools = version("setuptools")
    if not setuptools or setuptools < (64,):
        return False
    return setuptools >= (70, 1) or bool(version("wheel"))


@dataclass
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def site_packages(self) -> Path:
        return next((self.root / "lib").glob("python3*/site-packages"))

    def run(self, args: Sequence[str], env: Optional[Mapping[str, str]] = None, check: bool = True,
            cwd: Optional[Path] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.python), *args], env=child_env(env), cwd=str(cwd or self.root),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(map(str, args))[:200]} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def python_code(self, code: str, *options: str, env: Optional[Mapping[str, str]] = None,
                    check: bool = True) -> subprocess.CompletedProcess:
        return self.run([*options, "-c", code], env=env, check=check)

    def pip(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run(["-m", "pip", *args], timeout=timeout)

    def ours(self) -> list[str]:
        """Names of this project's entries left in site-packages and bin."""
        found = sorted(p.name for p in self.site_packages.iterdir() if is_ours(p.name))
        found += sorted(f"bin/{p.name}" for p in self.bin.iterdir() if p.name.startswith("stratus"))
        return found


def make_venv(root: Path, deps: Optional[Path]) -> Venv:
    """A venv without pip of its own; ``deps`` (a dependency view) is appended to its path."""
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(root)
    env = Venv(root)
    if deps is not None:
        (env.site_packages / DEPS_PTH).write_text(f"{deps}\n", encoding="utf-8")
    return env


def build_wheel(project: Path, out_dir: Path, builder: Venv) -> Path:
    """Build the project's wheel with ``builder``'s pip and return its path."""
    no_isolation = ["--no-build-isolation"] if can_build_without_isolation() else []
    builder.pip("wheel", "--no-deps", *no_isolation, "-w", str(out_dir), str(project))
    return next(out_dir.glob("stratuslab_lc_plugin-*.whl"))


def install_wheel(env: Venv, wheel: Path) -> None:
    env.pip("install", "--no-deps", "--no-index", str(wheel))


def install_editable(env: Venv, project: Path) -> None:
    no_isolation = ["--no-build-isolation"] if can_build_without_isolation() else []
    env.pip("install", "--no-deps", *no_isolation, "-e", str(project))


def python_version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"
