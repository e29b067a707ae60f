"""Install and drive the original StratusLab 14.06 client and Libcloud driver (Python 2.7).

The local cloud claims to be faithful enough that the original software works against it
unchanged, and the benchmarks compare our driver with the original one. Both need the
14.06 packages, which exist only for Python 2.7. This module:

- finds a Python 2.7 interpreter (``$STRATUSLAB_PYTHON27``, ``python2.7`` on PATH, or a
  pyenv installation) and installs the pinned packages once with ``pip install --target``
  into a cache directory keyed by the interpreter and the pins
  (``$STRATUSLAB_LEGACY_CACHE``, default ``~/.cache/stratuslab-lc-plugin``), reused by
  later runs; anything missing raises :class:`LegacyUnavailable` with the reason;
- writes 14.06-style user configuration files (``localhost`` URLs: Python 2.7's
  ``ssl.match_hostname`` ignores IP subject alternative names, and an endpoint that is
  exactly ``localhost`` would bypass the one-proxy);
- runs the old driver behind a JSON-lines pipe (:class:`LegacyDriver`, see
  ``old_driver.py``) and the ``stratus-*`` commands (:meth:`Legacy.stratus`);
- talks to the cloud directly (:class:`CloudClient`), to check what the old software did.
"""

from __future__ import annotations

import base64
import fcntl
import glob
import hashlib
import http.client
import json
import os
import queue
import shutil
import ssl
import subprocess
import tempfile
import threading
import xmlrpc.client
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
OLD_DRIVER = os.path.join(HERE, "old_driver.py")
STRATUS = os.path.join(HERE, "stratus.py")

#: What the 14.06 software needs, pinned so the cache key names an exact set.
PINS = (
    "apache-libcloud==0.14.1",
    "stratuslab-client==14.06.0",
    "stratuslab-libcloud-drivers==14.06.0",
    "httplib2==0.22.0",
)
_PROBE_IMPORTS = "import httplib2, libcloud, stratuslab.libcloud.compute_driver, stratuslab.Monitor"
_PIP_TIMEOUT = 600


class LegacyUnavailable(Exception):
    """Python 2.7 or the 14.06 packages cannot be had here; the message says why."""


class LegacyCallError(AssertionError):
    """The old driver raised: carries its exception text, traceback and printed output."""

    def __init__(self, operation: str, answer: Mapping[str, Any]) -> None:
        self.operation = operation
        self.error = answer.get("error", "")
        self.traceback = answer.get("traceback", "")
        self.output = answer.get("output", "")
        super().__init__("14.06 driver %s failed: %s\n%s%s" % (
            operation, self.error, self.traceback,
            ("printed:\n" + self.output) if self.output else ""))


# ---------------------------------------------------------------------------------------
# Finding Python 2.7 and installing the packages
# ---------------------------------------------------------------------------------------

def _python27_candidates() -> List[str]:
    found = []
    explicit = os.environ.get("STRATUSLAB_PYTHON27")
    if explicit:
        found.append(explicit)
    on_path = shutil.which("python2.7")
    if on_path:
        found.append(on_path)
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found.extend(sorted(glob.glob(os.path.join(pyenv_root, "versions", "2.7*", "bin", "python2.7")),
                        reverse=True))
    return found


def _interpreter_version(python: str) -> Optional[str]:
    """The full version of a working 2.7 interpreter (a pyenv shim that names no
    installed version fails here)."""
    try:
        done = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version.startswith("2.7.") else None


def find_python27() -> Tuple[str, str]:
    """(interpreter path, version) of a working Python 2.7."""
    tried = []
    for candidate in _python27_candidates():
        version = _interpreter_version(candidate)
        if version:
            return candidate, version
        tried.append(candidate)
    raise LegacyUnavailable("no working Python 2.7 interpreter (tried: %s; set STRATUSLAB_PYTHON27)"
                            % (", ".join(tried) or "none found"))


