"""The local StratusLab cloud as one object: ``with LocalCloud() as cloud: ...``.

It wires the pieces of a site together (TLS material, the SQLite store, the ONE pool
and its life cycle, the Marketplace and pdisk services, the per-VM SSH guests, the
HTTPS front), and publishes what a client needs, only once the cloud listens: the CA
certificate, a key pair and a ready-to-use ``stratuslab-user.cfg``. Scripts wait for
that file to appear. :func:`serve_main` is ``stratuslab-lc cloud serve``.
"""

from __future__ import annotations

import argparse
import getpass
import hmac
import ipaddress
import logging
import os
import secrets
import signal
import sys
import threading
from typing import Dict, Iterable, Literal, Mapping, Optional, Sequence, Tuple, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import lifecycle as lc
from .catalogue import Catalogue
from .faults import KINDS, Fault, FaultSet
from .connections import DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT, ConnectionLimits
from .front import DEFAULT_MAX_BODY, Front, Mount, listen_address, make_server_context
from .guests import GuestManager
from .marketplace import MarketplaceHandler
from .one import OneHandler, VmPool, proxy_user_name
from .pdisk import DEFAULT_LOCALE, PdiskHandler, freemarker_number
from .store import Store
from .statedir import StateDir
from .tls import CertificateAuthority

__all__ = ["LocalCloud", "serve_main", "check_user", "parse_users", "DEFAULT_USER", "USERS_ENV"]

log = logging.getLogger(__name__)

DEFAULT_USER = "stratus"
#: ``cloud serve``'s users when no --user-file or --user is given: NAME:PASSWORD lines.
USERS_ENV = "STRATUSLAB_LC_USERS"
CONFIG_NAME = "stratuslab-user.cfg"
CA_NAME = "ca.pem"
KEY_NAME = "id_ed25519"
DB_NAME = "cloud.db"
DB_COMPANIONS = ("cloud.db-wal", "cloud.db-shm", "cloud.db-journal")  # SQLite's, mode of the db
_SECRETS_SCHEMA = "CREATE TABLE IF NOT EXISTS cloud_secret (key TEXT PRIMARY KEY, value TEXT NOT NULL);"


