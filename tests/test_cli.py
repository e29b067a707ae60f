"""The stratuslab-lc command line and stratus-copy-config, against the local cloud."""

from __future__ import annotations

import ast
import json
import os
import queue
import shlex
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import stratuslab_lc_plugin
from stratuslab_lc_plugin.cli import copy_config_main, main
from stratuslab_lc_plugin.cli.program import build_parser
from stratuslab_lc_plugin.config import load_user_config

pytestmark = pytest.mark.timeout(120)

CLI_DIR = Path(stratuslab_lc_plugin.__file__).parent / "cli"


@pytest.fixture
def run(cloud, capsys):
    """``run(*argv)`` -> (exit status, stdout, stderr) with the shared cloud's configuration."""

    def invoke(*argv, config=True):
        args = list(argv) + (["--config", cloud.config_path] if config else [])
        status = main(args)
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


@pytest.fixture
def image(run):
    status, out, _ = run("images", "--json")
    assert status == 0
    return next(row["id"] for row in json.loads(out) if "ubuntu" in row["name"])


def as_json(out):
    return json.loads(out)


def one_error_line(err, prog="stratuslab-lc"):
    """The ``PROG: error: ...`` line of stderr (exactly one), without the prefix."""
    lines = [line for line in err.splitlines() if line.startswith(prog + ": error: ")]
    assert len(lines) == 1, err
    return lines[0][len(prog + ": error: "):]


# -- listings and actions -------------------------------------------------------------------


def test_listings_as_json(run):
    status, out, _ = run("locations", "--json")
    assert status == 0 and as_json(out) == [
        {"id": "local", "name": "Local StratusLab cloud", "country": "ZZ", "default": True}
    ]
    status, out, _ = run("sizes", "--json")
    assert status == 0 and {row["id"] for row in as_json(out)} >= {"t1.micro", "m1.small", "c1.xlarge"}
    status, out, _ = run("images", "--json")
    assert status == 0 and all(len(row["id"]) == 27 for row in as_json(out))
    status, out, _ = run("volumes", "--json")
    assert status == 0 and isinstance(as_json(out), list)


def test_tables_for_people(run):
    status, out, _ = run("sizes")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split()[:2] == ["id", "cpu"]
    assert any(line.split()[0] == "m1.small" for line in rows)


def test_node_and_volume_commands_answer_with_data(run, image):
    status, out, err = run("node", "create", "--name", "from-cli", "--image", image, "--wait", "--json")
    assert status == 0, err
    node = as_json(out)
    assert node["state"] == "running" and node["public_ips"] and node["location"] == "local"

    status, out, _ = run("nodes", "--json")
    assert node["id"] in {row["id"] for row in as_json(out)}

    status, out, err = run("volume", "create", "--size", "2", "--name", "cli-volume", "--json")
    assert status == 0, err
    volume = as_json(out)["id"]
    status, out, err = run("volume", "attach", volume, node["id"], "--json")
    assert status == 0, err
    assert as_json(out) == {"action": "attach", "location": "local", "volume": volume,
                            "node": node["id"], "device": "vdz"}
    status, out, _ = run("volumes", "--json")
    assert [row["attached_to"] for row in as_json(out) if row["id"] == volume] == [["%s:vdz" % node["id"]]]
    status, out, _ = run("volume", "detach", volume)
    assert status == 0 and out == "local: volume %s detached\n" % volume
    status, out, _ = run("volume", "destroy", volume, "--json")
    assert status == 0 and as_json(out) == {"action": "destroy", "location": "local", "volume": volume}

    status, out, err = run("node", "reboot", node["id"], "--json")
    assert status == 0, err
    assert as_json(out) == {"action": "reboot", "location": "local", "node": node["id"], "name": "from-cli"}
    status, out, err = run("node", "destroy", node["id"])
    assert status == 0, err
    assert out == "local: node %s (from-cli): destroy accepted\n" % node["id"]
    status, out, _ = run("nodes", "--json")
    assert node["id"] not in {row["id"] for row in as_json(out)}


