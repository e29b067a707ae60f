"""The HTTPS front of the local cloud and LocalCloud itself: TLS, routing, authentication,
limits, bad clients, files written for clients, and ``cloud serve``."""

from __future__ import annotations

import base64
import configparser
import http.client
import ipaddress
import logging
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import xmlrpc.client

import pytest
import requests
from cryptography import x509

from stratuslab_lc_plugin.emulator import LocalCloud
from stratuslab_lc_plugin.emulator.faults import FaultSet
from stratuslab_lc_plugin.emulator.front import Front, Mount, make_server_context
from stratuslab_lc_plugin.emulator.tls import CertificateAuthority
from stratuslab_lc_plugin.emulator.web import Request, Response

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "S3cr%t:pa ss=é"
USERS = {"alice": PASSWORD, "bob": "bob-pw"}


@pytest.fixture(scope="module")
def cloud():
    with LocalCloud(users=USERS, delays=0, guests=False) as running:
        yield running


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode()


def tls_connect(cloud: LocalCloud, cert=None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=cloud.ca_path)
    if cert:
        context.load_cert_chain(*cert)
    raw = socket.create_connection(("127.0.0.1", cloud.port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_response(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data


def pool_call() -> bytes:
    return xmlrpc.client.dumps(("s", -3, -1, -1, -1), "one.vmpool.info").encode()


# ---------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_certificate_verifies_for_both_names(cloud, host):
    response = requests.get("https://%s:%d/marketplace/metadata" % (host, cloud.port),
                            verify=cloud.ca_path, timeout=10)
    assert response.status_code in (200, 502)


def test_server_certificate_names_and_key_files(cloud):
    tls_dir = os.path.join(cloud.state_dir, "tls")
    with open(os.path.join(tls_dir, "server.pem"), "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    for name in ("server-key.pem", "ca-key.pem"):
        assert stat.S_IMODE(os.stat(os.path.join(tls_dir, name)).st_mode) == 0o600


def test_unknown_ca_is_refused(cloud):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(cloud.url + "/marketplace/metadata", timeout=10)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_old_tls_is_refused(cloud):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cloud.ca_path)
    try:
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.minimum_version = ssl.TLSVersion.TLSv1
    except ValueError:
        pytest.skip("this OpenSSL cannot speak TLS 1.1 at all")
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            context.wrap_socket(raw, server_hostname="127.0.0.1")


# ---------------------------------------------------------------------------------------
# authentication and routing
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/one-proxy/pswd/xmlrpc", "/pdisk/pswd/disks/",
                                  "/one-proxy/pswd/anything"])
@pytest.mark.parametrize("authorization", [None, basic("alice", "wrong"), basic("eve", PASSWORD),
                                           "Basic !!!", "Bearer x", basic("alice", "")])
def test_password_routes_challenge(cloud, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.post(cloud.url + path, data=pool_call(), headers=headers,
                             verify=cloud.ca_path, timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="StratusLab Password Realm"'
    assert b"401" in response.content


def test_passwords_may_contain_any_character(cloud):
    response = requests.post(cloud.url + "/one-proxy/pswd/xmlrpc", data=pool_call(),
                             headers={"Authorization": basic("alice", PASSWORD)},
                             verify=cloud.ca_path, timeout=10)
    assert response.status_code == 200
    assert xmlrpc.client.loads(response.content)[0][0][0] is True


def test_certificate_routes(cloud):
    response = requests.post(cloud.url + "/one-proxy/cert/xmlrpc", data=pool_call(),
                             verify=cloud.ca_path, timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="StratusLab Certificate Realm"'
    # Basic credentials do not open the certificate context
    response = requests.post(cloud.url + "/one-proxy/cert/xmlrpc", data=pool_call(),
                             auth=("alice", PASSWORD), verify=cloud.ca_path, timeout=10)
    assert response.status_code == 401
    response = requests.post(cloud.url + "/one-proxy/cert/xmlrpc", data=pool_call(),
                             cert=cloud.client_cert("bob"), verify=cloud.ca_path, timeout=10)
    assert response.status_code == 200
    assert xmlrpc.client.loads(response.content)[0][0][0] is True


def test_foreign_client_certificate_is_refused(cloud, tmp_path):
    other = CertificateAuthority(str(tmp_path / "other-ca"))
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.post(cloud.url + "/one-proxy/cert/xmlrpc", data=pool_call(),
                      cert=other.client_pair("bob"), verify=cloud.ca_path, timeout=10)


@pytest.mark.parametrize("path", ["/", "/nothing", "/one-proxy/xmlrpc", "/one-proxypswd/xmlrpc",
                                  "/pdisk/disks/", "/favicon.ico"])
def test_unknown_paths_are_404(cloud, path):
    response = requests.get(cloud.url + path, auth=("alice", PASSWORD), verify=cloud.ca_path,
                            timeout=10)
    assert response.status_code == 404
    assert b"nginx" in response.content


def test_unknown_path_inside_a_web_app_is_404_after_authentication(cloud):
    response = requests.post(cloud.url + "/one-proxy/pswd/xmlrpc/", data=pool_call(),
                             auth=("alice", PASSWORD), verify=cloud.ca_path, timeout=10)
    assert response.status_code == 404
    assert b"Jetty" in response.content


def test_marketplace_needs_no_authentication(cloud):
    if cloud.marketplace is None:
        pytest.skip("the Marketplace service is not installed")
    response = requests.get(cloud.url + "/marketplace/metadata", verify=cloud.ca_path, timeout=10)
    assert response.status_code == 200


# ---------------------------------------------------------------------------------------
# HTTP details and bad clients
# ---------------------------------------------------------------------------------------

def raw_request(cloud: LocalCloud, data: bytes) -> bytes:
    with tls_connect(cloud) as sock:
        sock.sendall(data)
        return read_response(sock)


def test_oversized_body_is_413_and_closes(cloud):
    answer = raw_request(cloud, b"POST /one-proxy/pswd/xmlrpc HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: 2000000\r\n\r\n" + b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer


def test_oversized_chunked_body_is_413(cloud):
    chunk = b"%x\r\n%s\r\n" % (600000, b"x" * 600000)
    answer = raw_request(cloud, b"POST /pdisk/pswd/disks/ HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n" + chunk + chunk + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET /x HTTP/9.9\r\n\r\n", b"505"),
    (b"POST /one-proxy/pswd/xmlrpc HTTP/1.1\r\nContent-Length: nope\r\n\r\n", b"400"),
    (b"POST /one-proxy/pswd/xmlrpc HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
    (b"GET /one-proxy/pswd/../cert/xmlrpc HTTP/1.1\r\n\r\n", b"400"),
    (b"BREW /one-proxy/pswd/xmlrpc HTTP/1.1\r\n\r\n", b"501"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"414"),
    (b"POST /one-proxy/pswd/xmlrpc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
])
def test_garbage_requests(cloud, request_bytes, status):
    answer = raw_request(cloud, request_bytes)
    assert answer.split(b" ", 2)[1] == status
    # and the server is still fine
    assert requests.get(cloud.url + "/", verify=cloud.ca_path, timeout=10).status_code == 404


def test_binary_junk_and_plain_http_do_not_hurt(cloud):
    for junk in (os.urandom(3000), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", cloud.port), timeout=10) as raw:
            raw.sendall(junk)
            try:
                raw.recv(100)
            except (ConnectionError, socket.timeout):
                pass
    assert requests.get(cloud.url + "/", verify=cloud.ca_path, timeout=10).status_code == 404


def test_silent_clients_do_not_block_others(cloud):
    silent = [socket.create_connection(("127.0.0.1", cloud.port), timeout=10) for _ in range(20)]
    try:
        response = requests.post(cloud.url + "/one-proxy/pswd/xmlrpc", data=pool_call(),
                                 auth=("alice", PASSWORD), verify=cloud.ca_path, timeout=10)
        assert response.status_code == 200
    finally:
        for sock in silent:
            sock.close()


def test_keep_alive_head_and_chunked(cloud):
    context = ssl.create_default_context(cafile=cloud.ca_path)
    conn = http.client.HTTPSConnection("127.0.0.1", cloud.port, context=context, timeout=10)
    headers = {"Authorization": basic("alice", PASSWORD), "Content-Type": "text/xml"}
    conn.request("POST", "/one-proxy/pswd/xmlrpc", pool_call(), headers)
    first = conn.getresponse()
    assert first.status == 200 and first.getheader("Content-Type") == "text/xml"
    first.read()
    sock = conn.sock
    conn.request("POST", "/one-proxy/pswd/xmlrpc", iter([pool_call()]), headers,
                 encode_chunked=True)
    second = conn.getresponse()
    assert second.status == 200 and xmlrpc.client.loads(second.read())[0][0][0] is True
    assert conn.sock is sock   # same connection
    conn.request("HEAD", "/nothing")
    head = conn.getresponse()
    assert head.status == 404 and int(head.getheader("Content-Length")) > 0
    assert head.read() == b""
    conn.close()


def test_many_concurrent_clients(cloud):
    failures = []

    def client():
        with requests.Session() as session:
            for _ in range(5):
                response = session.post(cloud.url + "/one-proxy/pswd/xmlrpc", data=pool_call(),
                                        auth=("bob", "bob-pw"), verify=cloud.ca_path, timeout=30)
                if response.status_code != 200:
                    failures.append(response.status_code)

    threads = [threading.Thread(target=client) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []


def test_no_credentials_in_logs(cloud, caplog):
    caplog.set_level(logging.DEBUG, logger="stratuslab_lc_plugin")
    token = basic("alice", PASSWORD)
    for auth in (token, basic("alice", "nope" + PASSWORD)):
        requests.post(cloud.url + "/one-proxy/pswd/xmlrpc?x=1", data=pool_call(),
                      headers={"Authorization": auth}, verify=cloud.ca_path, timeout=10)
    assert caplog.records          # the front does log requests at debug level...
    assert PASSWORD not in caplog.text and token.split()[1] not in caplog.text   # ...not secrets


# ---------------------------------------------------------------------------------------
# the front on its own: failing handlers, missing services, timeouts
# ---------------------------------------------------------------------------------------

class Boom:
    def handle(self, request: Request) -> Response:
        if request.path == "/wrong-type":
            return "not a response"   # type: ignore[return-value]
        raise RuntimeError("handler bug")


class Echo:
    def handle(self, request: Request) -> Response:
        text = "%s %s %s %r %r" % (request.method, request.path, request.user, request.form,
                                   request.query)
        return Response(200, text.encode())


@pytest.fixture
def front(tmp_path):
    ca = CertificateAuthority(str(tmp_path / "tls"))
    context = make_server_context(*ca.server_pair(), ca.ca_path)
    server = Front("127.0.0.1", 0, context,
                   [Mount("/boom", Boom()), Mount("/gone", None), Mount("/echo", Echo(), "pswd")],
                   check_password=lambda user, password: (user, password) == ("u", "p:%"),
                   max_body=100, timeout=0.5).start()
    yield server, ca.ca_path
    server.stop()


def test_handler_exceptions_become_500(front):
    server, ca = front
    base = "https://127.0.0.1:%d" % server.port
    with requests.Session() as session:
        assert session.get(base + "/boom/x", verify=ca, timeout=10).status_code == 500
        assert session.get(base + "/boom/wrong-type", verify=ca, timeout=10).status_code == 500
        assert session.get(base + "/gone/x", verify=ca, timeout=10).status_code == 502
        response = session.post(base + "/echo/a?b=1&b=2", data={"k": "v", "z": "1"},
                                auth=("u", "p:%"), verify=ca, timeout=10)
        assert response.text == "POST /a u {'k': 'v', 'z': '1'} {'b': ['1', '2']}"
        assert session.post(base + "/echo", data="x" * 101, auth=("u", "p:%"), verify=ca,
                            timeout=10).status_code == 413


def test_one_error_fault_on_a_service_without_its_own_error_is_a_500(tmp_path):
    # Only ONE's handler shapes an injected "one-error"; any other handler mounted as the
    # "one" service gets a plain 500 rather than a connection dropped mid-request.
    ca = CertificateAuthority(str(tmp_path / "tls"))
    server = Front("127.0.0.1", 0, make_server_context(*ca.server_pair(), ca.ca_path),
                   [Mount("/echo", Echo(), service="one")], check_password=lambda u, p: False,
                   faults=FaultSet(["one=one-error:1"])).start()
    try:
        with requests.Session() as session:
            url = "https://127.0.0.1:%d/echo/x" % server.port
            assert session.get(url, verify=ca.ca_path, timeout=10).status_code == 500
            assert session.get(url, verify=ca.ca_path, timeout=10).text.startswith("GET /x")
    finally:
        server.stop()


def test_idle_connections_time_out(front):
    server, ca = front
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\n")     # never finished
            started = time.monotonic()
            read_response(sock)                         # the server closes
            assert time.monotonic() - started < 9


def test_stop_closes_open_connections(tmp_path):
    ca = CertificateAuthority(str(tmp_path / "tls"))
    server = Front("127.0.0.1", 0, make_server_context(*ca.server_pair(), ca.ca_path),
                   [Mount("/echo", Echo())], check_password=lambda u, p: False).start()
    context = ssl.create_default_context(cafile=ca.ca_path)
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    conn.request("GET", "/echo")
    assert conn.getresponse().read().startswith(b"GET /")
    server.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError, OSError)):
        conn.request("GET", "/echo")
        conn.getresponse()


# ---------------------------------------------------------------------------------------
# LocalCloud files and cloud serve
# ---------------------------------------------------------------------------------------

def test_written_configuration_and_keys(tmp_path):
    import paramiko

    state_dir = str(tmp_path / "state")
    with LocalCloud(state_dir=state_dir, users={"carol": "100%:sure"}, delays=0,
                    guests=False) as cloud:
        assert cloud.config_path == os.path.join(state_dir, "stratuslab-user.cfg")
        assert stat.S_IMODE(os.stat(cloud.config_path).st_mode) == 0o600
        parser = configparser.ConfigParser(interpolation=None)   # values are literal
        parser.read(cloud.config_path)
        assert parser.get("default", "selected_section") == "local"
        assert dict(parser.items("local")) == {
            "name": "Local StratusLab cloud",
            "country": "ZZ",
            "endpoint": cloud.url + "/one-proxy/xmlrpc",
            "pdisk_endpoint": cloud.url + "/pdisk",
            "marketplace_endpoint": cloud.url + "/marketplace",
            "username": "carol",
            "password": "100%:sure",
            "user_public_key_file": os.path.join(state_dir, "id_ed25519.pub"),
            "user_private_key_file": os.path.join(state_dir, "id_ed25519"),
            "ca_certs_path": os.path.join(state_dir, "ca.pem"),
        }
        assert cloud.url == "https://127.0.0.1:%d" % cloud.port
        with open(cloud.ca_path, "rb") as handle:
            x509.load_pem_x509_certificate(handle.read())
        assert stat.S_IMODE(os.stat(cloud.private_key_path).st_mode) == 0o600
        key = paramiko.Ed25519Key.from_private_key_file(cloud.private_key_path)
        with open(cloud.public_key_path) as handle:
            kind, blob = handle.read().split()[:2]
        assert (kind, blob) == ("ssh-ed25519", key.get_base64())
    assert not os.path.exists(os.path.join(state_dir, "stratuslab-user.cfg"))
    assert os.path.exists(os.path.join(state_dir, "id_ed25519"))


def test_default_user_and_temporary_state():
    with LocalCloud(delays=0, guests=False) as cloud:
        state_dir = cloud.state_dir
        (user, password), = cloud.users.items()
        assert user == "stratus" and len(password) >= 16
        response = requests.post(cloud.url + "/one-proxy/pswd/xmlrpc", data=pool_call(),
                                 auth=(user, password), verify=cloud.ca_path, timeout=10)
        assert response.status_code == 200
    assert not os.path.exists(state_dir)


def test_default_password_survives_a_restart(tmp_path):
    with LocalCloud(state_dir=str(tmp_path), delays=0, guests=False) as cloud:
        first = dict(cloud.users)
        with open(cloud.ca_path, "rb") as handle:
            ca = handle.read()
    with LocalCloud(state_dir=str(tmp_path), delays=0, guests=False) as cloud:
        assert cloud.users == first
        with open(cloud.ca_path, "rb") as handle:
            assert handle.read() == ca


def test_bad_arguments():
    with pytest.raises(ValueError):
        LocalCloud(users={"a:b": "x"})
    with pytest.raises(ValueError):
        LocalCloud(delays={"bogus": 1})


def _serve(state_dir: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "stratuslab_lc_plugin.emulator", "--state-dir", state_dir,
         "--delay", "0", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _wait_for_config(process: subprocess.Popen, path: str) -> configparser.ConfigParser:
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return parser


def test_cloud_serve_runs_stops_and_restarts(tmp_path):
    state_dir = str(tmp_path / "served")
    config = os.path.join(state_dir, "stratuslab-user.cfg")
    ids = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        process = _serve(state_dir, "--user", "dave:pa%ss:word", "--user", "erin:x")
        try:
            parser = _wait_for_config(process, config)
            endpoint = parser.get("local", "endpoint")
            assert parser.get("local", "password") == "pa%ss:word"
            url = endpoint.replace("/one-proxy/", "/one-proxy/pswd/")
            proxy = xmlrpc.client.ServerProxy(
                url.replace("https://", "https://dave:pa%25ss%3Aword@"),
                context=ssl.create_default_context(cafile=parser.get("local", "ca_certs_path")))
            ok, vm_id, _ = proxy.one.vm.allocate("s", "CPU = 1\nMEMORY = 64\n")
            assert ok
            ids.append(vm_id)
            ok, xml, _ = proxy.one.vmpool.info("s", -3, -1, -1, -2)
            assert xml.count("<VM>") == len(ids)          # earlier VMs are still there
        finally:
            process.send_signal(signum)
            out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "listening on https://127.0.0.1:" in out and config in out
        assert "pa%ss" not in out + err
        assert not os.path.exists(config)
    assert ids == [0, 1]


def test_cloud_serve_rejects_bad_users(tmp_path):
    process = _serve(str(tmp_path), "--user", "nocolon")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "NAME:PASSWORD" in err
