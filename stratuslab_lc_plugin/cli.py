"""The ``stratuslab-lc`` and ``stratus-copy-config`` commands.

A thin shell over the driver, obtained with ``get_driver('stratuslab')`` like any user
program: look at locations, sizes, images, nodes and volumes; create and control them;
deploy a script; see which plugin drivers Libcloud knows; run the local cloud or the demo.
Exit status: 0 success, 1 a remote failure, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
from typing import Any, Callable, Optional, Sequence

__all__ = ["main", "copy_config_main"]

EXIT_REMOTE = 1
EXIT_USAGE = 2


# -- entry points ---------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    # `cloud serve` has its own parser (in the emulator package): hand it what is left.
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "handler", None) is _cloud_serve:
        args.rest = rest
    elif rest:
        parser.error("unrecognized arguments: %s" % " ".join(rest))
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _run(args.handler, args)


def copy_config_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stratus-copy-config",
        description="Copy the reference configuration to ~/.stratuslab/stratuslab-user.cfg.",
    )
    _add_copy_config_arguments(parser)
    return _run(_copy_config, parser.parse_args(argv))


def _run(handler: Callable[[argparse.Namespace], Optional[int]], args: argparse.Namespace) -> int:
    from libcloud.common.types import InvalidCredsError, LibcloudError

    from stratuslab_lc_plugin.errors import ConfigurationError

    prog = "stratuslab-lc"
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        print("%s: interrupted" % prog, file=sys.stderr)
        return 130
    except (ConfigurationError, ValueError, TypeError) as exc:
        print("%s: error: %s" % (prog, exc), file=sys.stderr)
        return EXIT_USAGE
    except (InvalidCredsError, LibcloudError, OSError) as exc:
        print("%s: error: %s" % (prog, _message(exc)), file=sys.stderr)
        return EXIT_REMOTE


def _message(exc: BaseException) -> str:
    value = getattr(exc, "value", None)
    return str(value) if value and not str(exc) else str(exc)


# -- the parser -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=os.environ.get("STRATUSLAB_USER_CONFIG"),
        help="user configuration file (default: $STRATUSLAB_USER_CONFIG, else ~/.stratuslab/stratuslab-user.cfg)",
    )
    common.add_argument("--location", "-l", help="location (configuration section); default: the file's own")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    parser = argparse.ArgumentParser(prog="stratuslab-lc", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the whole driver against a local cloud started for the occasion")
    demo.add_argument("--keep", action="store_true", help="leave the local cloud running at the end")
    demo.add_argument("--delay", type=float, default=0.2, help="seconds per VM lifecycle step (default 0.2)")
    demo.set_defaults(handler=_demo)

    cloud = sub.add_parser("cloud", help="the local StratusLab cloud")
    cloud_sub = cloud.add_subparsers(title="cloud commands", metavar="COMMAND")
    serve = cloud_sub.add_parser(
        "serve", help="serve a local StratusLab cloud (--help for its options)", add_help=False
    )
    serve.set_defaults(handler=_cloud_serve)

    copy = sub.add_parser("copy-config", help="copy the reference configuration to ~/.stratuslab/")
    _add_copy_config_arguments(copy)
    copy.set_defaults(handler=_copy_config)

    drivers = sub.add_parser("drivers", help="the Libcloud drivers offered by installed plugins")
    drivers.add_argument("--json", action="store_true", help="print JSON for scripts")
    drivers.set_defaults(handler=_drivers)

    for name, handler, text in (
        ("locations", _locations, "list locations (configuration sections)"),
        ("sizes", _sizes, "list sizes (instance types)"),
        ("images", _images, "list the images of the location's Marketplace"),
        ("nodes", _nodes, "list nodes (all locations unless --location)"),
        ("volumes", _volumes, "list volumes (all locations unless --location)"),
    ):
        sub.add_parser(name, parents=[common], help=text).set_defaults(handler=handler)

    node = sub.add_parser("node", help="create and control nodes")
    node_sub = node.add_subparsers(title="node commands", metavar="COMMAND")
    create = node_sub.add_parser("create", parents=[common], help="create a node")
    _add_node_arguments(create)
    create.add_argument("--wait", action="store_true", help="wait until it runs")
    create.set_defaults(handler=_node_create)
    for name, method in (
        ("destroy", "destroy_node"),
        ("reboot", "reboot_node"),
        ("start", "start_node"),
        ("stop", "stop_node"),
        ("suspend", "ex_suspend_node"),
        ("shutdown", "ex_shutdown_node"),
    ):
        action = node_sub.add_parser(name, parents=[common], help="%s a node" % name)
        action.add_argument("node_id", metavar="NODE_ID")
        action.set_defaults(handler=_node_action, method=method)

    volume = sub.add_parser("volume", help="create and control volumes")
    volume_sub = volume.add_subparsers(title="volume commands", metavar="COMMAND")
    vcreate = volume_sub.add_parser("create", parents=[common], help="create a volume")
    vcreate.add_argument("--size", type=int, required=True, help="size in GiB (1-1024)")
    vcreate.add_argument("--name", required=True, help="tag of the volume")
    vcreate.add_argument("--public", action="store_true", help="visible to other users")
    vcreate.set_defaults(handler=_volume_create)
    attach = volume_sub.add_parser("attach", parents=[common], help="attach a volume to a node")
    attach.add_argument("volume_id", metavar="VOLUME_ID")
    attach.add_argument("node_id", metavar="NODE_ID")
    attach.set_defaults(handler=_volume_attach)
    for name, handler in (("detach", _volume_detach), ("destroy", _volume_destroy)):
        action = volume_sub.add_parser(name, parents=[common], help="%s a volume" % name)
        action.add_argument("volume_id", metavar="VOLUME_ID")
        action.set_defaults(handler=handler)

    deploy = sub.add_parser("deploy", parents=[common], help="create a node and run a script on it over SSH")
    _add_node_arguments(deploy)
    deploy.add_argument("--script", required=True, help="file to upload and run as root")
    deploy.add_argument("--ssh-key", help="private key (default: the location's user_private_key_file)")
    deploy.set_defaults(handler=_deploy)
    return parser


def _add_node_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True)
    parser.add_argument("--size", default="m1.small", help="size id (default m1.small)")
    parser.add_argument("--image", required=True, help="Marketplace image id, volume UUID or URL")
    parser.add_argument("--network", default="public", choices=("public", "local", "private"))
    parser.add_argument("--public-key", help="public key file (default: the location's user_public_key_file)")


def _add_copy_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument(
        "--output",
        default=os.path.join(os.path.expanduser("~"), ".stratuslab", "stratuslab-user.cfg"),
        help="where to write (default ~/.stratuslab/stratuslab-user.cfg)",
    )


# -- commands -------------------------------------------------------------------------------


def _driver(args: argparse.Namespace):
    from libcloud.compute.providers import get_driver

    import stratuslab_lc_plugin  # noqa: F401 - registers where .pth files are not processed

    cls = get_driver("stratuslab")
    return cls(args.location or "default", stratuslab_user_config=args.config)


def _locations(args):
    driver = _driver(args)
    default = driver.config.default_location
    rows = [
        {"id": loc.id, "name": loc.name, "country": loc.country, "default": loc.id == default}
        for loc in driver.list_locations()
    ]
    _show(args, rows, ["id", "name", "country", "default"])


def _sizes(args):
    rows = [
        {"id": s.id, "cpu": s.extra["cpu"], "ram_mib": s.ram, "swap_mib": s.extra["swap"]}
        for s in _driver(args).list_sizes()
    ]
    _show(args, rows, ["id", "cpu", "ram_mib", "swap_mib"])


def _images(args):
    driver = _driver(args)
    rows = [
        {
            "id": i.id,
            "name": i.name,
            "os": "%s %s" % (i.extra["os"], i.extra["os_version"]),
            "arch": i.extra["arch"],
            "format": i.extra["format"],
            "valid_until": i.extra["valid_until"],
        }
        for i in driver.list_images(args.location)
    ]
    _show(args, rows, ["id", "name", "os", "arch", "format", "valid_until"])


def _nodes(args):
    driver = _driver(args)
    _show(args, [_node_row(n) for n in driver.list_nodes(ex_location=args.location)],
          ["location", "id", "name", "state", "public_ips", "private_ips", "size", "image"])


def _node_row(node) -> dict:
    return {
        "location": node.extra["location"],
        "id": node.id,
        "name": node.name,
        "state": node.state,
        "label": node.extra["state_label"],
        "public_ips": node.public_ips,
        "private_ips": node.private_ips,
        "size": node.size.id if node.size else None,
        "image": node.image.id if node.image else None,
        "host": node.extra["host"],
        "ssh_port": node.extra["ssh_port"],
    }


def _volumes(args):
    driver = _driver(args)
    _show(args, [_volume_row(v) for v in driver.list_volumes(ex_location=args.location)],
          ["location", "id", "name", "size_gib", "state", "attached_to"])


def _volume_row(volume) -> dict:
    return {
        "location": volume.extra["location"],
        "id": volume.id,
        "name": volume.name,
        "size_gib": volume.size,
        "state": volume.state,
        "owner": volume.extra["owner"],
        "attached_to": ["%s:%s" % (a["node_id"], a["device"]) for a in volume.extra["attachments"]],
    }


def _node_create(args):
    from libcloud.compute.base import NodeAuthSSHKey

    driver = _driver(args)
    auth = NodeAuthSSHKey(_read(args.public_key)) if args.public_key else None
    node = driver.create_node(
        name=args.name, size=args.size, image=args.image, location=args.location,
        auth=auth, ex_network=args.network,
    )
    if args.wait:
        node = _wait_running(driver, node)
    _show(args, [_node_row(node)], ["location", "id", "name", "state", "public_ips", "private_ips"])


def _wait_running(driver, node, timeout: float = 300.0):
    from stratuslab_lc_plugin.progress import wait_for_node

    return wait_for_node(driver, node, timeout=timeout)


def _node_action(args):
    driver = _driver(args)
    node = driver.ex_get_node(args.node_id, args.location)
    getattr(driver, args.method)(node)
    _say(args, "%s: %s %s" % (node.extra["location"], args.method.replace("ex_", "").replace("_node", ""), node.id))


def _volume_create(args):
    driver = _driver(args)
    volume = driver.create_volume(
        args.size, args.name, location=args.location, ex_visibility="public" if args.public else "private"
    )
    _show(args, [_volume_row(volume)], ["location", "id", "name", "size_gib", "state"])


def _volume_attach(args):
    driver = _driver(args)
    volume = driver.ex_get_volume(args.volume_id, args.location)
    node = driver.ex_get_node(args.node_id, args.location)
    driver.attach_volume(node, volume)
    _say(args, "attached %s to node %s as %s" % (volume.id, node.id, volume.extra["device"]))


def _volume_detach(args):
    driver = _driver(args)
    driver.detach_volume(driver.ex_get_volume(args.volume_id, args.location))
    _say(args, "detached %s" % args.volume_id)


def _volume_destroy(args):
    driver = _driver(args)
    driver.destroy_volume(driver.ex_get_volume(args.volume_id, args.location))
    _say(args, "destroyed %s" % args.volume_id)


def _deploy(args):
    from libcloud.compute.base import NodeAuthSSHKey
    from libcloud.compute.deployment import ScriptDeployment

    driver = _driver(args)
    script = ScriptDeployment(_read(args.script), name=os.path.basename(args.script))
    auth = NodeAuthSSHKey(_read(args.public_key)) if args.public_key else None
    node = driver.deploy_node(
        name=args.name, size=args.size, image=args.image, location=args.location, auth=auth,
        ex_network=args.network, deploy=script, ssh_key=args.ssh_key, wait_period=1,
    )
    row = _node_row(node)
    row.update({"exit_status": script.exit_status, "stdout": script.stdout, "stderr": script.stderr})
    if args.json:
        print(json.dumps(row, indent=2, default=str))
    else:
        sys.stdout.write(script.stdout or "")
        sys.stderr.write(script.stderr or "")
    return 0 if script.exit_status == 0 else EXIT_REMOTE


def _drivers(args):
    from stratuslab_lc_plugin import registry

    rows = [
        {
            "type": d.type,
            "name": d.name,
            "target": d.target,
            "distribution": d.distribution,
            "status": d.status,
            "reason": d.reason or "",
        }
        for d in registry.available_drivers()
    ]
    _show(args, rows, ["type", "name", "target", "distribution", "status", "reason"])


def _copy_config(args):
    from importlib import resources

    target = os.path.abspath(os.path.expanduser(args.output))
    if os.path.exists(target) and not args.force:
        raise ValueError("%s already exists; use --force to overwrite it" % target)
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    reference = resources.files("stratuslab_lc_plugin").joinpath("data/stratuslab-user.cfg.ref")
    with reference.open("rb") as source, open(
        os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb"
    ) as destination:
        shutil.copyfileobj(source, destination)
    os.chmod(target, stat.S_IRUSR | stat.S_IWUSR)
    print(target)


def _cloud_serve(args):
    from stratuslab_lc_plugin.emulator.cloud import serve_main

    return serve_main(list(args.rest))


def _demo(args):
    from stratuslab_lc_plugin.demo import run_demo

    return run_demo(keep=args.keep, delay=args.delay)


# -- output ---------------------------------------------------------------------------------


def _show(args, rows: list[dict], columns: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2, default=str))
        return
    print_table(rows, columns)


def print_table(rows: list[dict], columns: list[str], title: Optional[str] = None) -> None:
    from rich.console import Console
    from rich.table import Table

    # A pipe or a file gets whole lines: folding at 80 columns would break scripts and grep.
    console = Console(soft_wrap=True) if sys.stdout.isatty() else Console(width=10_000)
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def _say(args, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"result": text}))
    else:
        print(text)


def _read(path: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueError("cannot read %s: %s" % (path, exc.strerror)) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