def cache_root() -> str:
    root = os.environ.get("STRATUSLAB_LEGACY_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        root = os.path.join(base, "stratuslab-lc-plugin")
    return root


def _probe(python: str, target: str) -> Optional[str]:
    """None when the 14.06 modules import from ``target``, else the error text."""
    env = dict(os.environ, PYTHONPATH=target)
    env.pop("PYTHONHOME", None)
    done = subprocess.run([python, "-c", _PROBE_IMPORTS], capture_output=True, text=True,
                          env=env, timeout=120)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


def ensure_installed(python: str, version: str) -> str:
    """The ``--target`` directory holding the pinned 14.06 packages, installed on first use."""
    key = hashlib.sha256(("\n".join((version,) + PINS)).encode()).hexdigest()[:12]
    root = cache_root()
    target = os.path.join(root, "legacy-14.06-py%s-%s" % (version, key))
    marker = os.path.join(target, ".installed")
    if os.path.exists(marker):
        return target
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)      # a concurrent run installs it only once
        if os.path.exists(marker):
            return target
        staging = tempfile.mkdtemp(prefix=".staging-", dir=root)
        try:
            command = [python, "-m", "pip", "install", "--disable-pip-version-check",
                       "--no-warn-script-location", "--quiet", "--target", staging, *PINS]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise LegacyUnavailable("pip install of the 14.06 packages did not finish in %d s"
                                        % _PIP_TIMEOUT) from None
            if done.returncode != 0:
                lines = [line for line in (done.stderr + done.stdout).splitlines()
                         if line.strip() and "WARNING" not in line]
                raise LegacyUnavailable("pip could not install %s with Python %s: %s"
                                        % (" ".join(PINS), version, lines[-1] if lines else "?"))
            # Byte-compile now: PYTHONDONTWRITEBYTECODE (often set) would otherwise make
            # every later run of the old software compile it all again. Files that are not
            # Python 2 (tests of some dependencies) just stay uncompiled.
            subprocess.run([python, "-m", "compileall", "-q", staging], capture_output=True,
                           timeout=_PIP_TIMEOUT)
            problem = _probe(python, staging)
            if problem:
                raise LegacyUnavailable("the 14.06 packages installed but do not import: " + problem)
            if os.path.exists(target):
                shutil.rmtree(target)
            with open(os.path.join(staging, ".installed"), "w") as handle:
                handle.write("\n".join(PINS) + "\n")
            os.rename(staging, target)
        finally:
            if os.path.exists(staging):
                shutil.rmtree(staging, ignore_errors=True)
    return target


_PREPARED: Dict[str, Any] = {}


def prepare() -> "Legacy":
    """The 14.06 installation (cached for the process); raises LegacyUnavailable."""
    if "legacy" not in _PREPARED:
        try:
            python, version = find_python27()
            _PREPARED["legacy"] = Legacy(python, version, ensure_installed(python, version))
        except LegacyUnavailable as exc:
            _PREPARED["legacy"] = exc
    prepared = _PREPARED["legacy"]
    if isinstance(prepared, LegacyUnavailable):
        raise prepared
    return prepared


# ---------------------------------------------------------------------------------------
# Configuration files in the 14.06 style
# ---------------------------------------------------------------------------------------

def localhost_url(url: str) -> str:
    """``https://127.0.0.1:PORT`` -> ``https://localhost:PORT`` (the name the 14.06
    client can verify the cloud certificate for)."""
    parts = urlsplit(url)
    return "%s://localhost:%d%s" % (parts.scheme, parts.port, parts.path)


def _escape(value: str) -> str:
    # SafeConfigParser: '%' starts an interpolation.
    return str(value).replace("%", "%%")


