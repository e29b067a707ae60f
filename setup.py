"""Build step that the declarative metadata in ``setup.cfg`` cannot express.

Everything about the distribution lives in ``setup.cfg``. This file only adds the
interpreter-start hook that makes ``get_driver('stratuslab')`` work without any
registration call: a ``.pth`` file (read by :mod:`site` on Python 3.9 to 3.14) and the
matching PEP 829 ``.start`` file (read instead of the ``.pth`` import line from Python
3.15 on). Both go to the root of site-packages, beside the package.

The files are written by ``build_py``:

* regular builds (``pip install .``, wheels): into ``build_lib``, so they are copied to
  the root of the wheel;
* editable builds (``pip install -e .``, PEP 660): into the editable wheel's install
  directory, because setuptools does not copy ``build_lib`` into an editable wheel.

Either way they are returned by ``get_outputs()``, end up in the wheel's ``RECORD`` and
are removed by ``pip uninstall``.

Their name starts with a lower-case letter so that, in the alphabetical order in which
:mod:`site` reads ``.pth`` files, it comes after setuptools' ``__editable__*.pth``: in an
editable install the package is importable only once that file has run.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

STARTUP_NAME = "stratuslab_lc_plugin"

# Importing the package is the hook (see its docstring): one module load, nothing else.
# A plain import line: the package is importable whenever pip installed this file with it.
# (Wrapping it in exec("try: ...") to survive a deleted editable checkout costs a compile
# at every interpreter start; in that broken case site reports the line and goes on.)
PTH_LINE = "import stratuslab_lc_plugin\n"
# PEP 829: one ``pkg.module:callable`` per line, called without arguments. Its presence
# makes Python 3.15+ ignore the import line of the .pth file of the same name. Resolving
# it imports the package (which installs the hook); the call is then a no-op.
START_LINE = "stratuslab_lc_plugin:install\n"


class build_py(_build_py):
    """``build_py`` that also writes the interpreter-start files."""

    def _startup_dir(self) -> str:
        if getattr(self, "editable_mode", False):
            # editable_wheel points install_lib at the unpacked editable wheel.
            return self.get_finalized_command("install").install_lib
        return self.build_lib

    def _startup_files(self) -> dict[str, str]:
        base = os.path.join(self._startup_dir(), STARTUP_NAME)
        return {base + ".pth": PTH_LINE, base + ".start": START_LINE}

    def run(self) -> None:
        super().run()
        for path, text in self._startup_files().items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return list(super().get_outputs(include_bytecode)) + list(self._startup_files())


setup(cmdclass={"build_py": build_py})
