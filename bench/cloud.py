"""How fast the local StratusLab cloud answers, so it never limits a driver benchmark.

Runs the cloud in its own process (``python -m stratuslab_lc_plugin.emulator``, life-cycle
delay 0) and measures, over real HTTPS with the cloud CA verified:

- ``one.vm.allocate`` calls per second, one client on one keep-alive connection and
  several concurrent clients;
- the time to serve ``one.vmpool.info`` (all VMs of the user) with 1,000 and 10,000 VMs:
  the round trip until the last byte arrived, and the client-side XML-RPC decoding.

Usage: ``python bench/cloud.py [--vms 10000] [--clients 8]``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER, PASSWORD = "bench", "b%ench:pass"
TEMPLATE = """CPU = 1
VCPU = 1
MEMORY = 512
NAME = "bench"
DISK = [ source = "https://127.0.0.1/marketplace/metadata/BN1EEkPiBx87_uLj2-sdybSI-Xb",
 target = "hda", save = no, readonly = "no", driver = "raw" ]
DISK = [ type = swap, size = 512, target = "hdb", readonly = "no" ]
NIC = [ network_uname=oneadmin,network = "public" ]
GRAPHICS = [ port = "-1", type = "vnc" ]
CONTEXT = [ hostname = "bench", target = "hdd" ]
"""


class Client:
    """A minimal XML-RPC client on one keep-alive HTTPS connection."""

    def __init__(self, url: str, ca_path: str) -> None:
        parts = urlsplit(url)
        self.path = parts.path.replace("/one-proxy/", "/one-proxy/pswd/")
        context = ssl.create_default_context(cafile=ca_path)
        self.conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context,
                                                timeout=120)
        self.conn.connect()
        # Like urllib3 (requests): without it, http.client's separate header and body
        # writes wait for delayed ACKs.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        token = base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
        self.headers = {"Content-Type": "text/xml", "Authorization": "Basic " + token}

    def raw(self, method: str, *params) -> bytes:
        body = xmlrpc.client.dumps(("session",) + params, method).encode("utf-8")
        self.conn.request("POST", self.path, body, self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError("HTTP %d" % response.status)
        return data

    def call(self, method: str, *params):
        result = xmlrpc.client.loads(self.raw(method, *params))[0][0]
        if not result[0]:
            raise RuntimeError(result[1])
        return result[1]


def start_cloud(state_dir: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "stratuslab_lc_plugin.emulator", "--state-dir", state_dir,
         "--delay", "0", "--user", "%s:%s" % (USER, PASSWORD)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = os.path.join(state_dir, "stratuslab-user.cfg")
    deadline = time.time() + 60
    while not os.path.exists(config):
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError("the cloud did not start")
        time.sleep(0.05)
    return process


def read_endpoint(state_dir: str) -> str:
    with open(os.path.join(state_dir, "stratuslab-user.cfg")) as handle:
        for line in handle:
            if line.startswith("endpoint = "):
                return line.split(" = ", 1)[1].strip()
    raise RuntimeError("no endpoint in the configuration")


def allocate(url: str, ca: str, count: int, clients: int) -> float:
    """Allocate ``count`` VMs with ``clients`` threads; returns allocations per second."""
    per_client = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    connections = [Client(url, ca) for _ in range(clients)]
    for connection in connections:   # TLS handshakes are not what we measure
        connection.call("one.vmpool.info", -3, 0, 0, -1)
    errors = []

    def work(connection: Client, n: int) -> None:
        try:
            for _ in range(n):
                connection.call("one.vm.allocate", TEMPLATE)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c, n)) for c, n in zip(connections, per_client)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return count / elapsed


def pool_info(url: str, ca: str, repeat: int = 3):
    """Best-of-``repeat`` (round trip seconds, decode seconds, bytes, VM count)."""
    client = Client(url, ca)
    client.call("one.vmpool.info", -3, 0, 0, -1)
    best = None
    for _ in range(repeat):
        started = time.perf_counter()
        data = client.raw("one.vmpool.info", -3, -1, -1, -1)
        fetched = time.perf_counter()
        document = xmlrpc.client.loads(data)[0][0][1]
        decoded = time.perf_counter()
        sample = (fetched - started, decoded - fetched, len(data), document.count("<VM>"))
        best = sample if best is None or sample[0] < best[0] else best
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    state_dir = tempfile.mkdtemp(prefix="bench-cloud-")
    process = start_cloud(state_dir)
    try:
        url, ca = read_endpoint(state_dir), os.path.join(state_dir, "ca.pem")
        print("local cloud %s (separate process, delay 0)" % url)
        rate1 = allocate(url, ca, 1000, 1)
        print("one.vm.allocate, 1 client:          %7.0f /s (1,000 VMs)" % rate1)
        rtt, decode, size, count = pool_info(url, ca)
        print("one.vmpool.info, %6d VMs: %6.3f s round trip + %.3f s client decode, %.1f MB"
              % (count, rtt, decode, size / 1e6))
        remaining = max(0, args.vms - 1000)
        if remaining:
            rate_n = allocate(url, ca, remaining, args.clients)
            print("one.vm.allocate, %d clients:         %7.0f /s (%s VMs)"
                  % (args.clients, rate_n, format(remaining, ",")))
            rtt, decode, size, count = pool_info(url, ca)
            print("one.vmpool.info, %6d VMs: %6.3f s round trip + %.3f s client decode, %.1f MB"
                  % (count, rtt, decode, size / 1e6))
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