@dataclass
class Section:
    """One location of a 14.06 configuration file."""

    name: str
    url: str                 # https://localhost:PORT (no path)
    username: Optional[str]
    password: Optional[str]
    title: Optional[str] = None
    country: Optional[str] = None
    public_key_file: Optional[str] = None

    def lines(self) -> List[str]:
        lines = ["[%s]" % self.name]
        if self.title:
            lines.append("name = %s" % _escape(self.title))
        if self.country:
            lines.append("country = %s" % _escape(self.country))
        lines += ["endpoint = %s/one-proxy/xmlrpc" % self.url,
                  "pdisk_endpoint = %s/pdisk" % self.url,
                  "marketplace_endpoint = %s/marketplace" % self.url]
        if self.username is not None:
            lines.append("username = %s" % _escape(self.username))
        if self.password is not None:
            lines.append("password = %s" % _escape(self.password))
        if self.public_key_file:
            lines.append("user_public_key_file = %s" % _escape(self.public_key_file))
        return lines


def write_config(path: str, sections: Sequence[Section], selected: Optional[str] = None,
                 defaults: Optional[Mapping[str, str]] = None,
                 instance_types: Optional[Mapping[str, Tuple[int, int, int]]] = None) -> str:
    """Write a user configuration file with only keys the 14.06 client knows.

    (``user_private_key_file`` in particular is left out: ``stratus-run-instance`` 14.06
    dies with ``KeyError: 'userPrivateKeyFile'`` on a file that sets it.)
    """
    lines = ["[default]"]
    if selected:
        lines.append("selected_section = %s" % selected)
    lines += ["%s = %s" % (key, _escape(value)) for key, value in (defaults or {}).items()]
    lines.append("")
    for section in sections:
        lines += section.lines() + [""]
    if instance_types:
        lines.append("[instance_types]")
        lines += ["%s = %d, %d, %d" % ((name,) + tuple(spec)) for name, spec in instance_types.items()]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


_TEMPLATE = """NAME = "%(name)s"
CPU = %(cpu)d
VCPU = %(cpu)d
MEMORY = %(ram)d
DISK = [ source = "%(marketplace)s/marketplace/metadata/%(image)s", target = "hda", save = no,
 readonly = "no", driver = "raw" ]
DISK = [ type = swap, size = %(swap)d, target = "hdb", readonly = "no" ]
NIC = [ network_uname=oneadmin,network = "%(network)s" ]
GRAPHICS = [ port = "-1", type = "vnc" ]
CONTEXT = [ target = "hdd" ]
"""


def vm_template(url: str, image_id: str, name: str, cpu: int = 1, ram: int = 512, swap: int = 512,
                network: str = "public") -> str:
    """A VM template shaped like the 14.06 client's (spec §2.8), for VMs made behind the
    software's back: its list_nodes needs a DISK SOURCE and a swap SIZE in every VM.
    No SSH key, so the cloud starts no SSH guest for it."""
    return _TEMPLATE % {"name": name, "cpu": cpu, "ram": ram, "swap": swap, "network": network,
                        "marketplace": url.rstrip("/"), "image": image_id}


# ---------------------------------------------------------------------------------------
# Running the old software
# ---------------------------------------------------------------------------------------

