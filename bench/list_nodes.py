"""list_nodes: our driver against the transfer itself and against the 14.06 driver, in one run.

Measured, medians side by side, the sides interleaved so that each meets the same load:

1. ``list_nodes()`` and then reading ``node.state`` of every node, at 1,000 and 10,000 VMs,
   against the bare transfer of the same ``one.vmpool.info`` answer over a warm HTTPS
   connection (http.client, the body read and not decoded) and against the transfer through
   the driver's own warm connection (Libcloud/requests, not decoded); with the CPU time of
   the calling thread. Then the 14.06 driver (Python 2.7, run unchanged by
   ``tests/legacy/old_driver.py``) on the same cloud: it asks the cloud again for each
   ``node.state``. It is measured at 1,000 VMs by default (``--old-sizes``); above
   ``--old-full-up-to`` VMs its ``node.state`` part is timed on an evenly spread sample
   and scaled to all nodes (the output says so).
2. How our time per VM grows from 1,000 to 10,000 VMs: list_nodes, and the decoding alone
   (``_pool_records`` on the recorded answer, CPU time, sizes interleaved).
3. ``list_nodes()`` over 4 locations vs 1 location, ``--per-location`` VMs each, every
   location answering after ``--latency-ms``. The answers were recorded from the local
   cloud and are served by a small server in its own process that only sleeps and sends
   bytes, so the figures speak of the client: wall time and the client's CPU time (all its
   threads), for both drivers.

The cloud runs in its own process (``python -m stratuslab_lc_plugin.emulator``,
life-cycle delay 0, VMs without SSH keys so no SSH guest starts); VMs are allocated over
XML-RPC by a few concurrent clients. The 14.06 client resolves every VM address back to a
name; here that is answered from /etc/hosts only (no DNS traffic), which only makes the
14.06 driver faster than it would be against a real resolver. Each part prints the
machine's load average: other work on a shared machine moves wall times.

Usage: ``python bench/list_nodes.py [--sizes 1000,10000] [--repeat 5] [--old-sizes 1000]
[--old-repeat 3] [--old-state-sample 1000] [--latency-ms 50] [--per-location 10,100] [--skip-old]``.
Without Python 2.7 or the 14.06 packages, only our driver is measured.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from legacy import harness  # noqa: E402
from stratuslab_lc_plugin.services.one import _pool_records, gc_paused  # noqa: E402

PASSWORD = "bench-%-pass"
BENCH_USER = "bench"
SITES = ("site1", "site2", "site3", "site4")
TTYLINUX = "BN1EEkPiBx87_uLj2-sdybSI-Xb"


# ---------------------------------------------------------------------------------------
# the cloud, its VMs, the latency proxies
# ---------------------------------------------------------------------------------------

class Cloud:
    """A local cloud in its own process, so its work does not share our interpreter."""

    def __init__(self, users: Sequence[str]) -> None:
        self.state_dir = tempfile.mkdtemp(prefix="bench-list-nodes-")
        command = [sys.executable, "-m", "stratuslab_lc_plugin.emulator", "--state-dir", self.state_dir,
                   "--delay", "0"]
        for user in users:
            command += ["--user", "%s:%s" % (user, PASSWORD)]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        config = os.path.join(self.state_dir, "stratuslab-user.cfg")
        deadline = time.monotonic() + 60
        while not os.path.exists(config):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the local cloud did not start")
            time.sleep(0.05)
        with open(config) as handle:
            endpoint = next(line.split("=", 1)[1].strip() for line in handle
                            if line.startswith("endpoint"))
        self.url = endpoint.rsplit("/one-proxy/", 1)[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.ca_path = os.path.join(self.state_dir, "ca.pem")

    def client(self, user: str) -> harness.CloudClient:
        return harness.CloudClient(self.url, self.ca_path, user, PASSWORD)

    def allocate(self, user: str, count: int, clients: int = 4) -> None:
        """Allocate ``count`` VMs for ``user`` and wait until they all run."""
        template = harness.vm_template(harness.localhost_url(self.url), TTYLINUX, "bench-vm")
        shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
        errors: List[BaseException] = []

        def work(n: int) -> None:
            try:
                rpc = self.client(user)
                for _ in range(n):
                    rpc.one("vm.allocate", template)
            except BaseException as exc:  # re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in shares if n]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        rpc = self.client(user)
        deadline = time.monotonic() + 300
        while True:
            pool = rpc.one("vmpool.info", -3, -1, -1, -1)
            if pool.count("<VM>") == pool.count("<LCM_STATE>3</LCM_STATE>"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("VMs of %s did not all reach RUNNING" % user)
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.state_dir, ignore_errors=True)


class RecordedServer:
    """Recorded ``one.vmpool.info`` answers served over HTTPS from a process of their own.

    One port per answer; every request on a port gets its answer after ``delay`` seconds
    (the latency of a remote site). Serving is a sleep and a TLS write, so the server takes
    next to no CPU from the client on a shared machine, unlike the local cloud, which builds
    each answer again.
    """

    def __init__(self, answers: Sequence[bytes], delay: float, cert: Tuple[str, str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._parent, child = context.Pipe()
        self.process = context.Process(target=_serve_recorded, args=(child, list(answers), delay, cert),
                                       daemon=True)
        self.process.start()
        if not self._parent.poll(30):
            self.stop()
            raise RuntimeError("the recorded-answer server did not start")
        self.ports: List[int] = self._parent.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(10)


def _serve_recorded(pipe, answers: List[bytes], delay: float, cert: Tuple[str, str]) -> None:
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    def handler_for(body: bytes):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the clients' connections stay warm

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    servers = []
    for body in answers:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(body))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    pipe.send([server.server_address[1] for server in servers])
    while True:
        time.sleep(3600)


class BareClient:
    """``one.vmpool.info`` over one warm HTTPS connection with http.client: the transfer
    alone, body read, nothing decoded."""

    def __init__(self, url: str, ca_path: str, user: str) -> None:
        parts = urlsplit(url)
        context = ssl.create_default_context(cafile=ca_path)
        self.conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=300)
        token = base64.b64encode(("%s:%s" % (user, PASSWORD)).encode()).decode()
        self.headers = {"Content-Type": "text/xml", "Authorization": "Basic " + token}
        self.body = xmlrpc.client.dumps(("%s:x" % user, -3, -1, -1, -1), "one.vmpool.info").encode()

    def pool(self) -> bytes:
        try:
            return self._pool()
        except (OSError, http.client.HTTPException):  # the cloud closed the idle connection
            self.conn.close()
            return self._pool()

    def _pool(self) -> bytes:
        if self.conn.sock is None:
            self.conn.connect()
            # As urllib3 does: without it, separate header and body writes wait for delayed ACKs.
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.request("POST", "/one-proxy/pswd/xmlrpc", self.body, self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError("HTTP %d" % response.status)
        return data

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------------------------------
# configurations and drivers
# ---------------------------------------------------------------------------------------

def our_config(path: str, sections: Sequence[Tuple[str, str, str]], ca_path: str) -> str:
    """Our driver's configuration: (section, https://127.0.0.1:PORT, user) per location."""
    lines = ["[default]", "selected_section = %s" % sections[0][0], ""]
    for name, url, user in sections:
        lines += ["[%s]" % name, "endpoint = %s/one-proxy/xmlrpc" % url,
                  "pdisk_endpoint = %s/pdisk" % url, "marketplace_endpoint = %s/marketplace" % url,
                  "username = %s" % user, "password = %s" % PASSWORD,  # read literally
                  "ca_certs_path = %s" % ca_path, ""]
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    os.chmod(path, 0o600)
    return path


