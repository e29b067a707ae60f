"""What importing Libcloud writes outside the process once the plugin is installed.

The start-up hook lists entry points through stevedore when ``libcloud.<type>.providers``
is imported, and stevedore caches the environment's entry points in one JSON file per
interpreter and ``sys.path``: under ``$XDG_CACHE_HOME/python-entrypoints/`` (else
``~/.cache/python-entrypoints/``), unless that directory holds a ``.disable`` file or the
interpreter lives under ``/tmp``. README's "How registration works" says so; these tests
hold it to that, in a home directory of their own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

#: stevedore keeps no cache for an interpreter under /tmp (its rule for throw-away venvs).
CACHES = not sys.executable.startswith("/tmp")
CACHE_FILE = re.compile(r"python-entrypoints/[0-9a-f]{64}")


def import_providers(home: Path, registered: bool = True, **extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "STRATUSLAB_LC_PLUGIN_DISABLE")}
    env.update(HOME=str(home), **extra)
    code = "import libcloud.compute.providers as p; assert ('stratuslab' in p.DRIVERS) is %r" % registered
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def files_under(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_cache_goes_to_the_home_directory_by_default(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    import_providers(home)
    written = files_under(home)
    if CACHES:
        assert len(written) == 1 and CACHE_FILE.fullmatch(written[0][len(".cache/"):]), written
        assert written[0].startswith(".cache/python-entrypoints/")
    else:
        assert written == []


def test_xdg_cache_home_moves_it(tmp_path):
    home, cache = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    import_providers(home, XDG_CACHE_HOME=str(cache))
    assert files_under(home) == []
    written = files_under(cache) if cache.exists() else []
    assert (len(written) == 1 and CACHE_FILE.fullmatch(written[0])) if CACHES else written == []


def test_a_disable_file_stops_it(tmp_path):
    home, cache = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    (cache / "python-entrypoints").mkdir(parents=True)
    (cache / "python-entrypoints" / ".disable").write_text("")
    import_providers(home, XDG_CACHE_HOME=str(cache))
    assert files_under(cache) == ["python-entrypoints/.disable"] and files_under(home) == []


def test_nothing_is_written_with_the_hook_switched_off(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    import_providers(home, registered=False, STRATUSLAB_LC_PLUGIN_DISABLE="1")
    assert files_under(home) == []