@dataclass
class Legacy:
    python: str
    version: str
    target: str

    def env(self, ca_path: str, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        """The environment for the 14.06 software: its packages, the cloud's CA trusted,
        and nothing of the caller's StratusLab or proxy settings."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STRATUSLAB_") and k.lower() not in
               ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "pythonhome", "pythonpath")}
        env.update(PYTHONPATH=self.target, SSL_CERT_FILE=ca_path, REQUESTS_CA_BUNDLE=ca_path,
                   HTTPLIB2_CA_CERTS=ca_path,
                   no_proxy="localhost,127.0.0.1", PYTHONIOENCODING="utf-8",
                   # the 14.06 tree is byte-compiled at install; keep .pyc out of tests/legacy
                   PYTHONDONTWRITEBYTECODE="1")
        env.update(extra or {})
        return env

    def driver(self, config: str, ca_path: str, timeout: float = 60.0) -> "LegacyDriver":
        return LegacyDriver(self, config, ca_path, timeout)

    def stratus(self, command: str, args: Iterable[str], ca_path: str, timeout: float = 120.0,
                env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
        """Run ``stratus-<command> ARGS`` (output captured as text)."""
        return subprocess.run([self.python, STRATUS, "stratus-" + command, *args],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=self.env(ca_path, env))


class LegacyDriver:
    """The 14.06 driver in a Python 2.7 process: ``call(op, **kwargs)`` -> result."""

    def __init__(self, legacy: Legacy, config: str, ca_path: str, timeout: float) -> None:
        self.timeout = timeout
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [legacy.python, OLD_DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, env=legacy.env(ca_path), text=True, bufsize=1)
        self._lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.default_location = self.call("init", config=config)["default_location"]
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:]

    def call(self, operation: str, timeout: Optional[float] = None, **kwargs) -> Any:
        """Run one driver operation; raises LegacyCallError when the old driver raised."""
        return self.answer(operation, timeout, **kwargs)["result"]

    def answer(self, operation: str, timeout: Optional[float] = None, **kwargs) -> Dict[str, Any]:
        """The whole answer (``result`` and the ``output`` the old code printed)."""
        self._process.stdin.write(json.dumps(dict(kwargs, op=operation)) + "\n")
        self._process.stdin.flush()
        try:
            line = self._lines.get(timeout=timeout or self.timeout)
        except queue.Empty:
            self.close()
            raise AssertionError("14.06 driver %s: no answer in %s s; stderr:\n%s"
                                 % (operation, timeout or self.timeout, self._stderr_text())) from None
        if not line:
            raise AssertionError("14.06 driver process died during %s; stderr:\n%s"
                                 % (operation, self._stderr_text()))
        answer = json.loads(line)
        if not answer["ok"]:
            raise LegacyCallError(operation, answer)
        return answer

    def close(self) -> None:
        if self._stderr.closed:
            return
        if self._process.poll() is None:
            try:
                self._process.stdin.write('{"op": "quit"}\n')
                self._process.stdin.flush()
                self._process.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._stderr.close()

    def __enter__(self) -> "LegacyDriver":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# Looking at the cloud directly
# ---------------------------------------------------------------------------------------

class CloudClient:
    """ONE XML-RPC and pdisk calls as one user, over verified HTTPS (Python 3 stdlib),
    to check what the software under test did. Not thread-safe: one per thread."""

    def __init__(self, url: str, ca_path: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.context = ssl.create_default_context(cafile=ca_path)
        token = base64.b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode("ascii")
        self._auth = "Basic " + token
        transport = xmlrpc.client.SafeTransport(context=self.context,
                                                headers=[("Authorization", self._auth)])
        self._rpc = xmlrpc.client.ServerProxy(self.url + "/one-proxy/pswd/xmlrpc", transport=transport)
        self._session = "%s:%s" % (user, password)

    def one(self, method: str, *params) -> Any:
        """Call ``one.<method>``; returns the value, raises AssertionError on a ONE failure."""
        ok, value, code = getattr(self._rpc.one, method)(self._session, *params)[:3]
        if not ok:
            raise AssertionError("one.%s failed (%s): %s" % (method, code, value))
        return value

    def one_bytes(self, method: str, *params) -> bytes:
        """The raw HTTP answer body of ``one.<method>``, on a fresh connection (to time the
        cloud's side without any XML-RPC decoding)."""
        body = xmlrpc.client.dumps((self._session,) + params, "one." + method).encode("utf-8")
        status, data = self._request("POST", "/one-proxy/pswd/xmlrpc", body, "text/xml")
        if status != 200:
            raise AssertionError("one.%s: HTTP %d" % (method, status))
        return data

    def pdisk(self, method: str, path: str) -> Tuple[int, Any]:
        """(status, decoded JSON or None) of ``METHOD /pdisk/pswd/<path>``."""
        status, body = self._request(method, "/pdisk/pswd/" + path.lstrip("/"))
        try:
            return status, json.loads(body.decode("utf-8")) if body else None
        except ValueError:
            return status, None

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 content_type: Optional[str] = None) -> Tuple[int, bytes]:
        parts = urlsplit(self.url)
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=self.context, timeout=120)
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def close(self) -> None:
        self._rpc("close")()