def old_config(path: str, sections: Sequence[Tuple[str, str, str]]) -> str:
    """The same locations for the 14.06 driver (``localhost`` URLs)."""
    return harness.write_config(
        path, [harness.Section(name, harness.localhost_url(url), user, PASSWORD)
               for name, url, user in sections],
        selected=sections[0][0])


def our_driver(config: str):
    from libcloud.compute.providers import get_driver

    import stratuslab_lc_plugin  # noqa: F401 - registers the driver where .pth files are skipped

    return get_driver("stratuslab")("default", stratuslab_user_config=config)


def timed(function, clock) -> Tuple[float, float]:
    """(wall seconds, CPU seconds by ``clock``) of one call."""
    wall, cpu = time.perf_counter(), clock()
    function()
    return time.perf_counter() - wall, clock() - cpu


def rounds(sides: Dict, repeat: int, clock=time.thread_time) -> Dict[str, List[Tuple[float, float]]]:
    """Time each side ``repeat`` times after one warm-up call, the sides in turn, each
    round starting with another side (whoever runs first after a pause runs slower).
    CPU time is the calling thread's (``time.thread_time``) unless ``clock`` says otherwise."""
    names = list(sides)
    for name in names:
        sides[name]()
    samples: Dict[str, List[Tuple[float, float]]] = {name: [] for name in names}
    for index in range(repeat):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timed(sides[name], clock))
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def walls(samples: Sequence[Tuple[float, float]]) -> float:
    return median([wall for wall, _ in samples])


