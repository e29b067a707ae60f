"""Local clouds for tests, and cleaning up after a test, with or without pytest.

:func:`local_cloud` starts a local StratusLab cloud and, while it runs, points
``STRATUSLAB_USER_CONFIG`` at the configuration it wrote, so code under test that builds
its own driver with ``get_driver('stratuslab')('default')`` reaches it (as moto does for
AWS). :func:`nothing_left_behind` removes the nodes and volumes that appeared while it was
active. The pytest fixtures are built from these two.

Only the standard library is imported here; the emulator and Libcloud are imported when a
cloud is started or a driver is made.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Mapping, Optional, Union, cast

if TYPE_CHECKING:  # for the annotations only: at run time they would load Libcloud and the cloud
    from stratuslab_lc_plugin.driver import StratusLabNodeDriver
    from stratuslab_lc_plugin.emulator.cloud import LocalCloud
    from stratuslab_lc_plugin.emulator.faults import Fault

__all__ = ["DEFAULT_DELAY", "LeftBehindError", "driver_for", "local_cloud", "nothing_left_behind"]

#: Seconds per VM lifecycle step: short for quick tests, long enough to see each state.
DEFAULT_DELAY = 0.05
ENV_USER_CONFIG = "STRATUSLAB_USER_CONFIG"
ENV_KEYPAIRS_DIR = "STRATUSLAB_KEYPAIRS_DIR"  # stratuslab_lc_plugin.driver.core.ENV_KEYPAIRS_DIR

Delays = Union[float, Mapping[str, float]]


class LeftBehindError(AssertionError):
    """Nodes or volumes created during a test could not be removed afterwards."""


@contextmanager
def local_cloud(*, delays: Delays = DEFAULT_DELAY, users: Optional[Mapping[str, str]] = None,
                faults: Iterable[Union[str, Fault]] = (), state_dir: Optional[str] = None,
                set_env: bool = True, **options: Any) -> Iterator[LocalCloud]:
    """A running :class:`~stratuslab_lc_plugin.emulator.LocalCloud`, stopped on exit.

    ``delays``, ``users``, ``faults``, ``state_dir`` and any other keyword go to
    ``LocalCloud`` (``state_dir=None``: a temporary directory, removed on exit). With
    ``set_env`` (the default), ``STRATUSLAB_USER_CONFIG`` names the cloud's configuration
    and ``STRATUSLAB_KEYPAIRS_DIR`` a temporary key store (``cloud.keypairs_dir``) until the
    block ends, then they get their old values back; the environment is the process's, so
    do not run two such blocks at once in threads.
    """
    from stratuslab_lc_plugin.emulator import LocalCloud

    with LocalCloud(state_dir=state_dir, delays=delays, users=users, faults=faults, **options) as cloud, \
            tempfile.TemporaryDirectory(prefix="stratuslab-keypairs-") as keypairs:
        cloud.keypairs_dir = keypairs  # key pairs of code under test stay out of ~/.stratuslab
        if not set_env:
            yield cloud
            return
        variables = {ENV_USER_CONFIG: cloud.config_path, ENV_KEYPAIRS_DIR: keypairs}
        saved = {name: os.environ.get(name) for name in variables}
        os.environ.update(variables)
        try:
            yield cloud
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def driver_for(cloud: LocalCloud, **kwargs: Any) -> StratusLabNodeDriver:
    """A new driver for ``cloud``, made as users make one: ``get_driver('stratuslab')``.

    Its key pairs go to the cloud's temporary key store (see :func:`local_cloud`).
    """
    from libcloud.compute.providers import get_driver

    import stratuslab_lc_plugin  # noqa: F401 - registers where .pth files are not processed

    if cloud.keypairs_dir:
        kwargs.setdefault("ex_keypairs_dir", cloud.keypairs_dir)
    driver = get_driver("stratuslab")("default", stratuslab_user_config=cloud.config_path, **kwargs)
    return cast("StratusLabNodeDriver", driver)  # the registry's "stratuslab" is always ours


@contextmanager
def nothing_left_behind(driver: StratusLabNodeDriver,
                        cloud: Optional[LocalCloud] = None) -> Iterator[StratusLabNodeDriver]:
    """Remove, on exit, the nodes and volumes that appeared while the block ran.

    What existed before is never touched, so a shared cloud keeps what other code made.
    New volumes are detached and destroyed, then new nodes destroyed. With ``cloud``, its
    injected faults are set aside while the block's start and end are recorded (and put
    back after), so they neither stop the clean-up nor spend their counts on it. Raises
    :class:`LeftBehindError` naming what could not be removed (a warning instead when the
    block itself raised, so its error stays).
    """
    with _faults_aside(cloud):
        nodes_before = {node.id for node in driver.list_nodes()}
        volumes_before = {volume.id for volume in driver.list_volumes()}
    body_failed = False
    try:
        yield driver
    except BaseException:
        body_failed = True
        raise
    finally:
        with _faults_aside(cloud):
            problems = _remove_new(driver, nodes_before, volumes_before)
        if problems:
            message = "could not remove what the test created: " + "; ".join(problems)
            if not body_failed:
                raise LeftBehindError(message)
            # The block's own error is what matters; this one must not replace it.
            warnings.warn(message, RuntimeWarning, stacklevel=3)


@contextmanager
def _faults_aside(cloud: Optional[LocalCloud]) -> Iterator[None]:
    if cloud is None:
        yield
        return
    saved = list(cloud.faults)
    for fault in saved:
        cloud.faults.remove(fault)
    try:
        yield
    finally:
        for fault in saved:
            cloud.faults.add(fault)


def _remove_new(driver: StratusLabNodeDriver, nodes_before: set, volumes_before: set) -> List[str]:
    from libcloud.compute.base import Node
    from libcloud.compute.types import NodeState

    from stratuslab_lc_plugin.errors import NotFoundError

    problems: List[str] = []

    def attempt(what: str, action: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        try:
            action(*args, **kwargs)
        except NotFoundError:
            pass  # gone meanwhile: nothing left to remove
        except Exception as exc:  # noqa: BLE001 - every failure is reported together
            problems.append("%s: %s" % (what, exc))

    nodes = {node.id: node for node in driver.list_nodes()}
    for volume in driver.list_volumes():
        if volume.id in volumes_before:
            continue
        extra = volume.extra or {}
        for attachment in extra.get("attachments", []):
            # A node the listing no longer shows: detach_volume reads only its id and location.
            node = nodes.get(attachment["node_id"]) or Node(
                id=attachment["node_id"], name="", state=NodeState.UNKNOWN, public_ips=[], private_ips=[],
                driver=driver, extra={"location": extra.get("location")})
            attempt("detach volume %s from node %s" % (volume.id, node.id), driver.detach_volume,
                    volume, ex_node=node)
        attempt("destroy volume %s" % volume.id, driver.destroy_volume, volume)
    for node_id, node in nodes.items():
        if node_id not in nodes_before and node.state != NodeState.TERMINATED:
            attempt("destroy node %s" % node_id, driver.destroy_node, node)
    return problems