def test_deploy_runs_a_script(run, image, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from the script\n")
    status, out, err = run("deploy", "--name", "cli-deploy", "--image", image, "--script", str(script), "--json")
    assert status == 0, err
    result = as_json(out)
    assert result["exit_status"] == 0 and result["stdout"].strip() == "hello from the script"
    assert run("node", "destroy", result["id"])[0] == 0


def test_failed_deploy_says_how_to_remove_the_node_and_that_command_works(run, image, tmp_path, cloud):
    script = tmp_path / "fails.sh"
    script.write_text("#!/bin/sh\necho about to fail\nexit 3\n")
    status, out, err = run("deploy", "--name", "cli-fails", "--image", image, "--script", str(script), "--json")
    assert status == 1
    failure = as_json(out)
    node_id = failure["node"]["id"]
    assert failure["location"] == "local" and failure["node"]["location"] == "local"
    assert "exited with status 3" in failure["error"]
    assert failure["cleanup"] == "stratuslab-lc node destroy %s --location local --config %s" % (
        node_id, shlex.quote(cloud.config_path))
    assert "stratuslab-lc: hint: node %s is left running; remove it with: %s" % (node_id, failure["cleanup"]) in err
    status, out, _ = run("nodes", "--json")
    assert node_id in {row["id"] for row in as_json(out)}  # it really was left running

    words = shlex.split(failure["cleanup"])
    assert words[0] == "stratuslab-lc"
    status, out, err = run(*words[1:], config=False)
    assert status == 0, err
    status, out, _ = run("nodes", "--json")
    assert node_id not in {row["id"] for row in as_json(out)}


# -- global options, help, version ----------------------------------------------------------


def test_global_options_before_or_after_the_command(run, cloud, capsys):
    expected = run("locations", "--json")[1]
    for argv in (
        ["--json", "--config", cloud.config_path, "locations"],
        ["--config", cloud.config_path, "locations", "--json"],
        ["--json", "locations", "--config", cloud.config_path],
        ["--location", "local", "--json", "--config", cloud.config_path, "locations"],
    ):
        assert main(argv) == 0, argv
        assert capsys.readouterr().out == expected, argv
    # ... and between a group and its command
    assert main(["node", "--json", "--config", cloud.config_path, "destroy", "999999"]) == 1
    assert as_json(capsys.readouterr().out)["type"] == "NotFoundError"


def test_version(capsys):
    from importlib import metadata

    expected = "(Apache Libcloud %s, Python %s)" % (metadata.version("apache-libcloud"), sys.version.split()[0])
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == "stratuslab-lc %s %s\n" % (stratuslab_lc_plugin.__version__, expected)
    assert copy_config_main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("stratus-copy-config %s (" % stratuslab_lc_plugin.__version__)


def leaf_commands(parser, path=()):
    """Every command path of the parser, e.g. ("node", "create")."""
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        for name, child in (choices.items() if isinstance(choices, dict) else ()):
            if isinstance(child, type(parser)):
                grandchildren = list(leaf_commands(child, path + (name,)))
                yield from grandchildren or [path + (name,)]


def test_every_command_and_group_has_its_own_help(capsys):
    commands = list(leaf_commands(build_parser()))
    assert ("node", "create") in commands and ("volume", "attach") in commands and ("demo",) in commands
    groups = {path[:-1] for path in commands if len(path) > 1}
    assert groups == {("node",), ("volume",), ("cloud",)}
    for path in commands + sorted(groups):
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: stratuslab-lc %s " % " ".join(path)), (path, out[:200])
    main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "stratuslab-lc COMMAND --help" in top and "Exit status" in top


@pytest.mark.parametrize("group,commands", [
    ("node", "create, destroy, reboot, start, stop, suspend, shutdown"),
    ("volume", "create, attach, detach, destroy"),
    ("cloud", "serve"),
])
def test_a_group_without_its_command_shows_its_own_help(capsys, group, commands):
    assert main([group]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: stratuslab-lc %s " % group)
    assert "%s commands:" % group in captured.err
    assert "list locations" not in captured.err  # not the top-level help
    assert one_error_line(captured.err, "stratuslab-lc " + group) == "choose a command: " + commands


# -- errors ---------------------------------------------------------------------------------


def test_remote_failure_exits_1_with_one_line(run):
    status, out, err = run("node", "destroy", "999999")
    assert status == 1 and out == ""
    assert err.startswith("stratuslab-lc: error: local: one.vm.info failed") and err.count("\n") == 1


def test_remote_failure_as_json(run):
    status, out, err = run("--json", "node", "destroy", "999999")
    assert status == 1
    failure = as_json(out)
    assert set(failure) == {"error", "type", "location"}
    assert failure["type"] == "NotFoundError" and failure["location"] == "local"
    assert failure["error"].startswith("local: one.vm.info failed")
    assert one_error_line(err) == failure["error"]


def test_broken_configuration_as_json_exits_2(run, tmp_path):
    broken = tmp_path / "broken.cfg"
    broken.write_text("[default]\nendpoint = https://example.org/one-proxy/xmlrpc\n[default]\n")
    broken.chmod(0o600)
    status, out, err = run("--json", "nodes", "--config", str(broken), config=False)
    assert status == 2
    failure = as_json(out)
    assert failure["type"] == "ConfigurationError" and str(broken) in failure["error"]
    assert "line 3" in failure["error"] and "location" in failure
    assert one_error_line(err) == failure["error"] and "Traceback" not in err


def test_usage_errors_exit_2_also_as_json(run, capsys):
    status, out, err = run("volume", "create", "--size", "0", "--name", "x")
    assert status == 2 and "between 1 and 1024" in one_error_line(err)
    assert main(["node", "create"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("usage: stratuslab-lc node create")
    assert one_error_line(captured.err, "stratuslab-lc node create").startswith(
        "the following arguments are required: --name, --image")
    assert main(["--json", "node", "create", "--name", "x"]) == 2
    captured = capsys.readouterr()
    assert as_json(captured.out) == {
        "error": "the following arguments are required: --image", "type": "UsageError", "location": None}
    assert main(["nodes", "--bogus"]) == 2
    assert one_error_line(capsys.readouterr().err) == "unrecognized arguments: --bogus"


def test_missing_configuration_suggests_stratus_copy_config(run, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "missing.cfg"
    status, out, err = run("nodes", "--config", str(missing), config=False)
    assert status == 2 and out == ""
    assert one_error_line(err) == "configuration file %s does not exist" % missing
    assert "stratuslab-lc: hint: create it with: stratus-copy-config --output %s " % missing in err
    # The default place: the hint is the bare command.
    monkeypatch.delenv("STRATUSLAB_USER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["--json", "locations"]) == 2
    failure = as_json(capsys.readouterr().out)
    assert failure["hint"].startswith("create it with: stratus-copy-config (then set endpoint")


def test_configuration_from_the_environment(cloud, capsys, monkeypatch):
    monkeypatch.setenv("STRATUSLAB_USER_CONFIG", cloud.config_path)
    assert main(["locations", "--json"]) == 0
    assert as_json(capsys.readouterr().out)[0]["id"] == "local"


BLOCK_STEVEDORE = textwrap.dedent(
    """
    import sys

    class NoStevedore:
        # As if stevedore were not installed: the same ModuleNotFoundError an import raises then.
        def find_spec(self, name, path=None, target=None):
            if name == "stevedore" or name.startswith("stevedore."):
                raise ModuleNotFoundError("No module named %r" % name, name=name)
            return None

    sys.meta_path.insert(0, NoStevedore())
    from stratuslab_lc_plugin.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("argv", [["drivers"], ["--json", "drivers"], ["nodes"]])
def test_without_stevedore_one_line_names_the_package(argv, cloud):
    env = dict(os.environ, STRATUSLAB_USER_CONFIG=cloud.config_path)
    completed = subprocess.run([sys.executable, "-c", BLOCK_STEVEDORE, *argv], capture_output=True,
                               text=True, timeout=60, env=env)
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.splitlines()
    assert lines[0].startswith("stratuslab-lc: error: the Python package stevedore is not installed (")
    assert lines[1:] == ["stratuslab-lc: hint: pip install stevedore"]
    if "--json" in argv:
        assert json.loads(completed.stdout)["type"] == "MissingPackage"
    else:
        assert completed.stdout == ""


def test_drivers_lists_our_entry_point(capsys):
    assert main(["drivers", "--json"]) == 0
    rows = as_json(capsys.readouterr().out)
    ours = [row for row in rows if row["name"] == "stratuslab" and row["type"] == "compute"]
    assert ours and ours[0]["target"] == "stratuslab_lc_plugin.driver:StratusLabNodeDriver"


# -- copy-config ----------------------------------------------------------------------------


def test_copy_config_writes_a_private_file_once(tmp_path, capsys):
    target = tmp_path / "home" / ".stratuslab" / "stratuslab-user.cfg"
    assert copy_config_main(["--output", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert load_user_config(str(target)).default_location == "sl-cloud"
    before = target.read_bytes()
    assert copy_config_main(["--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err, "stratus-copy-config") == "%s already exists" % target
    assert "stratus-copy-config: hint: add --force to overwrite it" in err
    assert target.read_bytes() == before
    assert copy_config_main(["--output", str(target), "--force", "--json"]) == 0
    assert as_json(capsys.readouterr().out) == {"path": str(target)}


def test_each_program_prefixes_its_errors_with_its_own_name(tmp_path, capsys):
    target = tmp_path / "exists.cfg"
    target.write_text("mine\n")
    assert main(["copy-config", "--output", str(target)]) == 2
    assert capsys.readouterr().err.startswith("stratuslab-lc: error: ")
    assert copy_config_main(["--output", str(target)]) == 2
    assert capsys.readouterr().err.startswith("stratus-copy-config: error: ")
    assert copy_config_main(["--bogus"]) == 2
    assert one_error_line(capsys.readouterr().err, "stratus-copy-config") == "unrecognized arguments: --bogus"
    assert target.read_text() == "mine\n"


def test_copy_config_defaults_to_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    completed = subprocess.run(
        [sys.executable, "-c", "from stratuslab_lc_plugin.cli import copy_config_main; raise SystemExit(copy_config_main([]))"],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / ".stratuslab" / "stratuslab-user.cfg").is_file()


# -- the demo -------------------------------------------------------------------------------


def demo_env(scratch: Path) -> dict:
    return dict(os.environ, TMPDIR=str(scratch), PYTHONUNBUFFERED="1", COLUMNS="200")


def test_demo_runs_and_leaves_nothing_behind(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "stratuslab_lc_plugin.cli", "demo"],
        capture_output=True, text=True, timeout=120, env=demo_env(scratch),
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "destroy_node" in completed.stdout and "FAILED" not in completed.stdout
    assert list(scratch.iterdir()) == []


def test_demo_summary_as_json(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "stratuslab_lc_plugin.cli", "demo", "--json", "--delay", "0.05"],
        capture_output=True, text=True, timeout=120, env=demo_env(scratch),
    )
    assert completed.returncode == 0, completed.stderr
    steps = json.loads(completed.stdout)["steps"]
    assert [row["result"] for row in steps] == ["ok"] * len(steps) and steps[-1]["step"] == "destroy_node"
    assert "deploy a file and a script over SSH" in completed.stderr  # the story went to stderr
    assert list(scratch.iterdir()) == []


def test_demo_interrupted_says_so_and_cleans_up(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # Long lifecycle steps: the node is still booting when Ctrl-C arrives.
    proc = subprocess.Popen(
        [sys.executable, "-m", "stratuslab_lc_plugin.cli", "demo", "--delay", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=demo_env(scratch),
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                              daemon=True)
    reader.start()
    try:
        seen = []
        while not seen or not seen[-1].startswith("wait until the node runs"):
            line = lines.get(timeout=60)
            assert line is not None, "".join(seen)
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        proc.wait(timeout=60)
        reader.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while True:
        line = lines.get(timeout=60)
        if line is None:
            break
        seen.append(line)
    out = "".join(seen)
    assert proc.returncode == 130, out + err
    summary = out[out.index("summary"):]
    assert "FAILED" not in summary
    [interrupted] = [line for line in summary.splitlines() if "interrupted" in line]
    assert interrupted.startswith("wait until the node runs")
    assert err.splitlines()[-1] == "stratuslab-lc: error: interrupted"
    assert list(scratch.iterdir()) == []


# -- the package ----------------------------------------------------------------------------


def imports_of(path: Path) -> set:
    """Modules of stratuslab_lc_plugin.cli imported anywhere in ``path`` (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + ["%s.%s" % (node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.startswith("stratuslab_lc_plugin.cli.") and
                     (CLI_DIR / (n.rsplit(".", 1)[1] + ".py")).is_file())
    return found


def test_the_cli_modules_import_each_other_without_cycles():
    graph = {"stratuslab_lc_plugin.cli." + p.stem: imports_of(p) for p in CLI_DIR.glob("*.py")}
    graph.pop("stratuslab_lc_plugin.cli.__init__")  # the package re-exports; nothing imports it back
    graph.pop("stratuslab_lc_plugin.cli.__main__")
    assert "stratuslab_lc_plugin.cli.commands" not in graph["stratuslab_lc_plugin.cli.demo"]

    def visit(module, trail):
        assert module not in trail, "import cycle: %s" % " -> ".join(trail + (module,))
        for target in graph.get(module, ()):
            visit(target, trail + (module,))

    for module in graph:
        visit(module, ())


def test_importing_the_cli_imports_neither_libcloud_nor_rich():
    code = ("import sys, stratuslab_lc_plugin.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('libcloud', 'rich', 'paramiko')))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, STRATUSLAB_LC_PLUGIN_DISABLE="1"))
    assert completed.stdout.strip() == "[]", completed.stderr


def test_a_broken_import_inside_the_package_is_a_traceback_not_an_install_hint(cloud, monkeypatch):
    import stratuslab_lc_plugin.cli.commands as commands

    def broken(args):
        from stratuslab_lc_plugin.config import NO_SUCH_NAME  # noqa: F401

    monkeypatch.setattr(commands, "locations", broken)
    with pytest.raises(ImportError, match="NO_SUCH_NAME"):
        main(["locations", "--config", cloud.config_path])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed one
def test_a_ctrl_c_swallowed_by_a_finalizer_still_ends_a_wait(cloud):
    # The garbage collector runs finalizers at any moment; a KeyboardInterrupt raised in one
    # is printed as "Exception ignored" and lost. The command line remembers it.
    import os as _os
    import signal as _signal

    from libcloud.compute.providers import get_driver

    from stratuslab_lc_plugin.cli.console import wait_for_node
    from stratuslab_lc_plugin.cli.interrupts import catching_interrupts

    class Swallower:
        def __del__(self):
            _os.kill(_os.getpid(), _signal.SIGINT)
            for _ in range(1000):  # the handler runs here, inside the finalizer
                pass

    polls = []

    class SwallowingDriver(get_driver("stratuslab")):
        """Ctrl-C arrives while a finalizer runs, between reading the node and showing it."""

        def wait_until_running(self, nodes, *args, ex_on_poll=None, **kwargs):
            def poll(node):
                polls.append(node.state)
                Swallower()  # collected at once: its __del__ swallows the KeyboardInterrupt
                ex_on_poll(node)

            return super().wait_until_running(nodes, *args, ex_on_poll=poll, **kwargs)

    with SwallowingDriver("default", stratuslab_user_config=cloud.config_path) as driver:
        node = driver.create_node(name="interrupted", size="t1.micro", image=driver.list_images()[0])
        try:
            with catching_interrupts(), pytest.raises(KeyboardInterrupt):
                wait_for_node(driver, node, timeout=30, poll=0.01)
        finally:
            driver.destroy_node(node)
    assert len(polls) == 1  # ended at that poll, not at the timeout


def test_a_wait_for_a_stopped_node_ends_at_once_and_says_why(cloud):
    import time as _time

    from libcloud.compute.providers import get_driver

    from stratuslab_lc_plugin.cli.console import wait_for_node
    from stratuslab_lc_plugin.errors import InvalidStateError

    with get_driver("stratuslab")("default", stratuslab_user_config=cloud.config_path) as driver:
        node = driver.create_node(name="stopped", size="t1.micro", image=driver.list_images()[0])
        try:
            node = wait_for_node(driver, node, timeout=30, poll=0.01)
            assert node.state == "running" and node.public_ips
            driver.stop_node(node)
            started = _time.monotonic()
            with pytest.raises(InvalidStateError, match=r"^local: node %s is \w+ and will not run$" % node.id):
                wait_for_node(driver, node, timeout=300, poll=0.01)
            assert _time.monotonic() - started < 30  # not the 300 s timeout
        finally:
            driver.destroy_node(node)