class LocalCloud:
    """A running local StratusLab cloud.

    ``state_dir``: where state lives (None: a temporary directory removed on stop); the
    cloud refuses a directory holding files it did not write (see :mod:`.statedir`);
    ``users``: ``{name: password}`` (None: one generated user ``stratus`` whose password
    survives restarts on the same state directory); ``delays``: seconds per life-cycle
    step, or a mapping per step (see :data:`.lifecycle.DELAY_STEPS`); ``guests``: a
    ``GuestHooks`` object, None for the default SSH guests or False for
    none; ``catalogue``: the Marketplace catalogue (None: the seeded one); ``faults``:
    faults to inject, ``"TARGET=KIND[:COUNT]"`` strings or :class:`~.faults.Fault`
    values (see :mod:`.faults`). ``cloud.faults`` adds and clears them while it runs.
    ``host`` must be a loopback address unless ``allow_non_loopback`` (whoever logs in to
    a VM's SSH guest runs commands on this machine; the guests always listen on loopback).
    ``max_connections`` and ``request_timeout`` bound the HTTPS front (see
    :mod:`.connections`); ``timeout`` bounds each socket read and write and a keep-alive
    connection's wait for its next request. ``pdisk_locale`` is the locale pdisk's
    FreeMarker templates print numbers for (``en_US``: ``"1,024"``; ``fr_FR``, ``de_DE``...).
    """

    #: A key pair store for drivers of this cloud (set by :func:`stratuslab_lc_plugin.testing.local_cloud`).
    keypairs_dir: Optional[str] = None

    def __init__(self, state_dir: Optional[str] = None, port: int = 0,
                 users: Optional[Mapping[str, str]] = None,
                 delays: Union[float, Mapping[str, float]] = lc.DEFAULT_DELAY,
                 host: str = "127.0.0.1",
                 guests: Union[lc.GuestHooks, Literal[False], None] = None,
                 catalogue: Optional[Catalogue] = None,
                 max_body: int = DEFAULT_MAX_BODY, timeout: float = 30.0,
                 faults: Iterable[Union[str, Fault]] = (),
                 allow_non_loopback: bool = False,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 pdisk_locale: str = DEFAULT_LOCALE) -> None:
        for name, password in (users or {}).items():
            check_user(name, password)
        self._listen = listen_address(host, allow_non_loopback)
        lc.parse_delays(delays)  # fail early on a bad delay specification
        self.faults = FaultSet(faults)  # parsed now: a bad fault fails before anything starts
        self._requested_dir = state_dir
        self._port = port
        self._requested_users = dict(users) if users is not None else None
        self._delays = delays
        self.host = host
        self._allow_non_loopback = allow_non_loopback
        self._guests_arg = guests
        self._catalogue_arg = catalogue
        self._max_body = max_body
        self._timeout = timeout
        ConnectionLimits(max_connections, request_timeout)  # fail early on bad bounds
        freemarker_number(0, pdisk_locale)                  # and on an unknown locale
        self._pdisk_locale = pdisk_locale
        self._bounds = (max_connections, request_timeout)
        self._started = False
        self._dir: Optional[StateDir] = None
        self.state_dir = ""
        self.users: Dict[str, str] = {}
        self.store: Optional[Store] = None
        self.catalogue: Optional[Catalogue] = None
        self.guests: Optional[lc.GuestHooks] = None
        self.pool: Optional[VmPool] = None
        self.lifecycle: Optional[lc.Lifecycle] = None
        self.pdisk: Optional[PdiskHandler] = None
        self.marketplace: Optional[MarketplaceHandler] = None
        self.ca: Optional[CertificateAuthority] = None
        self._front: Optional[Front] = None
        self.url = ""

    # -- paths -------------------------------------------------------------------------

    @property
    def listening_on(self) -> str:
        """``ADDRESS:PORT`` of the HTTPS front (``0.0.0.0`` means every interface)."""
        return "%s:%d" % (self._listen, self.port)

    @property
    def port(self) -> int:
        return self._front.port if self._front else self._port

    @property
    def ca_path(self) -> str:
        return os.path.join(self.state_dir, CA_NAME)

    @property
    def config_path(self) -> str:
        return os.path.join(self.state_dir, CONFIG_NAME)

    @property
    def private_key_path(self) -> str:
        return os.path.join(self.state_dir, KEY_NAME)

    @property
    def public_key_path(self) -> str:
        return self.private_key_path + ".pub"

    @property
    def endpoint(self) -> str:
        """The compute endpoint as written in the configuration file."""
        return self.url + "/one-proxy/xmlrpc"

    def client_cert(self, user: str) -> Tuple[str, str]:
        """(certificate, key) PEM paths of a client certificate for the ``/cert/`` routes."""
        if self.ca is None:
            raise RuntimeError("the cloud is not started")
        return self.ca.client_pair(user)

    # -- life ----------------------------------------------------------------------------

    def __enter__(self) -> "LocalCloud":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "LocalCloud":
        if self._started:
            return self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # Each part goes to its attribute as soon as it exists, so that stop() (called
        # when a later step fails) closes what was made.
        self._started = True
        self._dir = state = StateDir(self._requested_dir)
        self.state_dir = state.path
        for stale in (CONFIG_NAME, CA_NAME):   # they announce a *listening* cloud
            state.withdraw(stale)
        self.store = store = Store(state.private_file(DB_NAME, *DB_COMPANIONS))
        self.users = self._resolve_users(store)
        self.ca = ca = CertificateAuthority(state.private_dir("tls"))
        cert_path, key_path = ca.server_pair(
            [self._listen] if self._listen != "0.0.0.0" else [])
        self._ensure_key_pair(state)

        self.catalogue = catalogue = (self._catalogue_arg if self._catalogue_arg is not None
                                      else Catalogue.seeded())
        if self._guests_arg is None:
            state.private_dir("guests")
            self.guests = GuestManager(self.state_dir, catalogue)
        elif self._guests_arg is False:
            self.guests = None
        else:
            self.guests = self._guests_arg

        self.pool = pool = VmPool(store, [proxy_user_name(user) for user in self.users])
        self.pdisk = pdisk = PdiskHandler(store, service_user="pdisk", locale=self._pdisk_locale)
        self.marketplace = marketplace = MarketplaceHandler(catalogue)
        self.lifecycle = lifecycle = lc.Lifecycle(pool, self._delays, guests=self.guests,
                                                  catalogue=catalogue, on_done=self._vm_done)
        one = OneHandler(pool)
        mounts = [
            Mount("/one-proxy/pswd", one, "pswd", service="one"),
            Mount("/one-proxy/cert", one, "cert", service="one"),
            Mount("/pdisk/pswd", pdisk, "pswd", service="pdisk"),
            Mount("/pdisk/cert", pdisk, "cert", service="pdisk"),
            Mount("/marketplace", marketplace, None, service="marketplace"),
        ]
        context = make_server_context(cert_path, key_path, ca.ca_path)
        self._front = front = Front(
            self._listen, self._port, context, mounts, self._check_password,
            max_body=self._max_body, timeout=self._timeout, faults=self.faults,
            allow_non_loopback=self._allow_non_loopback,
            max_connections=self._bounds[0], request_timeout=self._bounds[1])
        url_host = "127.0.0.1" if self._listen == "0.0.0.0" else self._listen
        self.url = "https://%s:%d" % (url_host, front.port)

        pool.attach(lifecycle)
        lifecycle.start()
        front.start()
        # Listening: now tell the world.
        state.write(CA_NAME, ca.ca_pem())
        state.write(CONFIG_NAME, self._config_text().encode("utf-8"))
        log.info("local StratusLab cloud listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving; state stays in the state directory (unless temporary)."""
        if not self._started:
            return
        self._started = False
        if self._dir is not None:
            self._dir.withdraw(CONFIG_NAME)
        if self._front is not None:
            self._front.stop()
            self._front = None
        if self.lifecycle is not None:
            self.lifecycle.stop()
        if self.guests is not None and hasattr(self.guests, "close"):
            try:
                self.guests.close()
            except Exception:
                log.exception("stopping the SSH guests failed")
        if self.store is not None:
            self.store.close()
        if self._dir is not None:
            self._dir.close()  # a temporary directory goes with everything in it
            self._dir = None

    # -- helpers -------------------------------------------------------------------------

    def _resolve_users(self, store: Store) -> Dict[str, str]:
        if self._requested_users is not None:
            if not self._requested_users:
                raise ValueError("at least one user is needed")
            return dict(self._requested_users)
        store.ensure_schema(_SECRETS_SCHEMA)
        with store.transaction() as db:
            row = db.execute("SELECT value FROM cloud_secret WHERE key = 'default-password'").fetchone()
            if row is None:
                password = secrets.token_urlsafe(18)
                db.execute("INSERT INTO cloud_secret (key, value) VALUES ('default-password', ?)",
                           (password,))
            else:
                password = row["value"]
        return {DEFAULT_USER: password}

    def _check_password(self, user: str, password: str) -> bool:
        expected = self.users.get(user)
        if expected is None:
            hmac.compare_digest(password.encode("utf-8", "surrogateescape"), b"x")
            return False
        return hmac.compare_digest(password.encode("utf-8", "surrogateescape"),
                                   expected.encode("utf-8", "surrogateescape"))

    def _vm_done(self, vm_id: int) -> None:
        # StratusLab's epilog detaches the persistent disks of a VM that is gone.
        if self.pdisk is not None:
            self.pdisk.release_vm(vm_id)

    @staticmethod
    def _ensure_key_pair(state: StateDir) -> None:
        if state.holds(KEY_NAME) and state.holds(KEY_NAME + ".pub"):
            return
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        state.write(KEY_NAME, private)
        state.write(KEY_NAME + ".pub", public + b" stratus@local-cloud\n")

    def _config_text(self) -> str:
        # Values are written literally, as this project's configuration reader takes them.
        # (The 14.06 client interpolates '%': give it passwords without '%'; the generated
        # default password never has one.)
        user, password = next(iter(self.users.items()))
        lines = [
            "[default]",
            "selected_section = local",
            "",
            "[local]",
            "name = Local StratusLab cloud",
            "country = ZZ",
            "endpoint = %s/one-proxy/xmlrpc" % self.url,
            "pdisk_endpoint = %s/pdisk" % self.url,
            "marketplace_endpoint = %s/marketplace" % self.url,
            "username = %s" % user,
            "password = %s" % password,
            "user_public_key_file = %s" % self.public_key_path,
            "user_private_key_file = %s" % self.private_key_path,
            "ca_certs_path = %s" % self.ca_path,
        ]
        return "\n".join(lines) + "\n"


def check_user(name: str, password: str) -> None:
    """ValueError naming what is wrong with a user of the cloud (never the password)."""
    if not isinstance(name, str) or not name or ":" in name or any(ch in name for ch in "\r\n"):
        raise ValueError("invalid user name %r (not empty, no ':' nor line breaks)" % (name,))
    if not isinstance(password, str) or not password:
        raise ValueError("user %r has an empty password" % name)


# ---------------------------------------------------------------------------------------
# stratuslab-lc cloud serve
# ---------------------------------------------------------------------------------------

def _user_arg(text: str) -> Tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD, got a value without ':'")
    try:
        check_user(name, password)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name, password


def parse_users(text: str, source: str) -> Dict[str, str]:
    """Users from ``NAME:PASSWORD`` lines (blank lines and lines starting with ``#`` are
    skipped). ValueError names the source and line, never a password."""
    users: Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, password = line.partition(":")
        where = "%s, line %d" % (source, number)
        if not sep:
            raise ValueError("%s: expected NAME:PASSWORD" % where)
        try:
            check_user(name, password)
        except ValueError as exc:
            raise ValueError("%s: %s" % (where, exc)) from None
        if name in users:
            raise ValueError("%s: user %r is given twice" % (where, name))
        users[name] = password
    if not users:
        raise ValueError("%s holds no NAME:PASSWORD line" % source)
    return users


def _serve_users(args: argparse.Namespace) -> Optional[Dict[str, str]]:
    """The users of ``cloud serve``: --user-file and --user, else $STRATUSLAB_LC_USERS."""
    sources = []
    for path in args.user_file:
        try:
            with open(path, encoding="utf-8") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError("--user-file %s: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
        if mode & 0o077:
            print("stratuslab-lc cloud serve: warning: %s is readable by group or others "
                  "(mode %o); its passwords are not private" % (path, mode & 0o777), file=sys.stderr)
        sources.append(parse_users(text, path))
    sources += [{name: password} for name, password in args.user]
    if not sources and os.environ.get(USERS_ENV, "").strip():
        sources.append(parse_users(os.environ[USERS_ENV], "$" + USERS_ENV))
    users: Dict[str, str] = {}
    for source in sources:
        for name, password in source.items():
            if name in users:
                raise ValueError("user %r is given twice" % name)
            users[name] = password
    return users or None


def _locale_arg(text: str) -> str:
    try:
        freemarker_number(0, text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _fault_arg(text: str) -> Fault:
    try:
        return Fault.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stratuslab-lc cloud serve",
        description="Run a local StratusLab cloud (ONE 3.2 compute, Marketplace, pdisk and "
                    "SSH guests) on loopback until interrupted.")
    parser.add_argument("--state-dir", required=True, metavar="DIR",
                        help="state directory: a new or empty one, or one this cloud used "
                             "before (a directory holding other files is refused)")
    parser.add_argument("--port", type=int, default=0,
                        help="HTTPS port (0, the default, picks a free one)")
    parser.add_argument("--user-file", action="append", default=[], metavar="FILE",
                        help="users, one NAME:PASSWORD per line (blank lines and lines "
                             "starting with # are skipped; repeatable). Without --user-file "
                             "and --user, the users come from $%s (same format), else one "
                             "user '%s' with a generated password" % (USERS_ENV, DEFAULT_USER))
    parser.add_argument("--user", action="append", type=_user_arg, default=[],
                        metavar="NAME:PASSWORD",
                        help="a user (repeatable; the password may contain any character, "
                             "but shows in the process list: prefer --user-file)")
    parser.add_argument("--delay", type=float, default=lc.DEFAULT_DELAY, metavar="SECONDS",
                        help="seconds per VM life-cycle step (default %(default)s)")
    parser.add_argument("--pdisk-locale", default=DEFAULT_LOCALE, metavar="LOCALE", type=_locale_arg,
                        help="the locale pdisk prints its numbers for, as a real site's "
                             "FreeMarker does (default %(default)s: 1024 is \"1,024\"; "
                             "fr_FR, de_DE, de_CH..., or computer for no grouping)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="IPv4 address of the HTTPS front (default 127.0.0.1; another "
                             "loopback address, or any address with --allow-non-loopback)")
    parser.add_argument("--allow-non-loopback", action="store_true",
                        help="let --host be an address other machines can reach (0.0.0.0: "
                             "all). Anyone who reaches it with a password can start VMs, and a "
                             "VM's SSH login runs commands on this machine as this user")
    parser.add_argument("--fault", action="append", type=_fault_arg, default=[],
                        metavar="TARGET=KIND[:COUNT]",
                        help="inject a fault (repeatable). TARGET: an XML-RPC method "
                             "(one.vm.allocate...), one, pdisk, marketplace, or a pdisk "
                             "'METHOD /route' ('POST /disks', 'DELETE /disks/*/mounts/*'). "
                             "KIND: %s. COUNT: how many times (default: every time)"
                             % ", ".join(KINDS))
    return parser


_EXPOSED_WARNING = (
    "WARNING: the local cloud listens on %s, beyond this machine. Anyone who reaches it with a "
    "user's password can start VMs, and logging in to a VM's SSH guest runs commands on this "
    "machine as %s, with that user's files (the guests themselves listen on loopback only).")


def serve_main(argv: Optional[Sequence[str]] = None) -> int:
    """``stratuslab-lc cloud serve``: run until SIGINT or SIGTERM; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.delay < 0:
        parser.error("--delay must be >= 0")
    try:
        listen_address(args.host, args.allow_non_loopback)
    except ValueError as exc:
        parser.error("--host: %s (add --allow-non-loopback to mean it)" % exc)
    try:
        users = _serve_users(args)
    except ValueError as exc:
        parser.error(str(exc))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        try:
            cloud = LocalCloud(state_dir=args.state_dir, port=args.port, users=users,
                               delays=args.delay, host=args.host, faults=args.fault,
                               allow_non_loopback=args.allow_non_loopback,
                               pdisk_locale=args.pdisk_locale).start()
        except (OSError, ValueError) as exc:
            print("stratuslab-lc cloud serve: cannot start: %s" % exc, file=sys.stderr)
            return 1
        try:
            user = next(iter(cloud.users))
            exposed = not ipaddress.ip_address(cloud.listening_on.rpartition(":")[0]).is_loopback
            if exposed:
                print(_EXPOSED_WARNING % (cloud.listening_on, getpass.getuser()),
                      file=sys.stderr, flush=True)
            print("Local StratusLab cloud listening on %s" % cloud.url)
            if exposed:
                print("  listening socket:      %s (%s)" % (
                    cloud.listening_on, "every interface" if cloud.listening_on.startswith("0.0.0.0:")
                    else "reachable from other machines"))
            print("  compute (ONE XML-RPC): %s" % cloud.endpoint)
            print("  pdisk:                 %s/pdisk" % cloud.url)
            print("  marketplace:           %s/marketplace" % cloud.url)
            print("  CA certificate:        %s" % cloud.ca_path)
            print("  user configuration:    %s (user %s)" % (cloud.config_path, user))
            for fault in cloud.faults:
                print("  injected fault:        %s" % fault.spec)
            print("Stop with Ctrl-C or SIGTERM.", flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            cloud.stop()
        print("Local StratusLab cloud stopped.", flush=True)
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
