"""The declared base of the StratusLab driver: what the compute, volume and deployment mixins build on.

:class:`DriverCore` is Libcloud's ``NodeDriver`` plus what every part of the driver needs:

- the user configuration (:attr:`DriverCore.config`) and location resolution;
- the per-location services and the connections behind them (``connectionCls`` is
  :class:`~stratuslab_lc_plugin.services.connection.StratusLabConnection`, and
  ``driver.connection`` the default location's compute connection);
- which location and VM (or disk) a node (or volume) given by a caller stands for, refusing
  before anything is sent when that is not certain (:meth:`DriverCore._locate_node`);
- one deadline for driver methods that make several calls (:func:`one_deadline`);
- asking several locations at once (:meth:`DriverCore._each_location`) on worker threads
  that :meth:`DriverCore.close` (or ``with driver:``) shuts down.

Each mixin subclasses it, so what ``self`` offers is found by inheritance.
"""

from __future__ import annotations

import contextvars
import functools
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar, Union

from libcloud.compute.base import Node, NodeDriver, NodeLocation, StorageVolume

from stratuslab_lc_plugin.config import LocationConfig, UserConfig, resolve_configuration
from stratuslab_lc_plugin.driver import arguments, convert, waiting
from stratuslab_lc_plugin.errors import (
    KeyPairNotFoundError,
    NotFoundError,
    ProtocolError,
    ServiceUnavailableError,
    StratusLabError,
)
from stratuslab_lc_plugin.services import deadline
from stratuslab_lc_plugin.services.connection import (
    DEFAULT_TIMEOUT,
    RetryPolicy,
    StratusLabConnection,
    TransportSettings,
)
from stratuslab_lc_plugin.services.one import gc_paused
from stratuslab_lc_plugin.services.pool import LocationServices, ServicePool
from stratuslab_lc_plugin.ssh.keystore import KeyStore, StoredKey

__all__ = [
    "DriverCore", "ENV_KEYPAIRS_DIR", "LocationArg", "NodeList", "default_keypairs_dir", "one_deadline", "refresh",
    "write_once",
]

LocationArg = Union[NodeLocation, str, None]
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Worker threads per location for :meth:`DriverCore._each_location`.
MAX_WORKERS_PER_LOCATION = 16


class NodeList(List[T]):
    """The nodes (or volumes) the locations gave, and why some did not.

    ``failures`` maps each location that failed to its exception (``ex_partial=True``).
    """

    def __init__(self, items: Iterable[T] = (), failures: Optional[Dict[str, Exception]] = None) -> None:
        super().__init__(items)
        self.failures: Dict[str, Exception] = failures or {}


def one_deadline(method: F) -> F:
    """Bound all the remote calls of a driver method by the driver's one ``timeout``.

    For methods that make several calls, some only after a lost answer (lookups).
    """

    @functools.wraps(method)
    def bounded(self: "DriverCore", *args: Any, **kwargs: Any) -> Any:
        with deadline.bounded(self._transport.timeout):
            return method(self, *args, **kwargs)

    return bounded  # type: ignore[return-value]


