"""``stratuslab-lc demo``: the whole driver at work against a local cloud, in under a minute.

It starts the local StratusLab cloud in a temporary directory and then uses nothing but
``get_driver('stratuslab')`` and the Libcloud API, as a user's program would: locations,
sizes and images; a node with a fresh Ed25519 key; a script run over SSH; a volume
attached, shown in use, detached and destroyed; the node destroyed. Everything it started
is stopped and removed at the end, also on Ctrl-C, unless ``--keep`` is given. The closing
summary says how each step ended: ok, FAILED, or interrupted (Ctrl-C). With ``--json`` the
story goes to stderr and the summary, as JSON, to stdout.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, cast

from stratuslab_lc_plugin.cli.console import print_json, print_table, wait_for_node
from stratuslab_lc_plugin.cli.interrupts import forget_interrupt, raise_if_interrupted
from stratuslab_lc_plugin.cli.rows import LOCATION_COLUMNS, SIZE_COLUMNS, image_row, location_row, size_row

if TYPE_CHECKING:
    from stratuslab_lc_plugin.driver import StratusLabNodeDriver

__all__ = ["run_demo"]

SCRIPT = """#!/bin/sh
echo "hello from $(hostname -s 2>/dev/null || echo the guest), running as $(id -un)"
echo "home is $HOME; the deployed file says: $(cat demo.txt)"
"""


class _Steps:
    """Times each step and remembers it for the closing summary."""

    def __init__(self, console) -> None:
        self.console = console
        self.rows: list[dict] = []

    @contextmanager
    def step(self, title: str) -> Iterator[dict]:
        row = {"step": title, "result": "ok", "seconds": 0.0}
        self.rows.append(row)
        started = time.perf_counter()
        try:
            # The heading is printed in here: a Ctrl-C seen after it counts for this step.
            self.console.rule("[bold]%s" % title, align="left")
            yield row
            raise_if_interrupted()  # one the step's own code may have swallowed
        except KeyboardInterrupt:
            row["result"] = "interrupted"
            forget_interrupt()  # the clean-up that follows must run to its end
            raise
        except BaseException:
            row["result"] = "FAILED"
            raise
        finally:
            row["seconds"] = round(time.perf_counter() - started, 2)


def run_demo(keep: bool = False, delay: float = 0.2, as_json: bool = False) -> int:
    """Run the demo; returns 0 (a failure raises, after the summary and the clean-up)."""
    from libcloud.compute.base import NodeAuthSSHKey
    from libcloud.compute.deployment import FileDeployment, MultiStepDeployment, ScriptDeployment
    from libcloud.compute.providers import get_driver
    from rich.console import Console

    import stratuslab_lc_plugin  # noqa: F401 - registers where .pth files are not processed
    from stratuslab_lc_plugin.emulator import LocalCloud

    console = Console(stderr=as_json)
    tables = sys.stderr if as_json else sys.stdout
    steps = _Steps(console)
    workdir = tempfile.mkdtemp(prefix="stratuslab-demo-")
    cloud = LocalCloud(state_dir=None if not keep else os.path.join(workdir, "cloud"), delays=delay)
    node = volume = driver = None
    try:
        with steps.step("Start the local StratusLab cloud"):
            cloud.start()
            console.print("endpoints at %s, configuration %s" % (cloud.url, cloud.config_path))

        with steps.step("get_driver('stratuslab') — no registration step"):
            cls = get_driver("stratuslab")
            # What get_driver returns is typed as a plain NodeDriver; this one has the ex_ methods.
            driver = cast("StratusLabNodeDriver", cls("default", stratuslab_user_config=cloud.config_path))
            console.print("%s.%s" % (cls.__module__, cls.__name__))

        with steps.step("list_locations, list_sizes, list_images"):
            print_table([location_row(loc) for loc in driver.list_locations()], LOCATION_COLUMNS[:3],
                        title="locations", stream=tables)
            sizes = driver.list_sizes()
            print_table([size_row(s) for s in sizes], SIZE_COLUMNS, title="sizes", stream=tables)
            images = driver.list_images()
            print_table([image_row(i) for i in images], ["id", "name", "os", "format", "bus"],
                        title="images", stream=tables)
            image = _pick_image(images)

        with steps.step("create_node with a fresh Ed25519 key"):
            private_key, public_key = _new_key(workdir)
            node = driver.create_node(
                name="demo-node", size=next(s for s in sizes if s.id == "m1.small"), image=image,
                auth=NodeAuthSSHKey(public_key),
            )
            console.print("node %s (%s) created from %s" % (node.id, node.extra["state_label"], image.name))

        with steps.step("wait until the node runs"):
            node = wait_for_node(driver, node, timeout=120)
            console.print("node %s is %s at %s" % (node.id, node.state, ", ".join(node.public_ips)))

        with steps.step("deploy a file and a script over SSH"):
            script = ScriptDeployment(SCRIPT, name="hello.sh")
            deployment = MultiStepDeployment([_file_step(workdir, FileDeployment), script])
            driver.ex_deploy_node(node, deployment, ssh_key=private_key, timeout=60, wait_period=0.2)
            console.print((script.stdout or "").rstrip() or "(no output)", markup=False, soft_wrap=True)

        with steps.step("create_volume, attach_volume, see it in use"):
            volume = driver.create_volume(1, "demo-volume")
            driver.attach_volume(node, volume)
            seen = driver.ex_get_volume(volume.id)
            console.print("volume %s is %s, attached to node %s as %s"
                          % (seen.id, seen.state, node.id, (seen.extra or {}).get("device")))

        with steps.step("detach_volume, destroy_volume"):
            driver.detach_volume(volume)
            driver.destroy_volume(volume)
            volume = None

        with steps.step("destroy_node"):
            driver.destroy_node(node)
            node = None
    finally:
        _cleanup(driver, node, volume)
        if as_json:
            print_json({"steps": steps.rows})
        else:
            print_table(steps.rows, ["step", "result", "seconds"], title="summary")
        if keep:
            console.print(
                "\nThe local cloud keeps running at %s.\nUse it with:  export STRATUSLAB_USER_CONFIG=%s\n"
                "Stop it with Ctrl-C." % (cloud.url, cloud.config_path),
                soft_wrap=True,
            )
            _serve_until_interrupted()
        cloud.stop()
        _remove(workdir)
    return 0


def _pick_image(images):
    # A guest with SFTP, so every kind of deployment step works.
    for image in images:
        if "ttylinux" not in (image.name or "").lower():
            return image
    return images[0]


def _new_key(workdir: str) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path = os.path.join(workdir, "id_ed25519")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return path, public.decode("ascii") + " demo@stratuslab-lc\n"


def _file_step(workdir: str, file_deployment):
    path = os.path.join(workdir, "demo.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("uploaded by deploy_node\n")
    return file_deployment(path, "demo.txt")


def _cleanup(driver, node, volume) -> None:
    """Best effort: leave nothing behind after a failure or Ctrl-C."""
    for action in (
        lambda: volume is not None and driver.detach_volume(volume),
        lambda: volume is not None and driver.destroy_volume(volume),
        lambda: node is not None and driver.destroy_node(node),
    ):
        try:
            action()
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass


def _serve_until_interrupted() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _remove(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
