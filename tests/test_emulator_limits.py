"""The HTTPS front's bounds: a cap on connections and a deadline for each request.

Like the nginx of a real site: idle connections make room for new ones, a client beyond
the cap while every connection is inside a request gets a 503, and a request must arrive
whole (headers and body) within its deadline, however slowly a client drips it.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import pytest
import requests

from stratuslab_lc_plugin.emulator import LocalCloud

pytestmark = pytest.mark.timeout(120)


def tls(cloud: LocalCloud) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=cloud.ca_path)
    raw = socket.create_connection(("127.0.0.1", cloud.port), timeout=20)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def metadata(cloud: LocalCloud) -> requests.Response:
    """A normal client's request (on a connection of its own, closed after the answer)."""
    return requests.get(cloud.url + "/marketplace/metadata", verify=cloud.ca_path, timeout=20,
                        headers={"Accept": "application/xml", "Connection": "close"})


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, "never: " + what
        time.sleep(0.02)


def closed_by_the_server(sock: ssl.SSLSocket, drip: bytes, drips: int = 600) -> bool:
    """Send ``drip`` one byte at a time (0.05 s apart) until the server closes."""
    for index in range(drips):
        try:
            sock.sendall(drip[index % len(drip):index % len(drip) + 1])
        except OSError:
            return True
        time.sleep(0.05)
    sock.settimeout(0.5)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


@pytest.fixture(scope="module")
def cloud():
    with LocalCloud(users={"alice": "pw"}, delays=0, guests=False) as running:
        yield running


def test_500_idle_connections_do_not_stop_a_normal_client(cloud):
    limits = cloud._front.limits
    idle = [socket.create_connection(("127.0.0.1", cloud.port), timeout=20) for _ in range(450)]
    idle += [tls(cloud) for _ in range(50)]  # handshake done, no request
    try:
        response = metadata(cloud)
        assert response.status_code == 200 and b"<metadata>" in response.content
        counts = limits.counts()
        assert counts["busy"] + counts["idle"] <= limits.max_connections
        assert threading.active_count() < limits.max_connections + limits.overflow + 50
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: sum(limits.counts().values()) == 0, "every connection released")


def test_beyond_the_cap_a_client_gets_503_while_all_connections_are_busy():
    with LocalCloud(users={"alice": "pw"}, delays=0, guests=False, max_connections=3) as small:
        busy = []
        for _ in range(3):
            sock = tls(small)
            sock.sendall(b"GET /marketplace/metadata HTTP/1.1\r\nHost: x\r\n")  # headers unfinished
            busy.append(sock)
        wait_for(lambda: small._front.limits.counts()["busy"] == 3, "three busy connections")
        refused = metadata(small)
        assert refused.status_code == 503 and b"<center>nginx</center>" in refused.content
        assert refused.headers["Connection"] == "close"
        for sock in busy:
            sock.close()
        wait_for(lambda: small._front.limits.counts()["busy"] == 0, "busy ones released")
        assert metadata(small).status_code == 200


@pytest.mark.parametrize("head, drip", [
    (b"GET /marketplace/metadata HTTP/1.1\r\nHost: x\r\n", b"X-Slow: dripping\r\n"),
    (b"POST /one-proxy/pswd/xmlrpc HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", b"<"),
    (b"", b"G"),  # not even the request line
])
def test_a_request_must_arrive_whole_within_its_deadline(head, drip):
    # Each read is allowed 30 s; only the whole-request deadline can end these drips.
    with LocalCloud(users={"alice": "pw"}, delays=0, guests=False, timeout=30,
                    request_timeout=1.0) as strict:
        sock = tls(strict)
        sock.sendall(head)
        assert closed_by_the_server(sock, drip)
        sock.close()
        assert metadata(strict).status_code == 200  # others are served as before


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="max_connections"):
        LocalCloud(max_connections=0)
    with pytest.raises(ValueError, match="request_timeout"):
        LocalCloud(request_timeout=0)


def test_a_released_descriptor_reused_by_another_socket_is_never_shut_down():
    from stratuslab_lc_plugin.emulator.connections import ConnectionLimits

    limits = ConnectionLimits(max_connections=1)
    gone = socket.socket()
    ours, peer = socket.socketpair()
    number = gone.fileno()
    limits.admit(gone)           # not released: the worst case for a late shutdown
    gone.close()
    os.dup2(ours.fileno(), number)  # the old number now names another socket
    try:
        limits.admit(socket.socket())   # over the cap: the old one is "evicted"
        limits.stop()                   # and everything left is shut down
        peer.sendall(b"x")
        assert ours.recv(1) == b"x"     # ours is untouched
        ours.sendall(b"y")
        assert peer.recv(1) == b"y"
    finally:
        os.close(number)
        ours.close()
        peer.close()
