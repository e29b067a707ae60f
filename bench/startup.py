"""What automatic registration costs: interpreter start and the first ``get_driver``.

Builds the project's wheel and virtual environments that see the same dependencies
(those of the interpreter running this script):

* ``plugin``: the wheel installed, so its ``.pth`` file runs at every start;
* ``bare``: nothing of the project installed.

and two references, each a venv with one ``.pth`` line of its own:

* ``floor``: a line that appends a do-nothing finder, what any finder-based hook costs;
* ``exec line``: a self-contained line holding a complete finder (filter, switch-off
  variable, try/import/delegate), compiled at every start: the alternative to importing
  a module.

Then measures, in fresh processes:

1. interpreter start, ``python -c pass``, counted in instructions with valgrind's
   callgrind (deterministic, so it speaks through the noise of a shared machine; skipped
   with a note when valgrind is not installed): every venv against ``bare``;
2. the same start in wall time, the sides interleaved;
3. ``import libcloud.compute.providers`` + the first ``get_driver('stratuslab')`` in the
   plugin venv vs the same import + a manual ``set_driver('stratuslab', ...)`` in the bare
   venv (the package on ``PYTHONPATH``, hook off): time measured inside the process.

and prints medians and ratios against the targets (start <= 1.04 in instructions, <= 1.03
in wall time; get_driver <= 1.10). Both sides of (3) import the driver module, so it
isolates the registrar: stevedore, the entry point scan and the wrapper.

The venvs are built outside ``/tmp`` by default (under ``~/.cache``, removed afterwards):
stevedore keeps no entry-point cache for interpreters under ``/tmp``, which users' venvs
rarely are; ``--workdir /tmp/...`` measures that worst case. Stevedore's cache goes to the
work directory, not to the user's. Run: ``python bench/startup.py [--runs N] [--no-callgrind]``.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import venvkit  # noqa: E402  (the tests' helper for building venvs)

START_INSTRUCTIONS_TARGET = 1.04
T = TypeVar("T")
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


def start_times(env: venvkit.Venv, extra: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (the child's user + system time) of one ``python -c pass``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    env.python_code("pass", env=extra)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def inner(env: venvkit.Venv, code: str, extra: dict[str, str]) -> float:
    return float(env.python_code(code, env=extra).stdout.strip())


# The references' .pth lines (see the module docstring).
FLOOR_LINE = 'import sys; exec("class F:\\n def find_spec(self, *args): return None\\nsys.meta_path.append(F())")\n'
EXEC_HOOK = """\
def find_spec(name, path=None, target=None):
    if name.startswith("libcloud.") and name.endswith(".providers"):
        try:
            from stratuslab_lc_plugin import registry
            return registry.find_providers_spec(name, path, target)
        except Exception:
            return None
find_spec.find_spec = find_spec
find_spec._stratuslab_lc_plugin_finder = True
if not [f for f in sys.meta_path if getattr(f, "_stratuslab_lc_plugin_finder", False)]:
    sys.meta_path.insert(0, find_spec)
"""
EXEC_LINE = (
    'import os, sys; os.environ.get("STRATUSLAB_LC_PLUGIN_DISABLE", "").strip().lower() in '
    '("1", "true", "yes", "on") or exec(%r, {"sys": sys})\n' % EXEC_HOOK
)


def venv_with_line(root: Path, deps: Path, line: str) -> venvkit.Venv:
    env = venvkit.make_venv(root, deps)
    (env.site_packages / "zz_reference_hook.pth").write_text(line)
    return env


def build(workdir: Path) -> tuple[dict[str, venvkit.Venv], Path]:
    deps = venvkit.dependency_view(workdir / "deps")
    project = venvkit.copy_project(workdir / "project")
    plugin = venvkit.make_venv(workdir / "plugin", deps)
    wheel = venvkit.build_wheel(project, workdir / "dist", plugin)
    venvkit.install_wheel(plugin, wheel)
    envs = {
        "plugin": plugin,
        "bare": venvkit.make_venv(workdir / "bare", deps),
        "floor": venv_with_line(workdir / "floor", deps, FLOOR_LINE),
        "exec line": venv_with_line(workdir / "exec-line", deps, EXEC_LINE),
    }
    # The package alone (no metadata, no .pth) for the manual set_driver baseline,
    # byte-compiled like pip does for the installed copy.
    package_only = workdir / "package-only"
    shutil.copytree(project / venvkit.PACKAGE, package_only / venvkit.PACKAGE)
    compileall.compile_dir(str(package_only), quiet=1)
    return envs, package_only


def instructions(env: venvkit.Venv, extra: dict[str, str]) -> int:
    """Instructions ``python -c pass`` executes, counted by callgrind (hash seed fixed,
    so the count is the same from run to run)."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", str(env.python), "-c", "pass"],
        env=venvkit.child_env(dict(extra, PYTHONHASHSEED="0")), capture_output=True, text=True, timeout=300,
    )
    found = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError("callgrind failed: %s" % proc.stderr[-500:])
    return int(found.group(1))


