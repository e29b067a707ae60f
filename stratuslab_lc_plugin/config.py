"""The StratusLab user configuration file: locations, credentials, endpoints and sizes.

StratusLab users already have ``~/.stratuslab/stratuslab-user.cfg`` (spec §1); the driver
reads that same file so that switching from the 14.06 driver needs no new configuration.
This module turns it into immutable objects (:class:`UserConfig`, :class:`LocationConfig`,
:class:`SizeSpec`) and is the only place that knows the file's rules. It does no network
I/O and is cheap enough to call for every driver instance.

Rules (spec §1, with the 14.06 bugs fixed):

* Values are literal: no ``%`` interpolation (a password may hold ``%``; note that the 14.06
  client needed ``%%`` for one ``%``, this reader keeps ``%%`` as two characters), no inline
  comments, one pair of surrounding single or double quotes stripped. Option names are
  lower-cased, section names are case-sensitive. A key set to an empty value counts as not set.
* A section or a key that appears twice in the same section is an error with its line
  (the 14.06 parser silently let the last one win, which hides typos).
* ``[default]`` is mandatory and is merged under every other section (the section's own keys
  win); ``[instance_types]`` is never a location. ``name`` and ``country`` are read from the
  section itself only, as the 14.06 driver did (so a ``name`` in ``[default]`` does not rename
  every cloud).
* Relative file names (``ca_certs_path``, ``pem_key``, ``pem_certificate``,
  ``user_public_key_file``, ``user_private_key_file``) are expanded (``~``) and taken relative
  to the directory of the configuration file, or of the working directory for a stream.
* File syntax problems, bad values and a missing ``ca_certs_path`` file are reported when the
  file is loaded; a missing endpoint or missing credentials only when the location is used
  (:meth:`LocationConfig.check_usable`), so a file whose ``[default]`` has no endpoint still
  lists its locations.

Every problem raises :class:`~stratuslab_lc_plugin.errors.ConfigurationError` whose message
starts with the file, then the line, section and key when known; messages never hold a
value of a password key.
"""

from __future__ import annotations

import configparser
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO, Callable, Iterable, Mapping, Optional, Union
from urllib.parse import urlsplit

from stratuslab_lc_plugin.errors import ConfigurationError

__all__ = [
    "BUILTIN_SIZES",
    "ENV_KEY",
    "ENV_USER_CONFIG",
    "LocationConfig",
    "SizeSpec",
    "UserConfig",
    "ARGUMENTS_SOURCE",
    "config_from_arguments",
    "default_config_path",
    "load_user_config",
    "normalise_compute_endpoint",
    "resolve_configuration",
    "normalise_marketplace_endpoint",
    "normalise_pdisk_endpoint",
]

ENV_USER_CONFIG = "STRATUSLAB_USER_CONFIG"
ENV_KEY = "STRATUSLAB_KEY"
COMPUTE_DEFAULT_PORT = 2634
PDISK_DEFAULT_PORT = 8445
STREAM_NAME = "<stream>"

DEFAULT_SECTION = "default"
INSTANCE_TYPES_SECTION = "instance_types"
# configparser folds its default section into every other one; StratusLab's [default] is
# merged by hand, so the parser's own default section gets a name no header line can hold.
_PARSER_DEFAULT_SECTION = "\n"

_TRUE = frozenset(("true", "yes", "on", "1"))
_FALSE = frozenset(("false", "no", "off", "0"))
_CONTEXT_METHODS = ("one", "cloud-init")
_PATH_KEYS = (
    "ca_certs_path",
    "pem_key",
    "pem_certificate",
    "user_public_key_file",
    "user_private_key_file",
)
_HOST_PORT = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_BARE_IPV6 = re.compile(r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")

Source = Union[str, "os.PathLike[str]", IO[str], IO[bytes], None]


# -- public data -------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeSpec:
    """An instance type: CPU count, RAM and swap in MiB (spec §1.4)."""

    name: str
    cpu: int
    ram: int
    swap: int


#: The 14.06 client's built-in instance types (spec §1.4), in its order.
BUILTIN_SIZES: Mapping[str, SizeSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            SizeSpec("t1.micro", 1, 512, 512),
            SizeSpec("m1.small", 1, 1536, 1536),
            SizeSpec("m1.medium", 1, 3072, 3072),
            SizeSpec("m1.large", 2, 6144, 6144),
            SizeSpec("m1.xlarge", 4, 8192, 8192),
            SizeSpec("c1.medium", 2, 1536, 1536),
            SizeSpec("c1.xlarge", 4, 6144, 6144),
        )
    }
)


