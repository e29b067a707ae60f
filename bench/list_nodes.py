"""list_nodes: our driver against the original 14.06 driver, on the same local cloud, in one run.

Measured, medians side by side:

1. ``list_nodes()`` and then reading ``node.state`` of every node, at 1,000 and 10,000
   VMs: our driver (this interpreter) vs the 14.06 driver (Python 2.7, run unchanged by
   ``tests/legacy/old_driver.py``). The 14.06 driver asks the cloud again for each
   ``node.state``; at 10,000 VMs that part is timed on an evenly spread sample and scaled
   to all nodes (the output says so).
2. ``list_nodes()`` over 4 locations vs 1 location, each location behind its own small
   TCP proxy that delays every byte the client sends by ``--latency-ms`` (one-way
   latency, TLS stays end to end), both drivers.
3. How our ``list_nodes`` time per VM grows from 1,000 to 10,000 VMs, with the
   client-side parse alone (``parse_vm_pool`` on the fetched document).

The cloud runs in its own process (``python -m stratuslab_lc_plugin.emulator``,
life-cycle delay 0, VMs without SSH keys so no SSH guest starts); VMs are allocated over
XML-RPC by a few concurrent clients. The 14.06 client resolves every VM address back to a
name; here that is answered from /etc/hosts only (no DNS traffic), which only makes the
14.06 driver faster than it would be against a real resolver.

Usage: ``python bench/list_nodes.py [--sizes 1000,10000] [--repeat 5] [--old-repeat 3]
[--old-state-sample 1000] [--latency-ms 50] [--per-location 10,100]``. Without Python 2.7 or
the 14.06 packages, only our driver is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from legacy import harness  # noqa: E402
from stratuslab_lc_plugin.services.one import parse_vm_pool  # noqa: E402

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


class LatencyProxy:
    """A loopback TCP proxy that delivers what the client sends ``delay`` seconds late
    (each chunk at its arrival time + delay, so it is latency, not a throughput limit)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self.connections = 0          # accepted so far: shows whether clients reuse theirs
        self._loop = asyncio.new_event_loop()
        self._tasks: set = set()
        self._stopping: Optional[asyncio.Future] = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the latency proxy did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve(ready))
        self._loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        self._stopping = self._loop.create_future()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stopping
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            for stream in (writer, up_writer):
                sock = stream.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(self._pipe(reader, up_writer, self.delay),
                                 self._pipe(up_reader, writer, 0.0))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for stream in (writer, up_writer):
                if stream is not None:
                    stream.close()
            self._tasks.discard(task)

    async def _pipe(self, reader, writer, delay: float) -> None:
        chunks: asyncio.Queue = asyncio.Queue()

        async def receive() -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    chunks.put_nowait((self._loop.time() + delay, data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                chunks.put_nowait((0.0, b""))

        receiving = asyncio.ensure_future(receive())
        try:
            while True:
                due, data = await chunks.get()
                pause = due - self._loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        finally:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)

    def stop(self) -> None:
        def finish() -> None:
            if self._stopping is not None and not self._stopping.done():
                self._stopping.set_result(None)

        self._loop.call_soon_threadsafe(finish)
        self._thread.join(10)


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


def time_ours(driver, repeat: int, states: bool = True) -> Tuple[List[float], List[float], int]:
    """Seconds per ``list_nodes()`` alone and, interleaved with it so both meet the same
    machine load, per ``list_nodes()`` + every ``node.state``; after one warm-up call."""
    driver.list_nodes()
    plain, with_states, count = [], [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = len(driver.list_nodes())
        plain.append(time.perf_counter() - started)
        if states:
            started = time.perf_counter()
            nodes = driver.list_nodes()
            read = [node.state for node in nodes]
            with_states.append(time.perf_counter() - started)
            assert len(read) == count
    return plain, with_states, count


# ---------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def seconds(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return "%.3f s" % value if value < 100 else "%.0f s" % value


def row(*cells: str, widths: Sequence[int] = (30, 14, 20, 12)) -> None:
    print("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(cells, widths))).rstrip())


def say(text: str) -> None:
    print(text, flush=True)


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
    say("\n== list_nodes + every node.state, one location ==")
    sections = [("bench", cloud.url, BENCH_USER)]
    ours = our_driver(our_config(os.path.join(workdir, "ours-bench.cfg"), sections, cloud.ca_path))
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
            result = measure_ours(ours, cloud, size, args.repeat)
            if old is not None:
                result.update(measure_old(old, size, args))
            results.append(result)
            report_scale(result, args)
    finally:
        if old is not None:
            old.close()
    report_growth(results, args.repeat)


def measure_ours(driver, cloud: Cloud, size: int, repeat: int) -> Dict:
    list_only, with_states, count = time_ours(driver, repeat)
    assert count == size, "our list_nodes saw %d of %d VMs" % (count, size)
    rpc = cloud.client(BENCH_USER)
    fetch = []
    for _ in range(repeat):
        started = time.perf_counter()
        raw = rpc.one_bytes("vmpool.info", -3, -1, -1, -1)
        fetch.append(time.perf_counter() - started)
    document = xmlrpc.client.loads(raw)[0][0][1]
    assert len(parse_vm_pool(document)) == size
    return {"size": size, "ours": median(with_states), "ours_list": median(list_only),
            "fetch": median(fetch), "document": document, "old": None, "old_list": None, "note": ""}


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
        verdict = "met" if result["old"] / result["ours"] >= 20 else "NOT met"
        say("  target: ours >= 20x faster at 1,000 VMs -> %s" % verdict)


def report_growth(results: List[Dict], repeat: int) -> None:
    if not results:
        return
    # The parse alone is timed here, the sizes interleaved, so that each meets the same
    # machine load (list_nodes itself could not be: the pool only grows).
    parse: Dict[int, List[float]] = {result["size"]: [] for result in results}
    for _ in range(repeat):
        for result in results:
            started = time.perf_counter()
            parse_vm_pool(result["document"])
            parse[result["size"]].append(time.perf_counter() - started)
    for result in results:
        result["parse"] = median(parse[result["size"]])
    say("\n== our driver, time per VM (medians) ==")
    say("  client parse: parse_vm_pool on the fetched document, sizes interleaved;\n"
        "  cloud serves: request to last byte on a fresh connection, no decoding")
    row("VMs", "list_nodes", "client parse", "cloud serves", widths=(30, 14, 20, 14))
    for result in results:
        n = result["size"]
        row(format(n, ","), "%.1f us/VM" % (result["ours_list"] / n * 1e6),
            "%.1f us/VM" % (result["parse"] / n * 1e6), "%.1f us/VM" % (result["fetch"] / n * 1e6),
            widths=(30, 14, 20, 14))
    if len(results) >= 2:
        first, last = results[0], results[-1]
        growth = (last["ours_list"] / last["size"]) / (first["ours_list"] / first["size"])
        parse_growth = (last["parse"] / last["size"]) / (first["parse"] / first["size"])
        say("  per-VM time at %s vs %s VMs: list_nodes x%.2f, parse x%.2f (1.00 = no growth)"
            % (format(last["size"], ","), format(first["size"], ","), growth, parse_growth))


def bench_locations(cloud: Cloud, workdir: str, legacy: Optional[harness.Legacy], args) -> None:
    allocated = 0
    proxies = [LatencyProxy(cloud.port, args.latency_ms / 1000.0) for _ in SITES]
    try:
        sections = [(site, "https://127.0.0.1:%d" % proxy.port, site) for site, proxy in zip(SITES, proxies)]
        for per_location in args.per_location:
            say("\n== list_nodes over 4 locations vs 1, each behind +%d ms latency, %d VMs per location =="
                % (args.latency_ms, per_location))
            for site in SITES:
                cloud.allocate(site, per_location - allocated)
            allocated = per_location
            measure_locations(sections, proxies, per_location, cloud, workdir, legacy, args)
    finally:
        for proxy in proxies:
            proxy.stop()


def measure_locations(sections, proxies, per_location: int, cloud: Cloud, workdir: str,
                      legacy: Optional[harness.Legacy], args) -> None:
    def connections() -> int:
        return sum(proxy.connections for proxy in proxies)

    tag = "%d" % per_location
    ours_one = our_driver(our_config(os.path.join(workdir, "ours-1-%s.cfg" % tag), sections[:1],
                                     cloud.ca_path))
    ours_four = our_driver(our_config(os.path.join(workdir, "ours-4-%s.cfg" % tag), sections,
                                      cloud.ca_path))
    one_times, _, one_count = time_ours(ours_one, args.repeat, states=False)
    before = connections()
    four_times, _, four_count = time_ours(ours_four, args.repeat, states=False)
    ours_new = (connections() - before - 4) / args.repeat    # minus the warm-up call's own
    assert (one_count, four_count) == (per_location, 4 * per_location)
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
    row("median of %d / %d" % (args.repeat, args.old_repeat), "ours", "14.06 (Python 2.7)")
    row("1 location", seconds(median(one_times)), seconds(old_one))
    row("4 locations", seconds(median(four_times)), seconds(old_four))
    ratio = median(four_times) / median(one_times)
    row("4 / 1", "%.2fx" % ratio, "%.2fx" % (old_four / old_one) if old_one else "-")
    say("  ours, 4 locations: fastest %.3f s, slowest %.3f s; %.1f new connections per call"
        % (min(four_times), max(four_times), ours_new))
    say("  target: ours 4 locations <= 1.5x one location -> %s" % ("met" if ratio <= 1.5 else "NOT met"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000",
                        type=lambda text: sorted(int(x) for x in text.split(",")),
                        help="VM counts, ascending (default 1000,10000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of our driver per point (median)")
    parser.add_argument("--old-repeat", type=int, default=3, help="runs of the 14.06 driver per point")
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
    say("local cloud %s (own process, life-cycle delay 0); %d CPUs, load average %.2f"
        % (cloud.url, os.cpu_count() or 0, os.getloadavg()[0]))
    try:
        bench_scale(cloud, workdir, legacy, args)
        if not args.skip_locations:
            bench_locations(cloud, workdir, legacy, args)
        say("\nload average at the end: %.2f (other work on the machine makes numbers noisier)"
            % os.getloadavg()[0])
    finally:
        cloud.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