class DriverCore(NodeDriver):
    """Configuration, locations, services, ownership checks and fan-out for the mixins.

    Where the locations come from (see :func:`~stratuslab_lc_plugin.config.resolve_configuration`):

    :param stratuslab_user_config: path or file-like object of the user configuration
        (default ``$STRATUSLAB_USER_CONFIG``, else ``~/.stratuslab/stratuslab-user.cfg``).
    :param key: with a configuration file, the default location when it names a section
        (ignored otherwise, as in the 14.06 driver); with ``host``, the user name.
    :param secret: with ``host``, the password.
    :param host: a StratusLab front end: one location made from the arguments, with
        ``port``, ``secure`` (False: http), ``path`` (e.g. ``/one-proxy/xmlrpc``) and
        ``ex_pdisk_endpoint``, ``ex_marketplace_endpoint``, ``ex_ca_certs_path``.
    :param stratuslab_default_location: the default location (a section that must exist).
    :param ex_keypairs_dir: where the key pairs of ``create_key_pair`` and
        ``import_key_pair_from_*`` are kept (default: ``$STRATUSLAB_KEYPAIRS_DIR``, else
        ``~/.stratuslab/keypairs``).
    :param timeout: seconds a call may take, retries included (None: Libcloud's 60).
    :param retries: extra attempts for idempotent calls after a transient failure (2).
    :param retry_delay: first pause between attempts, in seconds (0.2).
    :param backoff: multiplier of the pause after each attempt (2).
    :param proxy_url: an HTTP(S) proxy for every service of every location, as in Libcloud.

    ``secret``, ``secure``, ``host`` and ``port`` are never handed to a connection as
    Libcloud's ``BaseDriver`` would: where each service is comes from the configuration.
    """

    name = "StratusLab"
    website = "http://stratuslab.eu/"
    type = "stratuslab"
    connectionCls = StratusLabConnection
    # A class attribute: assigning in __init__ would mutate NodeDriver's shared dict.
    features = {"create_node": ["ssh_key"]}

    def __init__(
        self,
        key: Optional[str] = "default",
        secret: Optional[str] = None,
        secure: bool = True,
        host: Optional[str] = None,
        port: Optional[int] = None,
        *,
        stratuslab_user_config: Union[str, IO[str], None] = None,
        stratuslab_default_location: Optional[str] = None,
        path: Optional[str] = None,
        ex_pdisk_endpoint: Optional[str] = None,
        ex_marketplace_endpoint: Optional[str] = None,
        ex_ca_certs_path: Optional[str] = None,
        ex_keypairs_dir: Optional[str] = None,
        timeout: Optional[float] = None,
        retries: int = 2,
        retry_delay: float = 0.2,
        backoff: float = 2.0,
        proxy_url: Optional[str] = None,
        **kwargs: object,
    ) -> None:
        timeout = DEFAULT_TIMEOUT if timeout is None else arguments.number(timeout, "timeout")
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds, not %r" % (timeout,))
        policy = RetryPolicy(arguments.number(retries, "retries"), arguments.number(retry_delay, "retry_delay"),
                             arguments.number(backoff, "backoff"))
        self._config: UserConfig = resolve_configuration(
            key, secret, host, port, secure, path, stratuslab_user_config, stratuslab_default_location,
            {"pdisk_endpoint": ex_pdisk_endpoint, "marketplace_endpoint": ex_marketplace_endpoint,
             "ca_certs_path": ex_ca_certs_path},
        )
        self._key_store = KeyStore(
            ex_keypairs_dir or default_keypairs_dir(),
            [loc.user_public_key_file for loc in self._config.locations.values() if loc.user_public_key_file],
        )
        self._transport = TransportSettings(float(timeout), policy, proxy_url)
        self._pool = ServicePool(self._transport, type(self).connectionCls, driver=self)
        self._workers: Dict[str, ThreadPoolExecutor] = {}
        self._workers_lock = threading.Lock()
        # Libcloud's BaseDriver makes driver.connection from connectionCls: the default
        # location's compute connection (see _ex_connection_class_kwargs).
        super().__init__(key=self._config.default_location, secret=None, secure=True, host=None, port=None,
                         timeout=timeout, retry_delay=policy.retry_delay, backoff=policy.backoff, proxy_url=proxy_url,
                         **kwargs)
        self.key, self.secret, self.secure = key, secret, secure
        self._pool.adopt(self.connection)
        # Idle worker threads would outlive a driver nobody closed: stop them with it. (The
        # finalizer must not hold the driver, so it gets the workers only.)
        weakref.finalize(self, _stop_workers, self._workers, self._workers_lock, False)

    def _ex_connection_class_kwargs(self) -> Dict[str, Any]:
        return {"location": self._config.location(), "service": "compute", "settings": self._transport}

    # -- configuration and locations ----------------------------------------------------

    @property
    def config(self) -> UserConfig:
        """The user configuration this driver was made from."""
        return self._config

    @property
    def default_location(self) -> NodeLocation:
        """The location used when a method is given none."""
        return convert.to_location(self._config.location(), self)

    def location_config(self, location: Union[NodeLocation, LocationConfig, str, None]) -> LocationConfig:
        """The configuration of ``location`` (a NodeLocation, its id, or None for the default)."""
        if isinstance(location, LocationConfig):
            return location
        location_id = location.id if isinstance(location, NodeLocation) else location
        return self._config.location(location_id)

    def _services(self, location: Union[NodeLocation, LocationConfig, str, None] = None) -> LocationServices:
        return self._pool.services(self.location_config(location))

    # -- which VM or disk a caller's object stands for ------------------------------------

    def _locate_node(self, node: Node, ex_location: LocationArg = None) -> Tuple[LocationConfig, int]:
        """The location and OpenNebula VM id of ``node``, or an error before anything is sent.

        Refused: an object that is not a Libcloud ``Node``, a node of another kind of
        driver, an id that is not a VM number, a node whose location is unknown while
        several locations are configured, and a node of another StratusLab driver whose
        location is another cloud or account than this driver's location of that name.
        """
        if not isinstance(node, Node):
            raise TypeError("node must be a Libcloud Node, not %r" % (type(node).__name__,))
        self._check_owner(node, "node %r" % (node.id,))
        vm = arguments.vm_id(node.id)
        location = self._owner_location(node, ex_location, "node %s" % vm, "list_nodes() or ex_get_node()")
        return location, vm

    def _locate_volume(self, volume: StorageVolume, ex_location: LocationArg = None) -> Tuple[LocationConfig, str]:
        """The location and pdisk UUID of ``volume``, with the same refusals as :meth:`_locate_node`."""
        if not isinstance(volume, StorageVolume):
            raise TypeError("volume must be a Libcloud StorageVolume, not %r" % (type(volume).__name__,))
        self._check_owner(volume, "volume %r" % (volume.id,))
        disk = arguments.check_disk_id(volume.id)
        location = self._owner_location(volume, ex_location, "volume %s" % disk, "list_volumes() or ex_get_volume()")
        return location, disk

    def _check_owner(self, item: Union[Node, StorageVolume], what: str) -> None:
        owner = item.driver
        if owner is not self and not isinstance(owner, DriverCore):
            raise ValueError(
                "%s belongs to a %s driver, not to this StratusLab driver; nothing was sent"
                % (what, getattr(owner, "name", None) or type(owner).__name__)
            )

    def _owner_location(self, item: Union[Node, StorageVolume], ex_location: LocationArg, what: str,
                        listing: str) -> LocationConfig:
        recorded = (item.extra or {}).get("location")
        asked = ex_location.id if isinstance(ex_location, NodeLocation) else ex_location
        if recorded is not None and asked is not None and recorded != asked:
            raise ValueError("%s is in location %s, not %s (ex_location); nothing was sent" % (what, recorded, asked))
        chosen = recorded if recorded is not None else asked
        if chosen is None:
            if len(self._config.locations) != 1:
                raise ValueError(
                    "%s does not say which location it is in, and this driver has %d (%s): pass "
                    "ex_location=..., or use one from %s; nothing was sent"
                    % (what, len(self._config.locations), ", ".join(self._config.locations), listing)
                )
            chosen = next(iter(self._config.locations))
        location = self.location_config(chosen)
        owner = item.driver
        if owner is not self:
            theirs = owner.config.locations.get(location.id) if isinstance(owner, DriverCore) else None
            if theirs is None or (theirs.endpoint, theirs.username) != (location.endpoint, location.username):
                raise ValueError(
                    "%s comes from another StratusLab driver whose location %s is not this driver's "
                    "(another cloud or account); nothing was sent" % (what, location.id)
                )
        return location

    # -- key pairs ------------------------------------------------------------------------

    def _stored_key(self, name: str) -> StoredKey:
        """The key pair ``name`` of the key store, or KeyPairNotFoundError."""
        key = self._key_store.get(name)
        if key is None:
            raise KeyPairNotFoundError(
                "key pair %r is neither in %s nor a configured user_public_key_file (list_key_pairs() "
                "lists them)" % (name, self._key_store.directory), name=name,
            )
        return key

    def _configured_key_name(self, location: LocationConfig) -> Optional[str]:
        """The key pair name of the location's ``user_public_key_file``, when it is one."""
        if not location.user_public_key_file:
            return None
        key = self._key_store.get_configured(location.user_public_key_file)
        return key.name if key is not None else None

    # -- nodes as the cloud sees them now -------------------------------------------------

    def _fetch_node(self, location: LocationConfig, vm: int) -> convert.StratusLabNode:
        """VM ``vm`` of ``location`` from ``one.vm.info`` (NotFoundError when it is gone)."""
        record = self._services(location).one.vm(vm)
        return convert.to_node(record, location, self, self._config.sizes)

    def _list_location_nodes(self, location: LocationConfig) -> List[Node]:
        """Every node of ``location``, from one ``one.vmpool.info``."""
        sizes = self._config.sizes
        # One pause for reading and converting: the collector then walks the nodes once,
        # when it resumes, instead of the records in between.
        with gc_paused():
            return [convert.to_node(vm, location, self, sizes) for vm in self._services(location).one.vms()]

    def _fetch_nodes(self, location_id: str, vms: Sequence[int]) -> Dict[int, Node]:
        """The nodes of the VMs ``vms`` of a location that still exist, by VM id."""
        location = self.location_config(location_id)
        if len(vms) == 1:  # a small vm.info rather than the whole pool
            try:
                return {vms[0]: self._fetch_node(location, vms[0])}
            except NotFoundError:
                return {}
        wanted = set(vms)
        return {int(str(n.id)): n for n in self._list_location_nodes(location) if int(str(n.id)) in wanted}

    def _wait_running(self, targets: Sequence[Tuple[waiting.Target, Node]], ssh_interface: str,
                      force_ipv4: bool, timeout: float, wait_period: float,
                      until: Optional[float] = None,
                      observe: Optional[Callable[[Node], None]] = None) -> List[Tuple[Node, List[str]]]:
        """:func:`waiting.wait_running` on this driver's nodes, ``until`` a monotonic deadline
        (default: ``timeout`` from now). The given Node objects are updated from the fresh ones.
        """
        end = until if until is not None else time.monotonic() + timeout
        result = waiting.wait_running(targets, self._fetch_nodes, ssh_interface=ssh_interface,
                                      force_ipv4=force_ipv4, deadline=end, wait_period=wait_period, timeout=timeout,
                                      observe=observe)
        for (_, given), (fresh, _) in zip(targets, result):
            refresh(given, fresh)
        return result

    # -- several locations at once ---------------------------------------------------------

    def _each_location(self, operation: str, function: Callable[[LocationConfig], List[T]],
                       location: LocationArg, partial: bool) -> NodeList[T]:
        """Concatenate ``function(location)`` over one location or all of them.

        Several locations are asked concurrently, each task keeping the caller's deadline.
        A failure is raised (its message starts with its location; when several failed,
        the first is raised and its message names the others) or, with ``partial``,
        reported in the result's ``failures``.
        """
        if location is not None:
            locations = [self.location_config(location)]
        else:
            locations = list(self._config.locations.values())

        def guarded(loc: LocationConfig) -> Tuple[Optional[List[T]], Optional[Exception]]:
            try:
                return function(loc), None
            except Exception as exc:  # noqa: BLE001 - reported per location below
                return None, exc

        if len(locations) == 1:
            results = [guarded(locations[0])]
        else:
            # Each task is bounded by the driver's timeout, so waiting for it is too.
            futures = [
                self._location_workers(loc.id).submit(deadline.run_in(contextvars.copy_context(), guarded), loc)
                for loc in locations
            ]
            results = [future.result() for future in futures]
        items: NodeList[T] = NodeList()
        failures: Dict[str, Exception] = {}
        for loc, (result, error) in zip(locations, results):
            if error is not None:
                failures[loc.id] = error
            else:
                items.extend(result or [])
        if failures and not partial:
            first, *others = failures.values()
            if others and isinstance(first, StratusLabError):
                # The first error keeps its class (InvalidCredsError stays catchable).
                first.add_detail("; %s also failed: %s" % (operation, "; ".join(str(e) for e in others)))
            raise first
        items.failures = failures
        return items

    def _location_workers(self, location_id: str) -> ThreadPoolExecutor:
        """The threads that ask ``location_id`` on behalf of ``_each_location``.

        Connections belong to threads, and these threads only ever ask this location, so
        each call finds a warm (keep-alive, resumed TLS) connection instead of paying a
        handshake whenever a thread of a shared pool happens to pick the location up.
        Threads are made on demand: one serves a single caller, concurrent callers get
        their own, up to :data:`MAX_WORKERS_PER_LOCATION` per location.
        """
        with self._workers_lock:
            pool = self._workers.get(location_id)
            if pool is None:
                pool = self._workers[location_id] = ThreadPoolExecutor(
                    max_workers=MAX_WORKERS_PER_LOCATION, thread_name_prefix="stratuslab-%s" % location_id
                )
        return pool

    # -- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the driver's worker threads and close its connections.

        The driver stays usable: threads and connections are made again when needed.
        Also done when the driver is garbage-collected, and by ``with driver: ...``.
        """
        _stop_workers(self._workers, self._workers_lock, True)
        self._pool.close()

    def __enter__(self) -> "DriverCore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: Environment variable naming the key store's directory (for tools that cannot pass arguments).
ENV_KEYPAIRS_DIR = "STRATUSLAB_KEYPAIRS_DIR"


def default_keypairs_dir() -> str:
    """``$STRATUSLAB_KEYPAIRS_DIR``, else ``~/.stratuslab/keypairs``, beside the usual configuration.

    Not beside ``$STRATUSLAB_USER_CONFIG``: that may be a local cloud's state directory,
    which holds the cloud's own files only.
    """
    return os.path.expanduser(os.environ.get(ENV_KEYPAIRS_DIR) or os.path.join("~", ".stratuslab", "keypairs"))


def _stop_workers(workers: Dict[str, ThreadPoolExecutor], lock: threading.Lock, wait: bool) -> None:
    with lock:
        executors = list(workers.values())
        workers.clear()
    for executor in executors:
        executor.shutdown(wait=wait)


def refresh(given: Node, fresh: Node) -> None:
    """Bring a caller's Node object up to date with ``fresh``, the same VM as just read.

    ``node.state`` never makes a remote call, so a node kept across a wait would otherwise
    still say what it said before (the 14.06 driver read the state live).
    """
    if given is fresh:
        return
    for attribute in ("name", "state", "public_ips", "private_ips", "size", "image", "created_at"):
        setattr(given, attribute, getattr(fresh, attribute))
    given.extra = dict(fresh.extra)


def write_once(write: Callable[[], T], lookup: Callable[[], Optional[T]]) -> T:
    """Run a write whose answer may be lost, without ever doing it twice.

    When the answer is lost or garbled (:class:`ServiceUnavailableError`,
    :class:`ProtocolError`) the write may or may not have happened. ``lookup()`` then
    says what it made (or None): that result is returned. Only when nothing is found is
    the write sent again, once, and not at all when the call timed out, since the
    server may still be working on it (a second write could then make a duplicate).
    When ``lookup()`` itself fails, the write's error is raised with the reason added.
    """
    for attempt in (1, 2):
        try:
            return write()
        except (ServiceUnavailableError, ProtocolError) as exc:
            try:
                found = lookup()
            except StratusLabError as lookup_error:
                exc.add_detail("; whether it was done could not be checked: %s" % lookup_error)
                raise exc from None
            if found is not None:
                return found
            if attempt == 2 or getattr(exc, "timed_out", False):
                raise
    raise AssertionError("unreachable")  # pragma: no cover