@dataclass(frozen=True)
class LocationConfig:
    """The effective configuration of one location (a section merged over ``[default]``).

    ``endpoint``, ``pdisk_endpoint`` and ``marketplace_endpoint`` are ``""`` when the file
    gives no way to reach the service; :meth:`require_endpoint` and :meth:`check_usable`
    turn that into an error at the moment the location is used. Password fields are left
    out of ``repr``.
    """

    id: str
    name: str
    country: str
    endpoint: str
    pdisk_endpoint: str
    marketplace_endpoint: str
    username: Optional[str]
    password: Optional[str] = field(repr=False)
    pdisk_username: Optional[str]
    pdisk_password: Optional[str] = field(repr=False)
    pem_key: Optional[str]
    pem_certificate: Optional[str]
    user_public_key_file: Optional[str]
    user_private_key_file: Optional[str]
    ca_certs_path: Optional[str]
    #: ``verify_ssl`` of the file: True or False, or None when not set (Libcloud's
    #: ``libcloud.security.VERIFY_SSL_CERT`` then decides).
    verify_ssl: Optional[bool]
    default_context_method: str
    options: Mapping[str, str] = field(repr=False, compare=False)
    source: str
    #: key -> (section the value was written in, line); for messages about that key.
    origins: Mapping[str, tuple[str, Optional[int]]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    # -- keys ----------------------------------------------------------------------------

    def public_key_path(self) -> str:
        """SSH public key: ``user_public_key_file``, else ``$STRATUSLAB_KEY``, else ``~/.ssh/id_rsa.pub``."""
        if self.user_public_key_file:
            return self.user_public_key_file
        from_env = os.environ.get(ENV_KEY)
        if from_env:
            return os.path.expanduser(from_env)
        return os.path.join(os.path.expanduser("~"), ".ssh", "id_rsa.pub")

    def private_key_path(self) -> str:
        """SSH private key: ``user_private_key_file``, else the public path minus one ``.pub`` suffix.

        (14.06 stripped any of the characters ``.pub`` from both ends.) A public path without
        the suffix is returned unchanged.
        """
        if self.user_private_key_file:
            return self.user_private_key_file
        public = self.public_key_path()
        return public[: -len(".pub")] if public.endswith(".pub") else public

    # -- use-time checks -----------------------------------------------------------------

    def require_endpoint(self, service: str = "compute") -> str:
        """The base URL of ``service`` ("compute", "pdisk" or "marketplace").

        Raises a ConfigurationError naming the file, the section and the key to set.
        """
        if service == "compute":
            if self.endpoint:
                return self.endpoint
            raise self._error(
                "no compute endpoint: " + self._how_to_set("endpoint", "https://<host>/one-proxy/xmlrpc"),
                key="endpoint",
            )
        if service == "pdisk":
            if self.pdisk_endpoint:
                return self.pdisk_endpoint
            raise self._error(
                "no pdisk endpoint: " + self._how_to_set("pdisk_endpoint", "https://<host>/pdisk", "endpoint"),
                key="pdisk_endpoint",
            )
        if service == "marketplace":
            # No default: 14.06's was the central Marketplace of a project that no longer
            # runs, and whoever holds its domain one day would choose users' VM disks.
            if self.marketplace_endpoint:
                return self.marketplace_endpoint
            raise self._error(
                "no Marketplace endpoint: %s (there is no default: marketplace.stratuslab.eu, the former "
                "central Marketplace, no longer runs)" % self._how_to_set("marketplace_endpoint",
                                                                          "https://<host>/marketplace"),
                key="marketplace_endpoint",
            )
        raise ValueError("unknown service %r (compute, pdisk or marketplace)" % (service,))

    def auth_mode(self, service: str = "compute") -> str:
        """``"pswd"`` with a user name and password, else ``"cert"`` with both PEM files present.

        For ``service="pdisk"`` the pdisk credentials are checked (they already default to
        ``username``/``password``). Raises a ConfigurationError naming the file, the section
        and what is missing.
        """
        if service == "compute":
            user, secret, user_key, secret_key = self.username, self.password, "username", "password"
        elif service == "pdisk":
            user, secret = self.pdisk_username, self.pdisk_password
            user_key, secret_key = "pdisk_username", "pdisk_password"
        else:
            raise ValueError("unknown service %r (compute or pdisk)" % (service,))
        if user and secret:
            return "pswd"
        if self.pem_key and self.pem_certificate:
            for key in ("pem_certificate", "pem_key"):
                path = getattr(self, key)
                if not os.path.isfile(path):
                    raise self._error(
                        "%s file %s does not exist (no %s and %s either)"
                        % (key, path, user_key, secret_key),
                        key=key,
                    )
            return "cert"
        missing = []
        if user and not secret:
            missing.append("%s is set but %s is missing" % (user_key, secret_key))
        elif secret and not user:
            missing.append("%s is set but %s is missing" % (secret_key, user_key))
        if self.pem_key and not self.pem_certificate:
            missing.append("pem_key is set but pem_certificate is missing")
        elif self.pem_certificate and not self.pem_key:
            missing.append("pem_certificate is set but pem_key is missing")
        if user and not secret:
            key = secret_key
        elif self.pem_key and not self.pem_certificate:
            key = "pem_certificate"
        elif self.pem_certificate and not self.pem_key:
            key = "pem_key"
        else:
            key = user_key
        detail = "; ".join(missing) if missing else "none is set"
        if self.source == ARGUMENTS_SOURCE:
            how = "pass the user name as key and the password as secret"
        else:
            how = "set %s and %s, or pem_key and pem_certificate, in [%s] or [default]" % (user_key, secret_key, self.id)
        raise self._error("no usable credentials (%s): %s" % (detail, how), key=key)

    def check_usable(self, service: str = "compute") -> str:
        """Check that ``service`` ("compute" or "pdisk") can be called; returns the auth mode."""
        self.require_endpoint(service)
        return self.auth_mode(service)

    def _how_to_set(self, key: str, example: str, alternative: Optional[str] = None) -> str:
        """How to give ``key`` a value: in the file (or ``alternative``), or as a driver argument."""
        if self.source == ARGUMENTS_SOURCE:
            return "pass %s=%r to the driver" % ("path" if key == "endpoint" else "ex_" + key, example)
        return "set %s = %s%s in [%s] or [default]" % (
            key, example, " (or %s)" % alternative if alternative else "", self.id)

    def _error(self, problem: str, *, key: str) -> ConfigurationError:
        # A key inherited from [default] is reported where it is written.
        section, line = self.origins.get(key, (self.id, None))
        if section != self.id:
            problem = "(used by location %r) %s" % (self.id, problem)
        message = "%s: %s" % (_where(self.source, line, section, key), problem)
        return ConfigurationError(message, path=self.source, section=self.id, key=key, line=line)


@dataclass(frozen=True)
class UserConfig:
    """The whole file: its locations (file order), the default location and the sizes."""

    source: str
    locations: dict[str, LocationConfig]
    default_location: str
    sizes: dict[str, SizeSpec]

    def location(self, location_id: Optional[str] = None) -> LocationConfig:
        """The location ``location_id``; ``None`` means the default one.

        ``"default"`` also means the default location when no location has that id (the
        ``[default]`` section is only listed when it is the default), as for the driver key.
        """
        if location_id is None:
            location_id = self.default_location
        found = self.locations.get(location_id)
        if found is not None:
            return found
        if location_id == DEFAULT_SECTION:
            return self.locations[self.default_location]
        raise ConfigurationError(
            "%s: unknown location %r; available: %s"
            % (self.source, location_id, _names(self.locations)),
            path=self.source,
            section=location_id,
        )


# -- loading -----------------------------------------------------------------------------


def default_config_path() -> str:
    """``$STRATUSLAB_USER_CONFIG`` if set, else ``~/.stratuslab/stratuslab-user.cfg``."""
    from_env = os.environ.get(ENV_USER_CONFIG)
    if from_env:
        return os.path.expanduser(from_env)
    return os.path.join(os.path.expanduser("~"), ".stratuslab", "stratuslab-user.cfg")


def load_user_config(source: Source = None, default_location: Optional[str] = None,
                     key: Optional[str] = None) -> UserConfig:
    """Read and check a user configuration file.

    ``source`` is a path, a file-like object (text or bytes; named by its ``name`` attribute
    or ``"<stream>"``) or ``None`` for :func:`default_config_path`. ``default_location``
    names the default section, which must exist. ``key`` (the driver's first argument)
    selects the default section when it names one and is ignored otherwise, as the 14.06
    driver ignored it (its examples pass ``'unused-key'``). Without either, the file
    chooses: ``selected_section``, else ``[default]``; ``"default"`` means that choice too.
    """
    text, name, mode, base_dir = _read_source(source)
    parsed = _parse(text, name)
    if mode is not None:
        _warn_if_exposed(name, mode, parsed)
    if not default_location and key and key != DEFAULT_SECTION and key in parsed.sections \
            and key != INSTANCE_TYPES_SECTION:
        default_location = key
    return _build(parsed, name, base_dir, default_location)


def resolve_configuration(
    key: Optional[str],
    secret: Optional[str] = None,
    host: Optional[str] = None,
    port: Optional[int] = None,
    secure: bool = True,
    path: Optional[str] = None,
    user_config: Source = None,
    default_location: Optional[str] = None,
    endpoints: Optional[Mapping[str, Optional[str]]] = None,
) -> UserConfig:
    """The configuration a driver's constructor arguments ask for, in this order of precedence:

    1. ``user_config`` (a path or file-like object): that file; ``key`` selects a section
       when it names one; ``host``, ``secret`` and ``port`` are not used.
    2. ``host``: one location from the arguments (:func:`config_from_arguments`): ``key``
       is the user name, ``secret`` the password; ``endpoints`` may give
       ``pdisk_endpoint``, ``marketplace_endpoint`` and ``ca_certs_path``.
    3. otherwise the file named by ``$STRATUSLAB_USER_CONFIG``, else
       ``~/.stratuslab/stratuslab-user.cfg``, as in 1.
    """
    extras = {name: value for name, value in (endpoints or {}).items() if value is not None}
    if user_config is None and host:
        # Tools pass what they read from ini files: "False", "8443".
        secure = _argument_bool(secure, "secure")
        if isinstance(port, str) and port.strip().isdigit():
            port = int(port)
        if default_location:
            raise ConfigurationError(
                "stratuslab_default_location names a section of a configuration file; with host=%r "
                "the driver has one location, made from the arguments" % host, path=ARGUMENTS_SOURCE,
            )
        return config_from_arguments(username=key, password=secret, host=host, port=port, secure=secure,
                                     path=path, **extras)
    if extras:
        raise TypeError("%s apply only with host= (a location made from the arguments); "
                        "put them in the configuration file instead"
                        % ", ".join("ex_" + name for name in sorted(extras)))
    return load_user_config(user_config, default_location, key=key)


#: The name configurations built from constructor arguments go by in messages.
ARGUMENTS_SOURCE = "<constructor arguments>"


def config_from_arguments(
    *,
    username: Optional[str],
    password: Optional[str],
    host: str,
    port: Optional[int] = None,
    secure: bool = True,
    path: Optional[str] = None,
    pdisk_endpoint: Optional[str] = None,
    marketplace_endpoint: Optional[str] = None,
    ca_certs_path: Optional[str] = None,
    user_public_key_file: Optional[str] = None,
    user_private_key_file: Optional[str] = None,
) -> UserConfig:
    """One location (named after ``host``) from a user name, a password and a front end.

    The endpoints follow the configuration file's rules (spec §1.6): ``host[:port]`` alone
    is the compute endpoint ``https://host:2634/xmlrpc`` with pdisk at ``https://host:8445``;
    with ``path`` (e.g. ``/one-proxy/xmlrpc``) it is ``https://host[:port]/path`` with pdisk
    at ``/pdisk`` of the same front end; ``secure=False`` means http. Values are checked as
    the file's are; errors name :data:`ARGUMENTS_SOURCE`.
    """
    if not isinstance(host, str) or not host.strip():
        raise ConfigurationError("%s: host must be a host name or address" % ARGUMENTS_SOURCE,
                                 path=ARGUMENTS_SOURCE)
    host = host.strip()
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise ConfigurationError("%s: port must be 1 to 65535, not %r" % (ARGUMENTS_SOURCE, port),
                                 path=ARGUMENTS_SOURCE)
    if path:
        endpoint = "%s://%s/%s" % ("https" if secure else "http", "%s:%d" % (host, port) if port else host,
                                   path.lstrip("/"))
    elif secure:
        endpoint = "%s:%d" % (host, port) if port else host
    else:
        endpoint = "http://%s:%d/xmlrpc" % (host, port or COMPUTE_DEFAULT_PORT)
    section = host.strip("[]")
    values = {
        "endpoint": endpoint,
        "pdisk_endpoint": pdisk_endpoint,
        "marketplace_endpoint": marketplace_endpoint,
        "username": username,
        "password": password,
        "ca_certs_path": ca_certs_path,
        "user_public_key_file": user_public_key_file,
        "user_private_key_file": user_private_key_file,
    }
    parsed = _Parsed()
    parsed.sections = {
        DEFAULT_SECTION: {"selected_section": section},
        section: {key: str(value) for key, value in values.items() if value not in (None, "")},
    }
    return _build(parsed, ARGUMENTS_SOURCE, os.getcwd(), section)


def _read_source(source: Source) -> tuple[str, str, Optional[int], str]:
    """Return (text, name, file mode or None, directory for relative paths)."""
    if source is None or isinstance(source, (str, os.PathLike)):
        path = os.path.abspath(os.path.expanduser(os.fspath(source or default_config_path())))
        if not os.path.exists(path):
            raise ConfigurationError("configuration file %s does not exist" % path, path=path)
        try:
            with open(path, "rb") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                data = handle.read()
        except OSError as exc:
            raise ConfigurationError(
                "cannot read configuration file %s: %s" % (path, exc.strerror or exc), path=path
            ) from None
        return _decode(data, path), path, mode, os.path.dirname(path)
    if not hasattr(source, "read"):
        raise TypeError("configuration source must be a path, a file-like object or None, not %s"
                        % type(source).__name__)
    name = getattr(source, "name", None)
    name = name if isinstance(name, str) and name else STREAM_NAME
    stream_mode: Optional[int] = None
    try:
        fileno = source.fileno()
    except (AttributeError, OSError, ValueError):
        pass
    else:
        stream_mode = os.fstat(fileno).st_mode
        if not stat.S_ISREG(stream_mode):
            stream_mode = None
    content: Union[str, bytes] = source.read()
    text = _decode(content, name) if isinstance(content, bytes) else content
    base_dir = os.path.dirname(os.path.abspath(name)) if os.path.isfile(name) else os.getcwd()
    return text, name, stream_mode, base_dir


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigurationError(
            "%s: not valid UTF-8 text" % _where(name, line), path=name, line=line
        ) from None


class _Parsed:
    """Sections in file order, their unquoted values, and the line of every key."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, str]] = {}
        self.lines: dict[tuple[str, str], int] = {}
        self.section_lines: dict[str, int] = {}


def _parse(text: str, name: str) -> _Parsed:
    lines = list(io.StringIO(text, newline=None))
    parser = configparser.ConfigParser(
        interpolation=None, strict=True, default_section=_PARSER_DEFAULT_SECTION
    )
    parsed = _Parsed()
    _scan_lines(lines, parsed)
    try:
        parser.read_file(lines, source=name)
    except configparser.DuplicateSectionError as exc:
        raise ConfigurationError(
            "%s: section [%s] appears twice (merge the two)"
            % (_where(name, exc.lineno), exc.section),
            path=name, section=exc.section, line=exc.lineno,
        ) from None
    except configparser.DuplicateOptionError as exc:
        key = exc.option.lower()
        first = parsed.lines.get((exc.section, key))
        raise ConfigurationError(
            "%s: key set twice in the same section%s"
            % (_where(name, exc.lineno, exc.section, key),
               " (first at line %d)" % first if first else ""),
            path=name, section=exc.section, key=key, line=exc.lineno,
        ) from None
    except configparser.MissingSectionHeaderError as exc:
        # The offending line is not echoed: it may be a password.
        raise ConfigurationError(
            "%s: key outside any section; the file must start with a section header such as [default]"
            % _where(name, exc.lineno),
            path=name, line=exc.lineno,
        ) from None
    except configparser.ParsingError as exc:
        lineno = exc.errors[0][0]
        section = _section_at(parsed, lineno)
        raise ConfigurationError(
            "%s: cannot parse this line, expected 'key = value' or '[section]'"
            % _where(name, lineno, section),
            path=name, section=section, line=lineno,
        ) from None
    for section in parser.sections():
        parsed.sections[section] = {
            key: _unquote(value) for key, value in parser.items(section, raw=True)
        }
    return parsed


def _scan_lines(lines: Iterable[str], parsed: _Parsed) -> None:
    # configparser does not report where keys are; this walk follows its line rules
    # (comments, indented continuation lines, headers) to record each key's line.
    section: Optional[str] = None
    option: Optional[str] = None
    indent_level = 0
    for lineno, line in enumerate(lines, start=1):
        value = line.strip()
        if not value or value.startswith(("#", ";")):
            continue
        indent = len(line) - len(line.lstrip())
        if section is not None and option is not None and indent > indent_level:
            continue
        indent_level = indent
        header = configparser.ConfigParser.SECTCRE.match(value)
        if header:
            section, option = header.group("header"), None
            parsed.section_lines.setdefault(section, lineno)
            continue
        match = configparser.ConfigParser.OPTCRE.match(value)
        if section is not None and match and match.group("option"):
            option = match.group("option").rstrip().lower()
            parsed.lines.setdefault((section, option), lineno)


def _section_at(parsed: _Parsed, lineno: int) -> Optional[str]:
    best = None
    for section, start in parsed.section_lines.items():
        if start <= lineno and (best is None or start > parsed.section_lines[best]):
            best = section
    return best


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _warn_if_exposed(path: str, mode: int, parsed: _Parsed) -> None:
    if os.name != "posix" or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return
    if any(
        value and key.endswith("password")
        for values in parsed.sections.values()
        for key, value in values.items()
    ):
        warnings.warn(
            "configuration file %s holds a password and is readable by group or others "
            "(mode %03o); run: chmod 600 %s" % (path, stat.S_IMODE(mode), path),
            UserWarning,
            stacklevel=3,
        )


# -- building ----------------------------------------------------------------------------


def _build(parsed: _Parsed, name: str, base_dir: str, requested: Optional[str]) -> UserConfig:
    if DEFAULT_SECTION not in parsed.sections:
        raise ConfigurationError(
            "%s: no [default] section (it is mandatory, even if empty)" % name,
            path=name, section=DEFAULT_SECTION,
        )
    available = [s for s in parsed.sections if s != INSTANCE_TYPES_SECTION]
    default_location = _choose_default(parsed, name, requested, available)
    locations = {
        section: _location(parsed, name, base_dir, section)
        for section in available
        if section != DEFAULT_SECTION or section == default_location
    }
    if DEFAULT_SECTION not in locations:
        # Not a location, but its values reach every location, so check them anyway.
        _location(parsed, name, base_dir, DEFAULT_SECTION)
    return UserConfig(
        source=name,
        locations=locations,
        default_location=default_location,
        sizes=_sizes(parsed, name),
    )


def _choose_default(parsed: _Parsed, name: str, requested: Optional[str], available: list) -> str:
    if requested and requested != DEFAULT_SECTION:
        if requested not in available:
            raise ConfigurationError(
                "%s: the default location %r is not a section of the file; available: %s"
                % (name, requested, ", ".join(available)),
                path=name, section=requested,
            )
        return requested
    selected = parsed.sections[DEFAULT_SECTION].get("selected_section")
    if not selected:
        return DEFAULT_SECTION
    if selected not in available:
        raise ConfigurationError(
            "%s: selected_section = %r names no location section; available: %s"
            % (_where(name, parsed.lines.get((DEFAULT_SECTION, "selected_section")),
                      DEFAULT_SECTION, "selected_section"), selected, ", ".join(available)),
            path=name, section=DEFAULT_SECTION, key="selected_section",
            line=parsed.lines.get((DEFAULT_SECTION, "selected_section")),
        )
    return selected


class _Values:
    """The merged values of one section, and where each came from (for error messages)."""

    def __init__(self, parsed: _Parsed, name: str, section: str) -> None:
        self.name = name
        self.section = section
        self.own = parsed.sections[section]
        self.values = dict(parsed.sections[DEFAULT_SECTION])
        self.values.update(self.own)
        self.origins = {}
        for key in self.values:
            origin = section if key in self.own else DEFAULT_SECTION
            self.origins[key] = (origin, parsed.lines.get((origin, key)))

    def get(self, key: str) -> Optional[str]:
        return self.values.get(key) or None

    def error(self, key: str, problem: str) -> ConfigurationError:
        origin, line = self.origins.get(key, (self.section, None))
        return ConfigurationError(
            "%s: %s" % (_where(self.name, line, origin, key), problem),
            path=self.name, section=origin, key=key, line=line,
        )


def _location(parsed: _Parsed, name: str, base_dir: str, section: str) -> LocationConfig:
    values = _Values(parsed, name, section)
    paths = {key: _path(values, key, base_dir) for key in _PATH_KEYS}
    ca_certs_path = paths["ca_certs_path"]
    if ca_certs_path is not None and not os.path.exists(ca_certs_path):
        raise values.error("ca_certs_path", "CA bundle %s does not exist" % ca_certs_path)
    endpoint = _checked(values, "endpoint", normalise_compute_endpoint)
    pdisk_endpoint = (
        _checked(values, "pdisk_endpoint", normalise_pdisk_endpoint)
        if values.get("pdisk_endpoint")
        else None
    ) or _derive_pdisk(endpoint, values.get("endpoint"))
    marketplace_endpoint = _checked(values, "marketplace_endpoint", normalise_marketplace_endpoint)
    username, password = values.get("username"), values.get("password")
    return LocationConfig(
        id=section,
        name=values.own.get("name") or section,
        country=values.own.get("country") or "unknown",
        endpoint=endpoint or "",
        pdisk_endpoint=pdisk_endpoint,
        marketplace_endpoint=marketplace_endpoint or "",
        username=username,
        password=password,
        pdisk_username=values.get("pdisk_username") or username,
        pdisk_password=values.get("pdisk_password") or password,
        pem_key=paths["pem_key"],
        pem_certificate=paths["pem_certificate"],
        user_public_key_file=paths["user_public_key_file"],
        user_private_key_file=paths["user_private_key_file"],
        ca_certs_path=ca_certs_path,
        verify_ssl=_boolean(values, "verify_ssl", None),
        default_context_method=_context_method(values),
        options=MappingProxyType(dict(values.values)),
        source=name,
        origins=MappingProxyType(values.origins),
    )


def _path(values: _Values, key: str, base_dir: str) -> Optional[str]:
    value = values.get(key)
    if value is None:
        return None
    return os.path.join(base_dir, os.path.expanduser(value))


def _checked(values: _Values, key: str, normalise: Callable[[str], str]) -> Optional[str]:
    value = values.get(key)
    if value is None:
        return None
    try:
        return normalise(value)
    except ValueError as exc:
        raise values.error(key, str(exc)) from None


def _derive_pdisk(compute: Optional[str], raw: Optional[str]) -> str:
    # 14.06 fell back to the compute endpoint verbatim, which for a URL such as
    # https://h/one-proxy/xmlrpc is not a pdisk URL; pdisk lives at /pdisk on the same front end.
    if not compute or not raw:
        return ""
    if "://" in raw:
        parts = urlsplit(compute)
        return "%s://%s/pdisk" % (parts.scheme.lower(), parts.netloc)
    host, _port = _host_port(raw)
    return "https://%s:%d" % (host, PDISK_DEFAULT_PORT)


def _argument_bool(value: object, what: str) -> bool:
    if isinstance(value, str):
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return False
        raise ConfigurationError("%s: %s must be true or false, not %r" % (ARGUMENTS_SOURCE, what, value),
                                 path=ARGUMENTS_SOURCE)
    return bool(value)


def _boolean(values: _Values, key: str, default: Optional[bool]) -> Optional[bool]:
    value = values.get(key)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise values.error(key, "%r is not a boolean (use true/false, yes/no, on/off or 1/0)" % value)


def _context_method(values: _Values) -> str:
    value = values.get("default_context_method")
    if value is None:
        return "one"
    if value.lower() not in _CONTEXT_METHODS:
        raise values.error(
            "default_context_method", "%r is not one of: %s" % (value, ", ".join(_CONTEXT_METHODS))
        )
    return value.lower()


def _sizes(parsed: _Parsed, name: str) -> dict[str, SizeSpec]:
    sizes = dict(BUILTIN_SIZES)
    for key, value in parsed.sections.get(INSTANCE_TYPES_SECTION, {}).items():
        sizes[key] = _size(key, value, name, parsed.lines.get((INSTANCE_TYPES_SECTION, key)))
    return sizes


def _size(key: str, value: str, name: str, line: Optional[int]) -> SizeSpec:
    body = value.strip()
    if body[:1] + body[-1:] in ("()", "[]"):
        body = body[1:-1]
    parts = [part for part in re.split(r"[,\s]+", body) if part]
    problem = None
    if len(parts) != 3 or not all(_INTEGER.fullmatch(part) for part in parts):
        problem = "expected three integers '<cpu>, <ram MiB>, <swap MiB>'"
    else:
        cpu, ram, swap = (int(part) for part in parts)
        if cpu <= 0:
            problem = "the CPU count must be > 0"
        elif ram <= 0:
            problem = "the RAM must be > 0 MiB"
        elif swap < 0:
            problem = "the swap must be >= 0 MiB"
    if problem:
        raise ConfigurationError(
            "%s: bad instance type %r: %s"
            % (_where(name, line, INSTANCE_TYPES_SECTION, key), value, problem),
            path=name, section=INSTANCE_TYPES_SECTION, key=key, line=line,
        )
    return SizeSpec(key, cpu, ram, swap)


# -- endpoints (spec §1.6) ---------------------------------------------------------------


def normalise_compute_endpoint(value: str) -> str:
    """A URL is kept (minus trailing slashes; it needs a path).

    A ``host[:port]`` becomes ``https://host:2634/xmlrpc`` (or the given port).
    """
    if "://" in value:
        url = _url(value)
        if not urlsplit(url).path:
            raise ValueError(
                "endpoint URL %r has no path; expected e.g. https://%s/one-proxy/xmlrpc"
                % (url, urlsplit(url).netloc)
            )
        return url
    host, port = _host_port(value)
    return "https://%s:%d/xmlrpc" % (host, port or COMPUTE_DEFAULT_PORT)


def normalise_pdisk_endpoint(value: str) -> str:
    """A URL is kept (minus trailing slashes); a ``host[:port]`` becomes ``https://host:8445``."""
    if "://" in value:
        return _url(value)
    host, port = _host_port(value)
    return "https://%s:%d" % (host, port or PDISK_DEFAULT_PORT)


def normalise_marketplace_endpoint(value: str) -> str:
    """A URL is kept (minus trailing slashes); a ``host[:port]`` becomes ``https://host[:port]``.

    (14.06 produced ``https://host:80``, TLS on the plain HTTP port.)
    """
    if "://" in value:
        return _url(value)
    host, port = _host_port(value)
    return "https://%s%s" % (host, ":%d" % port if port else "")


def _url(value: str) -> str:
    if any(char.isspace() for char in value):
        raise ValueError("malformed URL %r: it contains white space" % _redact(value))
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError("malformed URL %r: %s" % (_redact(value), exc)) from None
    if "@" in parts.netloc:
        # Never echo it: the part before '@' is a user name and maybe a password.
        raise ValueError(
            "the URL must not hold credentials; use the username and password keys instead"
        )
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("malformed URL %r: the scheme must be http or https" % value)
    if not parts.hostname:
        raise ValueError("malformed URL %r: no host name" % value)
    if port == 0:
        raise ValueError("malformed URL %r: port 0" % value)
    if parts.query or parts.fragment or value.rstrip("/").endswith(("?", "#")):
        raise ValueError("malformed URL %r: a service URL takes no query or fragment" % value)
    return value.rstrip("/")


def _host_port(value: str) -> tuple[str, Optional[int]]:
    if _BARE_IPV6.fullmatch(value):
        return "[%s]" % value, None
    match = _HOST_PORT.fullmatch(value)
    if not match:
        raise ValueError(
            "malformed endpoint %r: expected a URL such as https://host/path, or host[:port]"
            % _redact(value)
        )
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError("malformed endpoint %r: port out of range" % value)
    return match.group("host"), int(port) if port is not None else None


def _redact(value: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", value) if "@" in value else value


# -- messages ----------------------------------------------------------------------------


def _where(path: str, line: Optional[int] = None, section: Optional[str] = None,
           key: Optional[str] = None) -> str:
    parts = [path]
    if line is not None:
        parts.append("line %d" % line)
    if section is not None:
        parts.append("section [%s]" % section)
    if key is not None:
        parts.append("key %r" % key)
    return ", ".join(parts)


def _names(mapping: Iterable[str]) -> str:
    return ", ".join(mapping) or "(none)"