def count_instructions(envs: dict[str, venvkit.Venv], extra: dict[str, str], runs: int = 2) -> dict[str, list[int]]:
    # The counts do not depend on what else runs, so they are taken on every core at once.
    jobs = [name for name in envs for _ in range(runs)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = list(pool.map(lambda name: instructions(envs[name], extra), jobs))
    return {name: [count for job, count in zip(jobs, counts) if job == name] for name in envs}


def measure(sides: Sequence[Callable[[], T]], runs: int, warmup: int = 3) -> list[list[T]]:
    """Run the sides in turn, ``runs`` times, after ``warmup`` untimed rounds.

    Each round starts with another side: whichever process runs first after a pause is
    slower, and a fixed order gave that penalty to the same side every time.
    """
    for _ in range(warmup):
        for side in sides:
            side()
    samples: list[list[T]] = [[] for _ in sides]
    order = list(range(len(sides)))
    for round_number in range(runs):
        shift = round_number % len(sides)
        for index in order[shift:] + order[:shift]:
            samples[index].append(sides[index]())
    return samples


def row(label: str, ours: list[float], base: list[float], target: float | None) -> str:
    """Medians, their ratio, and the median of the per-round ratios (less sensitive to drift
    in machine load, since both sides of a round run back to back)."""
    m_ours, m_base = statistics.median(ours), statistics.median(base)
    ratio = m_ours / m_base
    paired = statistics.median(a / b for a, b in zip(ours, base))
    verdict = "" if target is None else f"<= {target:.2f} {'ok' if paired <= target else 'OVER'}"
    return f"{label:<40} {m_ours * 1000:9.2f} ms {m_base * 1000:9.2f} ms {ratio:7.3f} {paired:7.3f}   {verdict}"


def load() -> str:
    one, five, _ = os.getloadavg()
    return "load average %.2f (1 min), %.2f (5 min), %d CPUs" % (one, five, os.cpu_count() or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25, help="timed runs per side (default 25)")
    parser.add_argument("--workdir", type=Path, help="where to build the venvs (default: a temp dir)")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    args = parser.parse_args(argv)

    if args.workdir is None:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache_home.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="stratuslab-lc-bench-", dir=cache_home))
    else:
        workdir = args.workdir
    try:
        print(f"building venvs in {workdir} ...", flush=True)
        envs, package_only = build(workdir)
        plugin, bare = envs["plugin"], envs["bare"]
        on = {"XDG_CACHE_HOME": str(workdir / "cache")}
        off = dict(on, STRATUSLAB_LC_PLUGIN_DISABLE="1", PYTHONPATH=str(package_only))
        print(f"Python {sys.version.split()[0]}; at start: {load()}", flush=True)

        counts = None
        if args.no_callgrind:
            note = "instruction counts: skipped (--no-callgrind)"
        elif shutil.which("valgrind") is None:
            note = ("instruction counts: skipped, valgrind is not installed (Debian/Ubuntu: "
                    "apt-get install valgrind; Fedora: dnf install valgrind; macOS: not available)")
        else:
            note = ""
            counts = count_instructions(envs, on)

        names = list(envs)
        samples = measure([lambda env=envs[name]: start_times(env, on) for name in names], args.runs)
        start_wall = {name: [w for w, _ in runs] for name, runs in zip(names, samples)}
        start_cpu = {name: [c for _, c in runs] for name, runs in zip(names, samples)}
        first = measure(
            [lambda: inner(plugin, TIMED_GET_DRIVER, on), lambda: inner(bare, TIMED_SET_DRIVER, off)],
            max(10, args.runs // 2),
        )

        print("\n== interpreter start, python -c pass, against a venv without the plugin ==")
        if counts is None:
            print(note)
        else:
            base = int(statistics.median(counts["bare"]))
            print(f"{'instructions (callgrind)':<40} {'count':>14} {'ratio':>7}   target")
            for name in names:
                count = int(statistics.median(counts[name]))
                spread = "" if len(set(counts[name])) == 1 else f"  (runs: {', '.join(map(str, counts[name]))})"
                verdict = ""
                if name == "plugin":
                    verdict = f"<= {START_INSTRUCTIONS_TARGET:.2f} {'ok' if count / base <= START_INSTRUCTIONS_TARGET else 'OVER'}"
                print(f"{name:<40} {count:>14,d} {count / base:7.3f}   {verdict}{spread}")
        for title, times in (("wall time", start_wall), ("CPU time of the child", start_cpu)):
            print(f"\n{title + ', ' + str(args.runs) + ' runs per side':<40} {'median':>12} {'bare':>12} {'ratio':>7} {'paired':>7}")
            for name in names:
                if name != "bare":
                    print(row(name, times[name], times["bare"], None))
        print(f"\n{'':<40} {'plugin':>12} {'baseline':>12} {'ratio':>7} {'paired':>7}   target")
        print(row("import providers + first get_driver", *first, GET_DRIVER_TARGET))
        print("\nfloor: a .pth line appending a do-nothing finder; exec line: a self-contained .pth line")
        print("holding a complete finder. Baselines: a venv without the plugin; for get_driver, import")
        print("providers + manual set_driver. ratio: of the medians; paired: median of the ratios of each")
        print("round (less sensitive to drifting load). The start-up verdict is the instruction count's:")
        print("wall and CPU times on a shared machine move by more than the few per cent measured here.")
        if str(plugin.python).startswith("/tmp"):
            print("note: venvs under /tmp: stevedore keeps no entry-point cache there (worst case)")
        else:
            print("note: stevedore's entry-point cache on (as for venvs outside /tmp)")
        print(f"at the end: {load()}")
        return 0
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
