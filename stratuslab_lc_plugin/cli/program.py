"""The ``stratuslab-lc`` and ``stratus-copy-config`` programs: their options, help and exit status.

This is where the command line is laid out, so it behaves like its peers: ``--version``;
``--help`` for every command and group (a group given no command shows its own help);
the global options (``--config``, ``--location``, ``--json``) before or after the command;
``--json`` answers with JSON also when a command fails; errors are prefixed with the
program that was run. What each command does is in :mod:`.commands`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, NoReturn, Optional, Sequence

from stratuslab_lc_plugin.cli import commands
from stratuslab_lc_plugin.cli.failures import CommandError, describe, report
from stratuslab_lc_plugin.cli.interrupts import catching_interrupts

__all__ = ["main", "copy_config_main", "build_parser"]

PROG = commands.PROG
COPY_CONFIG_PROG = "stratus-copy-config"

DESCRIPTION = """\
Use StratusLab clouds from the shell through the Apache Libcloud driver: list locations,
sizes, images, nodes and volumes; create and control nodes and volumes; deploy a script
over SSH; run the local StratusLab cloud or a demo of the whole driver."""

EPILOG = """\
Global options (--config, --location, --json) may come before or after the command.
Exit status: 0 success, 1 a remote failure, 2 a usage or configuration error, 130
interrupted. With --json, results and errors are JSON objects on stdout.
Run "%(prog)s COMMAND --help" for the options of a command."""

Handler = Callable[[argparse.Namespace], Optional[int]]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are raised, so they can be reported as JSON too."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(message, usage=self.format_usage(), prog=self.prog)


class _Version(argparse.Action):
    """``--version``: the versions are looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str = "print the versions and exit") -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> None:
        print(version_text(parser.prog))
        parser.exit()


def version_text(prog: str) -> str:
    """``PROG VERSION (Apache Libcloud X, Python Y)``, without importing Libcloud."""
    import platform
    from importlib import metadata

    from stratuslab_lc_plugin import __version__

    try:
        libcloud = metadata.version("apache-libcloud")
    except metadata.PackageNotFoundError:
        libcloud = "not installed"
    return "%s %s (Apache Libcloud %s, Python %s)" % (prog, __version__, libcloud, platform.python_version())


# -- entry points ---------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``stratuslab-lc``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        # `cloud serve` has its own parser (in the emulator package): it gets what is left.
        args, rest = parser.parse_known_args(argv)
        if getattr(args, "handler", None) is commands.cloud_serve:
            args.rest = rest
        elif rest:
            parser.error("unrecognized arguments: %s" % " ".join(rest))
        if getattr(args, "handler", None) is None:
            group = args.group
            raise CommandError("choose a command: %s" % ", ".join(args.group_commands),
                               usage=group.format_help(), prog=group.prog)
    except SystemExit as exc:  # --help, --version
        return _exit_status(exc)
    except CommandError as exc:
        return _report(exc, PROG, _json_requested(argv))
    return _run(args.handler, args, PROG)


