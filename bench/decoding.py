"""Decoding service answers: what the driver does against the ways it replaced, counted side by side.

Answers are made here, shaped as ONE 3.2 and the Marketplace write them (spec sections 2.4
and 3.4): a ``one.vmpool.info`` answer of ``--vms`` VMs and a catalogue of ``--images``
entries. Sides:

* pool, one pass: ``services.one._pool_records`` (the string unescaped where it stands,
  one parse by ElementTree's C parser), what ``list_nodes`` does;
* pool, two passes: the XML-RPC answer decoded by defusedxml's parser, then the document
  in its string parsed again (``parse_vm_pool``), what it did before and still does for
  answers written another way;
* pool, lxml (a reference, when lxml is installed; not a dependency): the same unescaped
  document parsed by a hardened lxml parser (no entities, no network, no huge trees, no
  DTD), the VMs read from its tree by the same code;
* catalogue: ``services.safexml.fromstring`` against ``defusedxml.ElementTree.fromstring``.

Each side is timed in CPU seconds, interleaved rounds, medians; with ``--callgrind`` it is
also counted with valgrind's callgrind (instructions: deterministic; one process per side,
all at once, minus a process that only builds the answers; about 40 s, so ``tox -e bench``
leaves it out).
Run: ``python bench/decoding.py [--vms 300] [--images 100] [--runs 9] [--callgrind]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from defusedxml import ElementTree as DefusedElementTree  # noqa: E402

from stratuslab_lc_plugin.services import one, safexml  # noqa: E402

VM = (
    "<VM><ID>{i}</ID><UID>5</UID><GID>1</GID><UNAME>alice</UNAME><GNAME>users</GNAME><NAME>node-{i}</NAME>"
    "<PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A><GROUP_U>0</GROUP_U>"
    "<GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U><OTHER_M>0</OTHER_M><OTHER_A>0</OTHER_A>"
    "</PERMISSIONS><LAST_POLL>1404800000</LAST_POLL><STATE>3</STATE><LCM_STATE>3</LCM_STATE>"
    "<STIME>1404799000</STIME><ETIME>0</ETIME><DEPLOY_ID>one-{i}</DEPLOY_ID><MEMORY>131072</MEMORY>"
    "<CPU>1</CPU><NET_TX>0</NET_TX><NET_RX>0</NET_RX><TEMPLATE><CONTEXT><PUBLIC_KEY><![CDATA[ssh-rsa AAAAB3"
    "NzaC1yc2EAAAADAQABAAABAQC user@host]]></PUBLIC_KEY><TARGET><![CDATA[hdd]]></TARGET></CONTEXT>"
    "<CPU><![CDATA[1]]></CPU><DISK><DISK_ID><![CDATA[0]]></DISK_ID><DRIVER><![CDATA[raw]]></DRIVER>"
    "<READONLY><![CDATA[no]]></READONLY><SAVE><![CDATA[no]]></SAVE><SOURCE><![CDATA[https://marketplace"
    ".stratuslab.eu/metadata/BN1EEkPiBx87_uLj2-sdybSI-Xb]]></SOURCE><TARGET><![CDATA[hda]]></TARGET></DISK>"
    "<DISK><DISK_ID><![CDATA[1]]></DISK_ID><READONLY><![CDATA[no]]></READONLY><SIZE><![CDATA[1536]]></SIZE>"
    "<TARGET><![CDATA[hdb]]></TARGET><TYPE><![CDATA[swap]]></TYPE></DISK><GRAPHICS><PORT><![CDATA[-1]]>"
    "</PORT><TYPE><![CDATA[vnc]]></TYPE></GRAPHICS><MEMORY><![CDATA[1536]]></MEMORY><NAME><![CDATA[node-{i}]]>"
    "</NAME><NIC><BRIDGE><![CDATA[br0]]></BRIDGE><IP><![CDATA[10.1.{a}.{b}]]></IP><MAC><![CDATA[02:00:0a:01:"
    "{a:02x}:{b:02x}]]></MAC><NETWORK><![CDATA[public]]></NETWORK><NETWORK_ID><![CDATA[0]]></NETWORK_ID>"
    "<NETWORK_UNAME><![CDATA[oneadmin]]></NETWORK_UNAME><VLAN><![CDATA[NO]]></VLAN></NIC><RANK><![CDATA[- "
    "RUNNING_VMS]]></RANK><VCPU><![CDATA[1]]></VCPU><VMID><![CDATA[{i}]]></VMID></TEMPLATE><HISTORY_RECORDS>"
    "<HISTORY><SEQ>0</SEQ><HOSTNAME>node-12.example.org</HOSTNAME><VM_DIR>/var/lib/one</VM_DIR><HID>3</HID>"
    "<STIME>1404799010</STIME><ETIME>0</ETIME><VMMMAD>vmm_kvm</VMMMAD><VNMMAD>dummy</VNMMAD><TMMAD>"
    "tm_stratuslab</TMMAD><PSTIME>1404799010</PSTIME><PETIME>1404799060</PETIME><RSTIME>1404799060</RSTIME>"
    "<RETIME>0</RETIME><ESTIME>0</ESTIME><EETIME>0</EETIME><REASON>0</REASON></HISTORY></HISTORY_RECORDS></VM>"
)
ENTRY = (
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:dcterms="http://purl.org/dc/terms/"'
    ' xmlns:slreq="http://mp.stratuslab.eu/slreq#" xmlns:slterms="http://mp.stratuslab.eu/slterms#">'
    '<rdf:Description rdf:about="#{id}"><dcterms:identifier>{id}</dcterms:identifier>'
    "<slreq:bytes>1073741824</slreq:bytes><slreq:checksum><slreq:algorithm>SHA-1</slreq:algorithm>"
    "<slreq:value>{sha}</slreq:value></slreq:checksum><slreq:endorsement><slreq:endorser>"
    "<slreq:email>alice@example.org</slreq:email><slreq:subject>CN=Alice</slreq:subject></slreq:endorser>"
    "<dcterms:created>2014-06-01T00:00:00Z</dcterms:created></slreq:endorsement>"
    "<dcterms:type>machine</dcterms:type><dcterms:valid>2099-01-01T00:00:00Z</dcterms:valid>"
    "<slterms:os>Ubuntu</slterms:os><slterms:os-version>14.04</slterms:os-version><slterms:os-arch>x86_64"
    "</slterms:os-arch><slterms:version>1.0</slterms:version><dcterms:format>qcow2</dcterms:format>"
    "<slterms:disks-bus>virtio</slterms:disks-bus><slterms:location>https://example.org/{id}.img.gz"
    "</slterms:location><dcterms:title>image-{id}</dcterms:title><dcterms:description>An image"
    "</dcterms:description></rdf:Description></rdf:RDF>"
)


def pool_answer(vms: int) -> bytes:
    document = "<VM_POOL>%s</VM_POOL>" % "".join(VM.format(i=i, a=i // 250, b=i % 250 + 2) for i in range(vms))
    return xmlrpc.client.dumps(([True, document, 0],), methodresponse=True).encode("utf-8")


def catalogue(images: int) -> bytes:
    entries = "".join(ENTRY.format(id="%027d" % i, sha="%040x" % i) for i in range(images))
    return ("<metadata>%s</metadata>" % entries).encode("utf-8")


def one_pass(body: bytes) -> int:
    with one.gc_paused():
        return len(one._pool_records(body))


def two_passes(body: bytes) -> int:
    with one.gc_paused():
        return len(one.parse_vm_pool(one._loads(body)[0][1]))


def lxml_pass(body: bytes) -> int:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)
    head = one._POOL_HEAD.match(body)
    assert head is not None
    start, end = head.end(), body.find(b"<", head.end())
    text = body[start:end]
    for escape, character in one._ESCAPES:
        text = text.replace(escape, character)
    with one.gc_paused():
        root = etree.fromstring(body[:start] + text + body[end:], parser)
        assert root.getroottree().docinfo.doctype == ""
        return len(one._vms_of_pool(root[0][0][0][0][0][1][0][0]))


def have_lxml() -> bool:
    try:
        import lxml.etree  # noqa: F401
    except ImportError:
        return False
    return True


def sides(args) -> Dict[str, Callable[[], int]]:
    body, metadata = pool_answer(args.vms), catalogue(args.images)
    chosen = {
        "pool, one pass": lambda: one_pass(body),
        "pool, two passes": lambda: two_passes(body),
        "catalogue, safexml": lambda: len(safexml.fromstring(metadata)),
        "catalogue, defusedxml": lambda: len(DefusedElementTree.fromstring(metadata)),
    }
    if have_lxml():
        chosen["pool, lxml (reference)"] = lambda: lxml_pass(body)
    return chosen


def cpu_rounds(chosen: Dict[str, Callable[[], int]], runs: int) -> Dict[str, float]:
    names = list(chosen)
    results = {name: chosen[name]() for name in names}  # warm-up, and every side must agree
    assert len({results[n] for n in names if n.startswith("pool")}) == 1, results
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for index in range(runs):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.process_time()
            chosen[name]()
            samples[name].append(time.process_time() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def repeats(side: str) -> int:
    """Calls per counted process: a catalogue is small beside what varies between processes."""
    return 10 if side.startswith("catalogue") else 1


def count(side: Optional[str], args) -> int:
    """Instructions of a process that builds the answers and calls ``side`` (None: no side)."""
    code = ("import sys; sys.argv = [sys.argv[0]] + %r; import runpy; m = runpy.run_path(%r, run_name='bench');"
            "chosen = m['sides'](m['parser']().parse_args(sys.argv[1:])); %s"
            % (["--vms", str(args.vms), "--images", str(args.images)], os.path.abspath(__file__),
               "[chosen[%r]() for _ in range(%d)]" % (side, repeats(side)) if side else "pass"))
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", code],
                          env=dict(os.environ, PYTHONHASHSEED="0"), capture_output=True, text=True, timeout=600)
    found = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError("callgrind failed: %s" % proc.stderr[-800:])
    return int(found.group(1))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=300, help="VMs in the pool answer (default 300)")
    parser.add_argument("--images", type=int, default=100, help="catalogue entries (default 100)")
    parser.add_argument("--runs", type=int, default=9, help="CPU-time rounds per side (default 9)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions too (valgrind)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    chosen = sides(args)
    one_load, five_load, _ = os.getloadavg()
    print("Python %s; %d VMs (%.1f MB answer), %d catalogue entries; load average %.2f (1 min), %.2f (5 min)"
          % (sys.version.split()[0], args.vms, len(pool_answer(args.vms)) / 1e6, args.images, one_load, five_load))
    if not have_lxml():
        print("lxml is not installed: its reference row is left out (pip install lxml to see it)")
    counts: Dict[str, int] = {}
    if not args.callgrind:
        print("instruction counts: not asked for (--callgrind)")
    elif shutil.which("valgrind") is None:
        print("instruction counts: skipped, valgrind is not installed (Debian/Ubuntu: apt-get install valgrind)")
    else:
        names: List[Optional[str]] = [None, *chosen]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            totals = list(pool.map(lambda side: count(side, args), names))
        counts = {name: (total - totals[0]) // repeats(name) for name, total in zip(chosen, totals[1:])}
    cpu = cpu_rounds(chosen, args.runs)
    print("\n%-28s %16s %14s" % ("", "instructions", "CPU (median)"))
    for name in chosen:
        print("%-28s %16s %11.1f ms" % (name, "{:,}".format(counts[name]) if counts else "-", cpu[name] * 1e3))
    for better, worse in (("pool, one pass", "pool, two passes"), ("pool, one pass", "pool, lxml (reference)"),
                          ("catalogue, safexml", "catalogue, defusedxml")):
        if better in chosen and worse in chosen:
            ratio = "%.2f" % (counts[worse] / counts[better]) if counts else "-"
            print("%s / %s: instructions %s, CPU %.2f" % (worse, better, ratio, cpu[worse] / cpu[better]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
