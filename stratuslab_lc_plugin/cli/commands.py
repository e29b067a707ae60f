"""What each ``stratuslab-lc`` command does, as a user program would: ``get_driver('stratuslab')``.

Each command takes the parsed arguments and prints its result, as data: a list of rows
for listings, one object for a resource it created, one object saying what was done for
an action. People get tables and sentences; ``--json`` gives the same data as JSON.
Errors are raised, never printed here (see :mod:`.failures`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import stat
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from stratuslab_lc_plugin.cli.console import print_json, print_table, wait_for_node
from stratuslab_lc_plugin.cli.failures import Advised, CommandError, missing_package
from stratuslab_lc_plugin.cli.rows import (
    IMAGE_COLUMNS, LOCATION_COLUMNS, NODE_COLUMNS, SIZE_COLUMNS, VOLUME_COLUMNS,
    image_row, location_row, node_row, size_row, volume_row,
)

__all__ = [
    "DEFAULT_CONFIG_OUTPUT",
    "cloud_serve", "copy_config", "demo", "deploy", "drivers", "images", "locations",
    "node_action", "node_create", "nodes", "sizes", "volume_attach", "volume_create",
    "volume_destroy", "volume_detach", "volumes",
]

PROG = "stratuslab-lc"
DEFAULT_CONFIG_OUTPUT = os.path.join("~", ".stratuslab", "stratuslab-user.cfg")


# -- listings -------------------------------------------------------------------------------


def locations(args: argparse.Namespace) -> None:
    driver = _driver(args)
    default = driver.config.default_location
    _show_rows(args, [location_row(loc, default) for loc in driver.list_locations()], LOCATION_COLUMNS)


def sizes(args: argparse.Namespace) -> None:
    _show_rows(args, [size_row(s) for s in _driver(args).list_sizes()], SIZE_COLUMNS)


def images(args: argparse.Namespace) -> None:
    _show_rows(args, [image_row(i) for i in _driver(args).list_images(args.location)], IMAGE_COLUMNS)


def nodes(args: argparse.Namespace) -> None:
    found = _driver(args).list_nodes(ex_location=args.location)
    _show_rows(args, [node_row(n) for n in found], NODE_COLUMNS)


def volumes(args: argparse.Namespace) -> None:
    found = _driver(args).list_volumes(ex_location=args.location)
    _show_rows(args, [volume_row(v) for v in found], VOLUME_COLUMNS)


def drivers(args: argparse.Namespace) -> None:
    _require_stevedore("listing the drivers of Libcloud plugins")
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
    _show_rows(args, rows, ["type", "name", "target", "distribution", "status", "reason"])


# -- nodes ----------------------------------------------------------------------------------


def node_create(args: argparse.Namespace) -> None:
    driver = _driver(args)
    node = driver.create_node(
        name=args.name, size=args.size, image=args.image, location=args.location,
        auth=_auth(args), ex_network=args.network,
    )
    if args.wait:
        node = wait_for_node(driver, node, timeout=300.0)
    _show_record(args, node_row(node), NODE_COLUMNS[:6])


def node_action(args: argparse.Namespace) -> None:
    driver = _driver(args)
    node = driver.ex_get_node(args.node_id, args.location)
    getattr(driver, args.method)(node)
    location = node.extra["location"]
    _show_done(
        args,
        {"action": args.action, "location": location, "node": node.id, "name": node.name},
        "%s: node %s (%s): %s accepted" % (location, node.id, node.name, args.action),
    )


def deploy(args: argparse.Namespace) -> None:
    from libcloud.compute.deployment import ScriptDeployment
    from libcloud.compute.types import DeploymentError

    script_text = _read(args.script)
    driver = _driver(args)
    script = ScriptDeployment(script_text, name=os.path.basename(args.script))
    try:
        node = driver.deploy_node(
            name=args.name, size=args.size, image=args.image, location=args.location, auth=_auth(args),
            ex_network=args.network, deploy=script, ssh_key=args.ssh_key, wait_period=1,
        )
    except DeploymentError as exc:
        left = getattr(exc, "node", None)
        if left is None:
            raise
        location = (left.extra or {}).get("location") or args.location
        command = _destroy_command(args, left.id, location)
        raise Advised(exc, node={"id": left.id, "location": location, "name": left.name}, cleanup=command,
                      hint="node %s is left running; remove it with: %s" % (left.id, command)) from None
    row = node_row(node)
    row.update({"exit_status": script.exit_status, "stdout": script.stdout, "stderr": script.stderr})
    if args.json:
        print_json(row)
    else:
        sys.stdout.write(script.stdout or "")
        sys.stderr.write(script.stderr or "")


def _destroy_command(args: argparse.Namespace, node_id: str, location: Optional[str]) -> str:
    words = [PROG, "node", "destroy", str(node_id)]
    if location:
        words += ["--location", location]
    if args.config:
        words += ["--config", args.config]
    return " ".join(shlex.quote(word) for word in words)


# -- volumes --------------------------------------------------------------------------------


def volume_create(args: argparse.Namespace) -> None:
    volume = _driver(args).create_volume(
        args.size, args.name, location=args.location, ex_visibility="public" if args.public else "private"
    )
    _show_record(args, volume_row(volume), VOLUME_COLUMNS[:5])


def volume_attach(args: argparse.Namespace) -> None:
    driver = _driver(args)
    volume = driver.ex_get_volume(args.volume_id, args.location)
    node = driver.ex_get_node(args.node_id, args.location)
    driver.attach_volume(node, volume)
    location, device = volume.extra["location"], volume.extra["device"]
    _show_done(
        args,
        {"action": "attach", "location": location, "volume": volume.id, "node": node.id, "device": device},
        "%s: volume %s attached to node %s as %s" % (location, volume.id, node.id, device),
    )


def volume_detach(args: argparse.Namespace) -> None:
    _volume_action(args, "detach", "detach_volume", "detached")


def volume_destroy(args: argparse.Namespace) -> None:
    _volume_action(args, "destroy", "destroy_volume", "destroyed")


def _volume_action(args: argparse.Namespace, action: str, method: str, done: str) -> None:
    driver = _driver(args)
    volume = driver.ex_get_volume(args.volume_id, args.location)
    getattr(driver, method)(volume)
    location = volume.extra["location"]
    _show_done(args, {"action": action, "location": location, "volume": volume.id},
               "%s: volume %s %s" % (location, volume.id, done))


# -- the rest -------------------------------------------------------------------------------


def copy_config(args: argparse.Namespace) -> None:
    from importlib import resources

    target = os.path.abspath(os.path.expanduser(args.output))
    if os.path.exists(target) and not args.force:
        raise CommandError("%s already exists" % target, kind="FileExists",
                           hint="add --force to overwrite it")
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    reference = resources.files("stratuslab_lc_plugin").joinpath("data/stratuslab-user.cfg.ref")
    with reference.open("rb") as source, open(
        os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb"
    ) as destination:
        shutil.copyfileobj(source, destination)
    os.chmod(target, stat.S_IRUSR | stat.S_IWUSR)
    if args.json:
        print_json({"path": target})
    else:
        print(target)


def cloud_serve(args: argparse.Namespace) -> int:
    from stratuslab_lc_plugin.emulator.cloud import serve_main

    return serve_main(list(args.rest))


def demo(args: argparse.Namespace) -> int:
    from stratuslab_lc_plugin.cli.demo import run_demo

    return run_demo(keep=args.keep, delay=args.delay, as_json=args.json)


# -- helpers --------------------------------------------------------------------------------


def _require_stevedore(needed_for: str) -> None:
    # Without stevedore, importing Libcloud would log a traceback per driver type first.
    try:
        import stevedore  # noqa: F401
    except ImportError as exc:
        raise missing_package(exc, needed_for) from None


def _driver(args: argparse.Namespace) -> Any:
    _require_stevedore("registering the driver with Libcloud")
    from libcloud.compute.providers import get_driver

    import stratuslab_lc_plugin  # noqa: F401 - registers where .pth files are not processed
    from stratuslab_lc_plugin.errors import ConfigurationError

    cls = get_driver("stratuslab")
    try:
        return cls(args.location or "default", stratuslab_user_config=args.config)
    except ConfigurationError as exc:
        path = getattr(exc, "path", None)
        if path and not os.path.exists(path):
            raise Advised(exc, hint=_copy_config_hint(path)) from None
        raise


def _copy_config_hint(path: str) -> str:
    output = "" if path == os.path.expanduser(DEFAULT_CONFIG_OUTPUT) else " --output " + shlex.quote(path)
    return ("create it with: stratus-copy-config%s (then set endpoint, username, password and "
            "marketplace_endpoint), "
            "or name another file with --config FILE or STRATUSLAB_USER_CONFIG" % output)


def _auth(args: argparse.Namespace) -> Any:
    if not args.public_key:
        return None
    from libcloud.compute.base import NodeAuthSSHKey

    return NodeAuthSSHKey(_read(args.public_key))


def _show_rows(args: argparse.Namespace, rows: List[Dict[str, Any]], columns: Sequence[str]) -> None:
    if args.json:
        print_json(rows)
    else:
        print_table(rows, columns)


def _show_record(args: argparse.Namespace, record: Dict[str, Any], columns: Sequence[str]) -> None:
    if args.json:
        print_json(record)
    else:
        print_table([record], columns)


def _show_done(args: argparse.Namespace, record: Mapping[str, Any], sentence: str) -> None:
    if args.json:
        print_json(dict(record))
    else:
        print(sentence)


def _read(path: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CommandError("cannot read %s: %s" % (path, exc.strerror), kind="UnreadableFile") from None