def copy_config_main(argv: Optional[Sequence[str]] = None) -> int:
    """``stratus-copy-config``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(
        prog=COPY_CONFIG_PROG, allow_abbrev=False,
        description="Copy the documented reference configuration to %s (mode 0600)."
                    % commands.DEFAULT_CONFIG_OUTPUT,
    )
    parser.add_argument("--version", action=_Version)
    _add_copy_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result (or the error) as JSON")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return _exit_status(exc)
    except CommandError as exc:
        return _report(exc, COPY_CONFIG_PROG, _json_requested(argv))
    return _run(commands.copy_config, args, COPY_CONFIG_PROG)


def _run(handler: Handler, args: argparse.Namespace, prog: str) -> int:
    try:
        with catching_interrupts():
            return handler(args) or 0
    except SystemExit as exc:  # `cloud serve --help` and its usage errors
        return _exit_status(exc)
    except BaseException as exc:  # noqa: BLE001 - describe() lets what it does not know through
        failure = describe(exc)
        if failure is None:
            raise
        return report(failure, prog, bool(getattr(args, "json", False)))


def _report(exc: BaseException, prog: str, as_json: bool) -> int:
    failure = describe(exc)
    assert failure is not None
    return report(failure, prog, as_json)


def _exit_status(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def _json_requested(argv: Sequence[str]) -> bool:
    """Whether ``--json`` was given, for errors found before the arguments are parsed."""
    words = list(argv)
    return "--json" in (words[:words.index("--")] if "--" in words else words)


# -- the parser -----------------------------------------------------------------------------


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool, json_only: bool = False) -> None:
    # On subcommands the defaults are SUPPRESS: a value given before the command survives.
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    if not json_only:
        parser.add_argument(
            "--config", metavar="FILE", default=default(None),
            help="user configuration file (default: $STRATUSLAB_USER_CONFIG, else %s)"
                 % commands.DEFAULT_CONFIG_OUTPUT,
        )
        parser.add_argument("--location", "-l", default=default(None),
                            help="location (configuration section); default: the file's own")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print results and errors as JSON on stdout")


def _add_copy_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("--output", default=commands.DEFAULT_CONFIG_OUTPUT, metavar="FILE",
                        help="where to write (default %(default)s)")


def _add_node_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="name of the node")
    parser.add_argument("--size", default="m1.small", help="size id (default %(default)s)")
    parser.add_argument("--image", required=True, help="Marketplace image id, volume UUID or URL")
    parser.add_argument("--network", default="public", choices=("public", "local", "private"),
                        help="network of the node (default %(default)s)")
    parser.add_argument("--public-key", metavar="FILE",
                        help="public key file (default: the location's user_public_key_file)")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``stratuslab-lc`` command line."""
    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version)
    _add_global_options(parser, top=True)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    # Without a command, main() shows the help of the group that was given (the parser's own here).
    parser.set_defaults(group=parser, group_commands=sub.choices)

    def command(group: Any, name: str, handler: Handler, text: str, json_only: bool = False,
                **options: Any) -> argparse.ArgumentParser:
        child = group.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".",
                                 allow_abbrev=False, **options)
        _add_global_options(child, top=False, json_only=json_only)
        child.set_defaults(handler=handler)
        return child

    def command_group(name: str, text: str, global_options: bool = True) -> Any:
        group = sub.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".",
                               allow_abbrev=False)
        if global_options:
            _add_global_options(group, top=False)
        children = group.add_subparsers(title="%s commands" % name, metavar="COMMAND")
        group.set_defaults(group=group, group_commands=children.choices)
        return children

    for name, handler, text in (
        ("locations", commands.locations, "list locations (configuration sections)"),
        ("sizes", commands.sizes, "list sizes (instance types)"),
        ("images", commands.images, "list the images of the location's Marketplace"),
        ("nodes", commands.nodes, "list nodes (all locations unless --location)"),
        ("volumes", commands.volumes, "list volumes (all locations unless --location)"),
    ):
        command(sub, name, handler, text)

    node = command_group("node", "create and control nodes")
    create = command(node, "create", commands.node_create, "create a node")
    _add_node_arguments(create)
    create.add_argument("--wait", action="store_true", help="wait until it runs (at most 5 minutes)")
    for name, method in (
        ("destroy", "destroy_node"),
        ("reboot", "reboot_node"),
        ("start", "start_node"),
        ("stop", "stop_node"),
        ("suspend", "ex_suspend_node"),
        ("shutdown", "ex_shutdown_node"),
    ):
        action = command(node, name, commands.node_action, "%s a node" % name)
        action.add_argument("node_id", metavar="NODE_ID")
        action.set_defaults(method=method, action=name)

    volume = command_group("volume", "create and control volumes")
    vcreate = command(volume, "create", commands.volume_create, "create a volume")
    vcreate.add_argument("--size", type=int, required=True, help="size in GiB (1-1024)")
    vcreate.add_argument("--name", required=True, help="tag of the volume")
    vcreate.add_argument("--public", action="store_true", help="visible to other users")
    attach = command(volume, "attach", commands.volume_attach, "attach a volume to a node")
    attach.add_argument("volume_id", metavar="VOLUME_ID")
    attach.add_argument("node_id", metavar="NODE_ID")
    for name, handler in (("detach", commands.volume_detach), ("destroy", commands.volume_destroy)):
        action = command(volume, name, handler, "%s a volume" % name)
        action.add_argument("volume_id", metavar="VOLUME_ID")

    deploy = command(sub, "deploy", commands.deploy, "create a node and run a script on it over SSH")
    _add_node_arguments(deploy)
    deploy.add_argument("--script", required=True, metavar="FILE", help="file to upload and run as root")
    deploy.add_argument("--ssh-key", metavar="FILE",
                        help="private key (default: the location's user_private_key_file)")

    command(sub, "drivers", commands.drivers, "list the Libcloud drivers offered by installed plugins",
            json_only=True)
    copy = command(sub, "copy-config", commands.copy_config,
                   "copy the reference configuration to %s" % commands.DEFAULT_CONFIG_OUTPUT, json_only=True)
    _add_copy_config_arguments(copy)

    cloud = command_group("cloud", "the local StratusLab cloud", global_options=False)
    # Its options belong to the emulator's own parser: `cloud serve --help` shows them.
    cloud.add_parser("serve", help="serve a local StratusLab cloud (--help for its options)",
                     add_help=False).set_defaults(handler=commands.cloud_serve)

    demo = command(sub, "demo", commands.demo, "run the whole driver against a local cloud started for it",
                   json_only=True)
    demo.add_argument("--keep", action="store_true", help="leave the local cloud running at the end")
    demo.add_argument("--delay", type=float, default=0.2,
                      help="seconds per VM lifecycle step (default %(default)s)")
    return parser
