"""What automatic registration costs: interpreter start and the first ``get_driver``.

Builds the project's wheel and two virtual environments that see the same dependencies
(those of the interpreter running this script):

* ``plugin``: the wheel installed, so its ``.pth`` file runs at every start;
* ``bare``: nothing of the project installed.

Then measures, side by side and interleaved, in fresh processes:

1. interpreter start, ``python -c pass``: plugin venv vs bare venv (wall time);
2. ``import libcloud.compute.providers`` + the first ``get_driver('stratuslab')`` in the
   plugin venv vs the same import + a manual ``set_driver('stratuslab', ...)`` in the bare
   venv (the package on ``PYTHONPATH``, hook off): time measured inside the process.

and prints medians and ratios against the targets (start <= 1.03, get_driver <= 1.10).
Both sides import the driver module, so (2) isolates the registrar: stevedore, the entry
point scan and the wrapper.

The venvs are built outside ``/tmp`` by default (under ``~/.cache``, removed afterwards):
stevedore keeps no entry-point cache for interpreters under ``/tmp``, which users' venvs
rarely are; ``--workdir /tmp/...`` measures that worst case. Stevedore's cache goes to the
work directory, not to the user's. Run: ``python bench/startup.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import venvkit  # noqa: E402  (the tests' helper for building venvs)

START_TARGET = 1.03
GET_DRIVER_TARGET = 1.10

TIMED_GET_DRIVER = (
    "import time; t = time.perf_counter(); import libcloud.compute.providers as p; "
    "p.get_driver('stratuslab'); print(time.perf_counter() - t)"
)
TIMED_SET_DRIVER = (
    "import time; t = time.perf_counter(); import libcloud.compute.providers as p; "
    "p.set_driver('stratuslab', 'stratuslab_lc_plugin.driver', 'StratusLabNodeDriver'); "
    "print(time.perf_counter() - t)"
)


def wall(env: venvkit.Venv, code: str, extra: dict[str, str]) -> float:
    start = time.perf_counter()
    env.python_code(code, env=extra)
    return time.perf_counter() - start


def inner(env: venvkit.Venv, code: str, extra: dict[str, str]) -> float:
    return float(env.python_code(code, env=extra).stdout.strip())


FLOOR_PACKAGE = "_empty_startup_hook"


def build(workdir: Path) -> tuple[venvkit.Venv, venvkit.Venv, venvkit.Venv, Path]:
    deps = venvkit.dependency_view(workdir / "deps")
    project = venvkit.copy_project(workdir / "project")
    plugin = venvkit.make_venv(workdir / "plugin", deps)
    wheel = venvkit.build_wheel(project, workdir / "dist", plugin)
    venvkit.install_wheel(plugin, wheel)
    bare = venvkit.make_venv(workdir / "bare", deps)
    # Reference: what any .pth hook shaped like ours costs, an empty package + submodule.
    floor = venvkit.make_venv(workdir / "floor", deps)
    (floor.site_packages / FLOOR_PACKAGE).mkdir()
    (floor.site_packages / FLOOR_PACKAGE / "__init__.py").write_text(f"from {FLOOR_PACKAGE} import hook\n")
    (floor.site_packages / FLOOR_PACKAGE / "hook.py").write_text("import os\nimport sys\n")
    (floor.site_packages / "zz_empty_startup_hook.pth").write_text(f"import {FLOOR_PACKAGE}.hook\n")
    compileall.compile_dir(str(floor.site_packages / FLOOR_PACKAGE), quiet=1)
    # The package alone (no metadata, no .pth) for the manual set_driver baseline,
    # byte-compiled like pip does for the installed copy.
    package_only = workdir / "package-only"
    shutil.copytree(project / venvkit.PACKAGE, package_only / venvkit.PACKAGE)
    compileall.compile_dir(str(package_only), quiet=1)
    return plugin, bare, floor, package_only


def measure(sides: Sequence[Callable[[], float]], runs: int, warmup: int = 3) -> list[list[float]]:
    """Run the sides in turn, ``runs`` times, after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for side in sides:
            side()
    samples: list[list[float]] = [[] for _ in sides]
    for _ in range(runs):
        for side, sample in zip(sides, samples):
            sample.append(side())
    return samples


def row(label: str, ours: list[float], base: list[float], target: float | None) -> str:
    """Medians, their ratio, and the median of the per-round ratios (less sensitive to drift
    in machine load, since both sides of a round run back to back)."""
    m_ours, m_base = statistics.median(ours), statistics.median(base)
    ratio = m_ours / m_base
    paired = statistics.median(a / b for a, b in zip(ours, base))
    verdict = "" if target is None else f"<= {target:.2f} {'ok' if paired <= target else 'OVER'}"
    return f"{label:<40} {m_ours * 1000:9.2f} ms {m_base * 1000:9.2f} ms {ratio:7.3f} {paired:7.3f}   {verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="timed runs per side (default 40)")
    parser.add_argument("--workdir", type=Path, help="where to build the venvs (default: a temp dir)")
    args = parser.parse_args(argv)

    if args.workdir is None:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache_home.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="stratuslab-lc-bench-", dir=cache_home))
    else:
        workdir = args.workdir
    try:
        print(f"building venvs in {workdir} ...", flush=True)
        plugin, bare, floor, package_only = build(workdir)
        on = {"XDG_CACHE_HOME": str(workdir / "cache")}
        off = dict(on, STRATUSLAB_LC_PLUGIN_DISABLE="1", PYTHONPATH=str(package_only))

        start, start_bare, start_floor = measure(
            [lambda: wall(plugin, "pass", on), lambda: wall(bare, "pass", on), lambda: wall(floor, "pass", on)],
            args.runs,
        )
        first = measure(
            [lambda: inner(plugin, TIMED_GET_DRIVER, on), lambda: inner(bare, TIMED_SET_DRIVER, off)],
            max(10, args.runs // 2),
        )
        print(f"\nPython {sys.version.split()[0]}, {args.runs} runs per side, medians\n")
        print(f"{'':<40} {'plugin':>12} {'baseline':>12} {'ratio':>7} {'paired':>7}   target")
        print(row("interpreter start (python -c pass)", start, start_bare, START_TARGET))
        print(row("import providers + first get_driver", *first, GET_DRIVER_TARGET))
        print(row("reference: start with an empty .pth hook", start_floor, start_bare, None))
        print("\nbaselines: a venv without the plugin; import providers + manual set_driver")
        print("ratio: of the medians; paired: median of the ratios of each back-to-back round,")
        print("which the verdict uses (drifting machine load moves both sides of a round alike)")
        if str(plugin.python).startswith("/tmp"):
            print("note: venvs under /tmp: stevedore keeps no entry-point cache there (worst case)")
        else:
            print("note: stevedore's entry-point cache on (as for venvs outside /tmp)")
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
