"""What installing the package costs a pytest suite that does not use its fixtures.

Builds the project's wheel and two virtual environments that see the same dependencies
(those of the interpreter running this script, pytest included):

* ``with``: the wheel installed, so pytest loads the ``stratuslab`` plugin (and the
  package's ``.pth`` start-up hook runs);
* ``without``: nothing of the project installed.

A small generated suite (plain tests, parametrized tests, a class, a module fixture) is run
with ``python -m pytest -q -p no:cacheprovider`` on three sides: ``without``, ``with``, and
``with`` plus ``-p no:stratuslab`` (the package installed, its plugin off: this separates
the plugin from the rest of the package). Measured side by side:

1. instructions, counted by valgrind's callgrind (deterministic, unlike time on a busy
   machine; ``PYTHONHASHSEED=0``), one run per side;
2. CPU time (user + system) of the pytest process, interleaved rounds, medians and the
   median of the per-round ratios;

and checks that the suite's output is the same on every side. Prints ratios; never fails
on them. Run: ``python bench/pytest_plugin.py [--runs N] [--no-callgrind]``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import venvkit  # noqa: E402  (the tests' helper for building venvs)
from startup import measure  # noqa: E402  (interleaved rounds after warm-up, beside this script)

MODULES = 20

SUITE_MODULE = """
    import pytest


    @pytest.fixture(scope="module")
    def table():
        return {n: n * n for n in range(100)}


    @pytest.mark.parametrize("n", range(5))
    def test_square(table, n):
        assert table[n] == n * n


    class TestStrings:
        def test_upper(self):
            assert "abc".upper() == "ABC"

        def test_split(self):
            assert "a b c".split() == ["a", "b", "c"]
"""


def plain_tests(count: int) -> str:
    return "".join("\n\ndef test_plain_%d():\n    assert sum(range(%d)) == %d\n" % (i, i, i * (i - 1) // 2)
                   for i in range(count))


def write_suite(directory: Path) -> int:
    directory.mkdir(parents=True)
    for index in range(MODULES):
        text = textwrap.dedent(SUITE_MODULE) + plain_tests(8)
        (directory / ("test_module_%02d.py" % index)).write_text(text, encoding="utf-8")
    return MODULES * (5 + 2 + 8)


Side = Tuple[str, venvkit.Venv, List[str]]


def pytest_command(env: venvkit.Venv, options: Sequence[str]) -> List[str]:
    return [str(env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *options]


def child_env(workdir: Path) -> Dict[str, str]:
    env = venvkit.child_env({"XDG_CACHE_HOME": str(workdir / "cache"), "PYTHONHASHSEED": "0"})
    # As on most machines, byte code is cached: pytest keeps the modules it rewrites (its
    # plugins' and the tests') in __pycache__, so only a first run pays for rewriting them.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def cpu_seconds(command: List[str], suite: Path, env: Dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, cwd=str(suite), env=env, check=True, capture_output=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def instructions(command: List[str], suite: Path, env: Dict[str, str], out: Path) -> int:
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % out, *command],
                          cwd=str(suite), env=env, capture_output=True, text=True, timeout=3600)
    match = re.search(r"Collected : ([0-9]+)", proc.stderr)
    if proc.returncode != 0 or not match:
        raise RuntimeError("callgrind run failed:\n" + proc.stderr[-2000:])
    return int(match.group(1))


def output_of(command: List[str], suite: Path, env: Dict[str, str]) -> str:
    proc = subprocess.run(command, cwd=str(suite), env=env, capture_output=True, text=True, timeout=300)
    return re.sub(r" in [0-9.]+s", "", proc.stdout) + proc.stderr


def build(workdir: Path) -> Tuple[venvkit.Venv, venvkit.Venv]:
    deps = venvkit.dependency_view(workdir / "deps")
    project = venvkit.copy_project(workdir / "project")
    with_package = venvkit.make_venv(workdir / "with", deps)
    venvkit.install_wheel(with_package, venvkit.build_wheel(project, workdir / "dist", with_package))
    return with_package, venvkit.make_venv(workdir / "without", deps)


def ratio_line(label: str, value: float, base: float, unit: str, paired: Optional[float] = None) -> str:
    text = "%-44s %14s %14s %7.4f" % (label, unit % value, unit % base, value / base)
    return text + ("" if paired is None else " %7.4f" % paired)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="CPU-time rounds per side (default 8)")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="stratuslab-lc-bench-pytest-"))
    try:
        print("building venvs in %s ..." % workdir, flush=True)
        with_package, without_package = build(workdir)
        suite = workdir / "suite"
        tests = write_suite(suite)
        env = child_env(workdir)
        sides: List[Side] = [
            ("without the package", without_package, []),
            ("with the package", with_package, []),
            ("with the package, -p no:stratuslab", with_package, ["-p", "no:stratuslab"]),
        ]
        commands = [pytest_command(venv_, options) for _, venv_, options in sides]

        outputs = [output_of(command, suite, env) for command in commands]
        same = all(output == outputs[0] for output in outputs)
        print("\nsuite: %d tests in %d modules; Python %s" % (tests, MODULES, sys.version.split()[0]))
        print("output identical on every side (durations aside): %s" % ("yes" if same else "NO"))
        if not same:
            for (label, _, _), output in zip(sides, outputs):
                print("--- %s\n%s" % (label, output))

        runners: List[Callable[[], float]] = [
            (lambda command=command: cpu_seconds(command, suite, env)) for command in commands
        ]
        cpu = measure(runners, args.runs)
        base = cpu[0]
        print("\nCPU time (user + system) of pytest, %d interleaved rounds, medians" % args.runs)
        print("%-44s %14s %14s %7s %7s" % ("", "side", "without", "ratio", "paired"))
        for (label, _, _), sample in list(zip(sides, cpu))[1:]:
            paired = statistics.median(a / b for a, b in zip(sample, base))
            print(ratio_line(label, statistics.median(sample) * 1000, statistics.median(base) * 1000,
                             "%.1f ms", paired))

        if args.no_callgrind or shutil.which("valgrind") is None:
            print("\ninstruction counts skipped (%s)" % ("--no-callgrind" if args.no_callgrind else "no valgrind"))
            return 0
        print("\ninstructions (callgrind), one run per side", flush=True)
        # The counts do not depend on what else runs, so the sides are counted at once.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            counts = list(pool.map(lambda indexed: instructions(indexed[1], suite, env,
                                                                workdir / ("callgrind.%d" % indexed[0])),
                                   enumerate(commands)))
        print("%-44s %14s %14s %7s" % ("", "side", "without", "ratio"))
        for (label, _, _), count in list(zip(sides, counts))[1:]:
            print(ratio_line(label, count / 1e6, counts[0] / 1e6, "%.1f M"))
        print(ratio_line("the plugin alone (with / with -p no:stratuslab)", counts[1] / 1e6, counts[2] / 1e6,
                         "%.1f M"))
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
