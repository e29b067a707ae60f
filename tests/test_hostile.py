"""Hostile and broken services: entity expansion, external entities, oversized and garbled answers.

A small HTTPS server (with the local cloud's certificate, so TLS is verified for real)
answers whatever each test tells it, in place of a location's three services. Every
answer must end in a clear error that names the location and the operation, quickly,
without expanding entities, reading files, or holding more than the size limit in memory.
"""

from __future__ import annotations

import gzip
import json
import re
import ssl
import threading
import time
import xmlrpc.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from libcloud.compute.base import Node
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState

from stratuslab_lc_plugin.errors import ProtocolError, ServiceUnavailableError
from stratuslab_lc_plugin.services.connection import MAX_RESPONSE_BYTES, StratusLabConnection

pytestmark = pytest.mark.timeout(120)

LOCATION_ID = "hostile"
DISK = "0b7c3f7e-8a38-4b8e-9d7b-1d7e1f2a3b4c"

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(' <!ENTITY lol%d "%s">\n' % (i, ("&lol%d;" % (i - 1) if i > 1 else "&lol;") * 10) for i in range(1, 10))
    + "]>\n"
)
RDF = (
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:dcterms="http://purl.org/dc/terms/">'
    "<rdf:Description>%s</rdf:Description></rdf:RDF>"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.server.hostile.key(self.command, self.path, body)
        missing = (404, {}, b"no answer set for %s" % key.encode())
        status, headers, payload = self.server.hostile.answers.get(key, missing)
        try:
            if callable(payload):
                payload(self, status, headers)
                return
            self.send_response(status)
            for name, value in {"Content-Type": "text/plain", "Content-Length": str(len(payload)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (ConnectionError, ssl.SSLError, OSError):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = _answer


class Hostile:
    """The server; ``answers`` maps a request key to (status, headers, body or writer)."""

    def __init__(self, cloud) -> None:
        cert, key = cloud.ca.server_pair()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.hostile = self
        self.answers: dict = {}
        self.url = "https://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @staticmethod
    def key(method: str, path: str, body: bytes) -> str:
        """``one.vmpool.info`` (XML-RPC method), ``marketplace``, or ``pdisk GET`` / ``pdisk POST``..."""
        if "/one-proxy/" in path:
            match = re.search(rb"<methodName>([^<]+)</methodName>", body)
            return match.group(1).decode() if match else "one"
        if path.startswith("/pdisk/"):
            return "pdisk " + method
        return "marketplace"

    def set(self, key: str, body, status: int = 200, **headers) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.answers[key] = (status, {k.replace("_", "-"): v for k, v in headers.items()}, body)

    def rpc(self, method: str, value) -> None:
        self.set(method, xmlrpc.client.dumps((value,), methodresponse=True), Content_Type="text/xml")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile(cloud):
    server = Hostile(cloud)
    yield server
    server.close()


@pytest.fixture
def hdriver(hostile, cloud, tmp_path):
    path = tmp_path / "hostile.cfg"
    path.write_text(
        "[default]\nselected_section = %s\n[%s]\n"
        "endpoint = %s/one-proxy/xmlrpc\npdisk_endpoint = %s/pdisk\nmarketplace_endpoint = %s/marketplace\n"
        "username = u\npassword = p\nca_certs_path = %s\nuser_public_key_file = %s\n"
        % (LOCATION_ID, LOCATION_ID, hostile.url, hostile.url, hostile.url, cloud.ca_path, cloud.public_key_path)
    )
    path.chmod(0o600)
    return get_driver("stratuslab")("default", stratuslab_user_config=str(path), timeout=2.0, backoff=0.01)


def assert_clear(error: Exception, operation: str) -> None:
    text = str(error)
    assert text.startswith(LOCATION_ID + ": "), text
    assert operation in text, text
    assert error.location == LOCATION_ID and error.operation == operation


# -- XML attacks -----------------------------------------------------------------------------


def test_marketplace_entity_expansion_is_refused_quickly(hostile, hdriver):
    hostile.set("marketplace", BILLION_LAUGHS + "<metadata>&lol9;</metadata>", Content_Type="application/xml")
    started = time.monotonic()
    with pytest.raises(ProtocolError) as caught:
        hdriver.list_images()
    assert time.monotonic() - started < 10  # a billion "lol"s would take far longer and gigabytes
    assert_clear(caught.value, "list_images")
    assert "Entit" in str(caught.value)


def test_marketplace_external_entities_are_not_fetched(hostile, hdriver):
    body = (
        '<?xml version="1.0"?>\n<!DOCTYPE metadata [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        + "<metadata>" + RDF % "<dcterms:identifier>&xxe;</dcterms:identifier>" + "</metadata>"
    )
    hostile.set("marketplace", body, Content_Type="application/xml")
    with pytest.raises(ProtocolError) as caught:
        hdriver.get_image("A" * 27)
    assert_clear(caught.value, "get_image")
    assert "root:" not in str(caught.value)


def test_xml_rpc_answers_with_a_dtd_are_refused(hostile, hdriver):
    answer = xmlrpc.client.dumps(([True, "&lol9;", 0],), methodresponse=True)
    hostile.set("one.vmpool.info", BILLION_LAUGHS + answer.split("?>", 1)[1], Content_Type="text/xml")
    with pytest.raises(ProtocolError) as caught:
        hdriver.list_nodes()
    assert_clear(caught.value, "one.vmpool.info")


def test_vm_documents_with_entities_are_refused(hostile, hdriver):
    hostile.rpc("one.vmpool.info", [True, BILLION_LAUGHS + "<VM_POOL><VM><ID>&lol9;</ID></VM></VM_POOL>", 0])
    with pytest.raises(ProtocolError) as caught:
        hdriver.list_nodes()
    assert_clear(caught.value, "one.vmpool.info")


@pytest.mark.parametrize(
    "prolog",
    [
        '<?xml version="1.0"?><?foo bar?>',   # a processing instruction before the DTD
        "\ufeff",                              # a byte order mark
        "<!-- <VM -->",                        # a comment that looks like a start tag
    ],
)
def test_vm_documents_with_a_dtd_anywhere_in_the_prolog_are_refused(hostile, hdriver, prolog):
    document = prolog + '<!DOCTYPE VM_POOL [<!ENTITY a "EXPANDED">]><VM_POOL><VM><ID>1</ID><NAME>&a;</NAME></VM></VM_POOL>'
    hostile.rpc("one.vmpool.info", [True, document, 0])
    with pytest.raises(ProtocolError) as caught:
        hdriver.list_nodes()
    assert_clear(caught.value, "one.vmpool.info")


def test_doctype_text_inside_cdata_is_only_text(hostile, hdriver):
    document = "<VM_POOL><VM><ID>1</ID><NAME><![CDATA[<!DOCTYPE x>]]></NAME></VM></VM_POOL>"
    hostile.rpc("one.vmpool.info", [True, document, 0])
    assert [n.name for n in hdriver.list_nodes()] == ["<!DOCTYPE x>"]


@pytest.mark.parametrize("value", ["abc", {"id": 1}, True])
def test_an_action_answer_that_is_not_a_vm_id_is_a_protocol_error(hostile, hdriver, value):
    hostile.rpc("one.vm.action", [True, value, 0])
    node = Node("1", "n", NodeState.RUNNING, [], [], hdriver, extra={"location": LOCATION_ID})
    with pytest.raises(ProtocolError) as caught:
        hdriver.destroy_node(node)
    assert_clear(caught.value, "one.vm.action")


# -- garbage from every service ----------------------------------------------------------------


def _rpc(value) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True).encode()


GARBAGE = [
    # (key, status, body, what the driver does, operation named in the error)
    ("one.vmpool.info", 200, b"<html><body>Bad gateway, but 200</body></html>", "list_nodes", "one.vmpool.info"),
    ("one.vmpool.info", 200, b"", "list_nodes", "one.vmpool.info"),
    ("one.vmpool.info", 200, b'{"json": "instead"}', "list_nodes", "one.vmpool.info"),
    ("one.vmpool.info", 200, _rpc("just a string"), "list_nodes", "one.vmpool.info"),
    ("one.vmpool.info", 200, _rpc([True, 42, 0]), "list_nodes", "one.vmpool.info"),
    ("one.vmpool.info", 200, _rpc([True, "<VM_POOL><VM><ID>7x</ID></VM></VM_POOL>", 0]), "list_nodes", "one.vmpool.info"),
    ("one.vmpool.info", 200, _rpc([True, "<VM_POOL><VM><ID>1</ID>", 0]), "list_nodes", "one.vmpool.info"),
    ("one.vm.info", 200, _rpc([True, "<VM><NAME>no id</NAME></VM>", 0]), "ex_get_node", "one.vm.info"),
    ("one.vm.info", 200, b"\x00\xff\xfe garbage", "ex_get_node", "one.vm.info"),
    ("pdisk GET", 200, b"not json at all", "list_volumes", "list_volumes"),
    ("pdisk GET", 200, b'{"a": "dict, not a list"}', "list_volumes", "list_volumes"),
    ("pdisk GET", 200, b"[1, 2, 3]", "list_volumes", "list_volumes"),
    ("pdisk GET", 200, json.dumps([{"uuid": "../../etc", "size": "1"}]).encode(), "list_volumes", "list_volumes"),
    ("pdisk GET", 200, json.dumps([{"uuid": DISK, "size": "big"}]).encode(), "list_volumes", "list_volumes"),
    ("pdisk GET", 200, json.dumps({"uuid": DISK, "count": "one"}).encode(), "ex_get_volume", "get_volume"),
    ("pdisk POST", 201, b'{"uuid": "not-a-uuid"}', "create_volume", "create_volume"),
    ("pdisk POST", 201, b"<html>created</html>", "create_volume", "create_volume"),
    ("marketplace", 200, b"not xml", "list_images", "list_images"),
    ("marketplace", 200, ("<metadata>%s</metadata>" % (RDF % "<dcterms:title>no id</dcterms:title>")).encode(),
     "list_images", "list_images"),
]

GARBAGE_IDS = ["%s-%d" % (garbage[0], index) for index, garbage in enumerate(GARBAGE)]

CALLS = {
    "list_nodes": lambda d: d.list_nodes(),
    "ex_get_node": lambda d: d.ex_get_node(3),
    "list_volumes": lambda d: d.list_volumes(),
    "ex_get_volume": lambda d: d.ex_get_volume(DISK),
    "create_volume": lambda d: d.create_volume(1, "garbage"),
    "list_images": lambda d: d.list_images(),
}


@pytest.mark.parametrize("key, status, body, call, operation", GARBAGE, ids=GARBAGE_IDS)
def test_garbage_from_any_service_is_a_clear_protocol_error(hostile, hdriver, key, status, body, call, operation):
    hostile.set("pdisk GET", b"[]", Content_Type="application/json")  # create_volume lists first
    hostile.set(key, body, status=status)
    with pytest.raises(ProtocolError) as caught:
        CALLS[call](hdriver)
    assert_clear(caught.value, operation)
    assert "Traceback" not in str(caught.value)


# -- oversized and slow answers ------------------------------------------------------------------


def test_the_default_answer_limit_is_64_mib():
    assert MAX_RESPONSE_BYTES == StratusLabConnection.max_response_bytes == 64 * 1024 * 1024


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(StratusLabConnection, "max_response_bytes", 64 * 1024)
    return 64 * 1024


def _chunked(total: int):
    def write(handler, status, headers):
        handler.send_response(status)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        chunk = b"[" + b" " * 8190 + b"\n"
        for _ in range(total // len(chunk)):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        handler.wfile.write(b"0\r\n\r\n")

    return write


def test_oversized_answers_announced_by_content_length_are_refused(hostile, hdriver, small_limit):
    body = b"<metadata>" + b" " * (4 * small_limit) + b"</metadata>"
    hostile.set("marketplace", body, Content_Type="application/xml")
    with pytest.raises(ProtocolError, match="more than %d bytes" % small_limit) as caught:
        hdriver.list_images()
    assert_clear(caught.value, "list_images")


def test_oversized_streamed_answers_are_cut_at_the_limit(hostile, hdriver, small_limit):
    hostile.answers["pdisk GET"] = (200, {}, _chunked(2 * 1024 * 1024))
    with pytest.raises(ProtocolError, match="more than %d bytes" % small_limit) as caught:
        hdriver.list_volumes()
    assert_clear(caught.value, "list_volumes")


def test_compression_bombs_are_cut_at_the_limit(hostile, hdriver, small_limit):
    bomb = gzip.compress(b"<VM_POOL>" + b" " * (8 * 1024 * 1024) + b"</VM_POOL>")
    assert len(bomb) < small_limit
    hostile.set("one.vmpool.info", bomb, Content_Type="text/xml", Content_Encoding="gzip")
    with pytest.raises(ProtocolError, match="more than %d bytes" % small_limit) as caught:
        hdriver.list_nodes()
    assert_clear(caught.value, "one.vmpool.info")


def test_a_server_that_drips_its_answer_cannot_hold_a_call_past_the_timeout(hostile, hdriver):
    def drip(handler, status, headers):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"[")
        for _ in range(600):  # one byte every 0.1 s: each read is well within the socket timeout
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.1)

    hostile.answers["pdisk GET"] = (200, {}, drip)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="timed out") as caught:
        hdriver.list_volumes()
    assert time.monotonic() - started < 2.0 + 5
    assert_clear(caught.value, "list_volumes")