def cpus(samples: Sequence[Tuple[float, float]]) -> float:
    return median([cpu for _, cpu in samples])


def seconds(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return "%.3f s" % value if value < 100 else "%.0f s" % value


def row(*cells: str, widths: Sequence[int] = (34, 14, 20, 12)) -> None:
    print("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(cells, widths))).rstrip())


def say(text: str) -> None:
    print(text, flush=True)


def load() -> str:
    one, five, _ = os.getloadavg()
    return "load average %.2f (1 min), %.2f (5 min), %d CPUs" % (one, five, os.cpu_count() or 0)


def verdict(value: float, target: float, smaller: bool = True) -> str:
    return "met" if (value <= target if smaller else value >= target) else "NOT met"


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------

def legacy_or_none(skip: bool) -> Optional[harness.Legacy]:
    if skip:
        say("14.06 driver: skipped (--skip-old)")
        return None
    try:
        return harness.prepare()
    except harness.LegacyUnavailable as exc:
        say("14.06 driver: not measured (%s)" % exc)
        return None


def bench_scale(cloud: Cloud, workdir: str, legacy: Optional[harness.Legacy], args) -> None:
    say("\n== list_nodes + every node.state, one location; %s ==" % load())
    sections = [("bench", cloud.url, BENCH_USER)]
    ours = our_driver(our_config(os.path.join(workdir, "ours-bench.cfg"), sections, cloud.ca_path))
    bare = BareClient(cloud.url, cloud.ca_path, BENCH_USER)
    old = None
    if legacy is not None:
        old = legacy.driver(old_config(os.path.join(workdir, "old-bench.cfg"), sections), cloud.ca_path,
                            timeout=3600)
    results = []
    allocated = 0
    try:
        for size in args.sizes:
            started = time.perf_counter()
            cloud.allocate(BENCH_USER, size - allocated)
            say("(%s VMs allocated and running in %.1f s)"
                % (format(size, ","), time.perf_counter() - started))
            allocated = size
            result = measure_ours(ours, bare, size, args.repeat)
            if old is not None and size in args.old_sizes:
                result.update(measure_old(old, size, args))
            results.append(result)
            report_scale(result, args)
    finally:
        bare.close()
        if old is not None:
            old.close()
    report_growth(results, args.repeat)


def measure_ours(driver, bare: BareClient, size: int, repeat: int) -> Dict:
    one = driver._services(driver.location_config(None)).one
    counts = []

    def with_states() -> None:
        nodes = driver.list_nodes()
        counts.append(len([node.state for node in nodes]))

    samples = rounds({
        "ours": with_states,
        "ours_list": driver.list_nodes,
        "bare": bare.pool,
        "transport": one._pool_answer,
    }, repeat)
    assert set(counts) == {size}, "our list_nodes saw %s of %d VMs" % (sorted(set(counts)), size)
    body = bare.pool()
    assert len(_pool_records(body)) == size
    return {"size": size, "ours": walls(samples["ours"]), "ours_cpu": cpus(samples["ours"]),
            "ours_list": walls(samples["ours_list"]), "bare": walls(samples["bare"]),
            "transport": walls(samples["transport"]), "body": body,
            "old": None, "old_list": None, "note": ""}


def measure_old(old: harness.LegacyDriver, size: int, args) -> Dict:
    """The 14.06 driver: list_nodes, and node.state of every node (or of a sample, scaled)."""
    sample = None if size <= args.old_full_up_to else args.old_state_sample
    old.call("time_list_nodes", repeat=1, state_sample=1, timeout=3600)   # warm-up
    timing = old.call("time_list_nodes", repeat=args.old_repeat, state_sample=sample, timeout=3600)
    assert timing["count"] == size, "14.06 list_nodes saw %d of %d VMs" % (timing["count"], size)
    per_state = median(timing["states"]) / timing["sample"]
    result = {"old_list": median(timing["list"])}
    result["old"] = result["old_list"] + per_state * size
    if timing["sample"] < size:
        result["note"] = ("14.06 node.state timed on %s of %s nodes (%.2f ms each), scaled x%.0f"
                          % (format(timing["sample"], ","), format(size, ","), per_state * 1e3,
                             size / timing["sample"]))
    return result


def report_scale(result: Dict, args) -> None:
    size = format(result["size"], ",")
    say("")
    row("%s VMs (median of %d / %d)" % (size, args.repeat, args.old_repeat), "ours", "14.06 (Python 2.7)",
        "ratio")
    old_list = result["old_list"]
    row("list_nodes", seconds(result["ours_list"]), seconds(old_list),
        "%.1fx" % (old_list / result["ours_list"]) if old_list else "-")
    row("list_nodes + every node.state", seconds(result["ours"]), seconds(result["old"]),
        "%.1fx" % (result["old"] / result["ours"]) if result["old"] else "-")
    if result["note"]:
        say("  note: " + result["note"])
    if result["old"] and result["size"] == 1000:
        say("  target: ours >= 20x faster at 1,000 VMs -> %s"
            % verdict(result["old"] / result["ours"], 20, smaller=False))
    ratio = result["ours"] / result["bare"]
    say("  the same answer, transfer only (warm connection, not decoded): %s with http.client, %s through"
        % (seconds(result["bare"]), seconds(result["transport"])))
    say("  the driver's own connection; ours (list_nodes + states) is %.1fx the first, %.1fx the second;"
        % (ratio, result["ours"] / result["transport"]))
    say("  CPU of the calling thread in list_nodes + states: %s" % seconds(result["ours_cpu"]))
    if result["size"] == 1000:
        say("  target: list_nodes + states <= 2.5x the bare transfer at 1,000 VMs -> %s" % verdict(ratio, 2.5))


def decode_pool(body: bytes) -> int:
    """What list_nodes does with the answer before it makes nodes (collector paused likewise)."""
    with gc_paused():
        return len(_pool_records(body))


def report_growth(results: List[Dict], repeat: int) -> None:
    if not results:
        return
    # The decoding alone, on the recorded answers, the sizes interleaved so that each meets
    # the same machine load (list_nodes itself could not be: the pool only grows).
    decode = rounds({result["size"]: functools.partial(decode_pool, result["body"]) for result in results},
                    repeat)
    say("\n== our driver, time per VM (medians); %s ==" % load())
    row("VMs", "list_nodes", "decoding (CPU)", "bare transfer", widths=(34, 14, 20, 14))
    for result in results:
        n = result["size"]
        result["decode"] = cpus(decode[n])
        row(format(n, ","), "%.1f us/VM" % (result["ours_list"] / n * 1e6),
            "%.1f us/VM" % (result["decode"] / n * 1e6), "%.1f us/VM" % (result["bare"] / n * 1e6),
            widths=(34, 14, 20, 14))
    if len(results) >= 2:
        first, last = results[0], results[-1]
        growth = (last["ours_list"] / last["size"]) / (first["ours_list"] / first["size"])
        decode_growth = (last["decode"] / last["size"]) / (first["decode"] / first["size"])
        say("  per-VM time at %s vs %s VMs: list_nodes x%.2f, decoding x%.2f (1.00 = no growth)"
            % (format(last["size"], ","), format(first["size"], ","), growth, decode_growth))
        say("  target: list_nodes per VM grows <= 1.1x -> %s" % verdict(growth, 1.1))


def bench_locations(cloud: Cloud, workdir: str, legacy: Optional[harness.Legacy], args) -> None:
    allocated = 0
    # The cloud's own server certificate, so that both drivers verify TLS as usual.
    tls = os.path.join(cloud.state_dir, "tls")
    cert = (os.path.join(tls, "server.pem"), os.path.join(tls, "server-key.pem"))
    for per_location in args.per_location:
        for site in SITES:
            cloud.allocate(site, per_location - allocated)
        allocated = per_location
        answers = [cloud.client(site).one_bytes("vmpool.info", -3, -1, -1, -1) for site in SITES]
        server = RecordedServer(answers, args.latency_ms / 1000.0, cert)
        try:
            say("\n== list_nodes over 4 locations vs 1, each answering after %d ms, %d VMs per location;"
                " recorded answers from a server process of their own; %s =="
                % (args.latency_ms, per_location, load()))
            sections = [(site, "https://127.0.0.1:%d" % port, site) for site, port in zip(SITES, server.ports)]
            measure_locations(sections, per_location, cloud, workdir, legacy, args)
        finally:
            server.stop()


def measure_locations(sections, per_location: int, cloud: Cloud, workdir: str,
                      legacy: Optional[harness.Legacy], args) -> None:
    tag = "%d" % per_location
    ours_one = our_driver(our_config(os.path.join(workdir, "ours-1-%s.cfg" % tag), sections[:1], cloud.ca_path))
    ours_four = our_driver(our_config(os.path.join(workdir, "ours-4-%s.cfg" % tag), sections, cloud.ca_path))
    counts = {1: set(), 4: set()}

    def lister(driver, n):
        def run() -> None:
            counts[n].add(len(driver.list_nodes()))
        return run

    # process_time: the CPU of every thread of the client, the per-location workers too.
    samples = rounds({"one": lister(ours_one, 1), "four": lister(ours_four, 4)}, args.repeat,
                     clock=time.process_time)
    assert counts == {1: {per_location}, 4: {4 * per_location}}, counts
    old_one = old_four = None
    if legacy is not None:
        with legacy.driver(old_config(os.path.join(workdir, "old-1-%s.cfg" % tag), sections[:1]),
                           cloud.ca_path, timeout=600) as old:
            old.call("time_list_nodes", repeat=1, state_sample=0)
            old_one = median(old.call("time_list_nodes", repeat=args.old_repeat, state_sample=0)["list"])
        with legacy.driver(old_config(os.path.join(workdir, "old-4-%s.cfg" % tag), sections),
                           cloud.ca_path, timeout=600) as old:
            old.call("time_list_nodes", repeat=1, state_sample=0)
            timing = old.call("time_list_nodes", repeat=args.old_repeat, state_sample=0)
            assert timing["count"] == 4 * per_location
            old_four = median(timing["list"])
    say("")
    row("median of %d / %d" % (args.repeat, args.old_repeat), "ours", "client CPU", "14.06 (Python 2.7)",
        widths=(34, 14, 14, 20))
    one_cpu, four_cpu = cpus(samples["one"]), cpus(samples["four"])
    row("1 location", seconds(walls(samples["one"])), seconds(one_cpu), seconds(old_one), widths=(34, 14, 14, 20))
    row("4 locations", seconds(walls(samples["four"])), seconds(four_cpu), seconds(old_four),
        widths=(34, 14, 14, 20))
    ratio = walls(samples["four"]) / walls(samples["one"])
    row("4 / 1", "%.2fx" % ratio, "%.2fx" % (four_cpu / one_cpu) if one_cpu else "-",
        "%.2fx" % (old_four / old_one) if old_one else "-", widths=(34, 14, 14, 20))
    say("  ours, 4 locations: fastest %.3f s, slowest %.3f s" % (min(w for w, _ in samples["four"]),
                                                                 max(w for w, _ in samples["four"])))
    say("  target: ours 4 locations <= 1.5x one location -> %s" % verdict(ratio, 1.5))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000",
                        type=lambda text: sorted(int(x) for x in text.split(",")),
                        help="VM counts, ascending (default 1000,10000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of our driver per point (median)")
    parser.add_argument("--old-repeat", type=int, default=3, help="runs of the 14.06 driver per point")
    parser.add_argument("--old-sizes", default="1000", type=lambda text: {int(x) for x in text.split(",")},
                        help="VM counts at which the 14.06 driver is measured too (default 1000; it takes"
                             " about 70 s at 10,000)")
    parser.add_argument("--old-full-up-to", type=int, default=1000,
                        help="read every node.state with 14.06 up to this many VMs; sample above")
    parser.add_argument("--old-state-sample", type=int, default=1000,
                        help="nodes whose state 14.06 reads above --old-full-up-to")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--per-location", default="10,100",
                        type=lambda text: sorted(int(x) for x in text.split(",")),
                        help="VMs per location in the latency comparison, ascending (default 10,100)")
    parser.add_argument("--skip-old", action="store_true", help="measure our driver only")
    parser.add_argument("--skip-locations", action="store_true")
    args = parser.parse_args(argv)

    legacy = legacy_or_none(args.skip_old)
    say("our driver: Python %s; 14.06 driver: %s" % (
        sys.version.split()[0], "Python %s" % legacy.version if legacy else "-"))
    cloud = Cloud([BENCH_USER, *SITES])
    workdir = tempfile.mkdtemp(prefix="bench-list-nodes-cfg-")
    say("local cloud %s (own process, life-cycle delay 0); %s" % (cloud.url, load()))
    try:
        bench_scale(cloud, workdir, legacy, args)
        if not args.skip_locations:
            bench_locations(cloud, workdir, legacy, args)
        say("\nat the end: %s (other work on the machine makes numbers noisier)" % load())
    finally:
        cloud.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
