"""Hostile and broken services: entity expansion, external entities, oversized and garbled answers.

A small HTTPS server (with the local cloud's certificate, so TLS is verified for real)
answers whatever each test tells it, in place of a location's three services. Every
answer must end in a clear error that names the location and the operation, quickly,
without expanding entities, reading files, or holding more than the size limit in memory.
"""

from __future__ import annotations

import gzip
import json
import time
import xmlrpc.client
from xml.sax.saxutils import escape as xml_escape

import pytest
from libcloud.compute.base import Node
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState

from stratuslab_lc_plugin.errors import ProtocolError, RedirectRefusedError, ServiceUnavailableError
from stratuslab_lc_plugin.services.connection import MAX_RESPONSE_BYTES, StratusLabConnection
from tests.netkit import Hostile

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
    return get_driver("stratuslab")("default", stratuslab_user_config=str(path), timeout=2.0, retry_delay=0.01)


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


def _apache_frame(document: str) -> str:
    """A pool answer as the one-proxy's Apache XML-RPC writes it: the string as a bare <value>."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><methodResponse><params><param><value><array><data>'
        "<value><boolean>1</boolean></value><value>%s</value><value><i4>0</i4></value>"
        "</data></array></value></param></params></methodResponse>"
    ) % xml_escape(document)


def test_pool_answers_written_as_the_one_proxy_writes_them_are_read(hostile, hdriver):
    document = "<VM_POOL><VM><ID>4</ID><NAME>a &lt; b</NAME><STATE>3</STATE><LCM_STATE>3</LCM_STATE></VM></VM_POOL>"
    hostile.set("one.vmpool.info", _apache_frame(document), Content_Type="text/xml")
    [node] = hdriver.list_nodes()
    assert (node.id, node.name, node.state) == ("4", "a < b", "running")


@pytest.mark.parametrize("prolog", ["", '<?xml version="1.0"?>'])
def test_vm_pools_with_a_dtd_in_the_one_proxy_frame_are_refused(hostile, hdriver, prolog):
    document = prolog + '<!DOCTYPE VM_POOL [<!ENTITY a "EXPANDED">]><VM_POOL><VM><ID>1</ID><NAME>&a;</NAME></VM></VM_POOL>'
    hostile.set("one.vmpool.info", _apache_frame(document), Content_Type="text/xml")
    with pytest.raises(ProtocolError) as caught:
        hdriver.list_nodes()
    assert_clear(caught.value, "one.vmpool.info")
    assert "EXPANDED" not in str(caught.value)


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


def test_a_server_that_drips_header_lines_cannot_hold_a_call_past_the_timeout(hostile, hdriver):
    def drip_headers(handler, status, headers):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for number in range(600):  # a header line every 0.1 s, and the blank line never comes
            handler.wfile.write(b"X-Drip-%d: 1\r\n" % number)
            handler.wfile.flush()
            time.sleep(0.1)

    hostile.answers["one.vmpool.info"] = (200, {}, drip_headers)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="timed out") as caught:
        hdriver.list_nodes()
    assert time.monotonic() - started < 2.0 + 5
    assert_clear(caught.value, "one.vmpool.info")
    assert caught.value.timed_out


def test_oversized_answers_are_cut_under_libcloud_debug_too(hostile, hdriver, small_limit, monkeypatch):
    import io

    from libcloud.common.base import Connection
    from libcloud.utils.loggingconnection import LoggingConnection

    log = io.StringIO()
    monkeypatch.setattr(Connection, "conn_class", LoggingConnection)
    monkeypatch.setattr(LoggingConnection, "log", log)
    hostile.answers["pdisk GET"] = (200, {}, _chunked(2 * 1024 * 1024))
    with pytest.raises(ProtocolError, match="more than %d bytes" % small_limit) as caught:
        hdriver.list_volumes()
    assert_clear(caught.value, "list_volumes")
    assert "curl" in log.getvalue() and len(log.getvalue()) < small_limit


# -- redirects: never followed ------------------------------------------------------------------


def _redirect(status: int, target: str, body_bytes: int = 0, sent: list = None):
    def write(handler, _status, _headers):
        handler.send_response(status)
        handler.send_header("Location", target)
        handler.send_header("Content-Length", str(body_bytes))
        handler.end_headers()
        chunk = b"x" * 65536
        written = 0
        try:
            while written < body_bytes:
                handler.wfile.write(chunk)
                written += len(chunk)
        finally:
            if sent is not None:
                sent.append(written)

    return write


@pytest.mark.parametrize("call, key", [("list_nodes", "one.vmpool.info"), ("list_volumes", "pdisk GET"),
                                       ("list_images", "marketplace")])
def test_a_redirect_to_another_host_is_refused_and_not_followed(hostile, hdriver, cloud, call, key):
    with Hostile(cloud) as elsewhere:
        hostile.answers[key] = (307, {}, _redirect(307, elsewhere.url + "/steal?token=secret"))
        with pytest.raises(RedirectRefusedError) as caught:
            getattr(hdriver, call)()
        assert elsewhere.seen == []  # the body (and the credentials) never went there
    error = caught.value
    assert_clear(error, key if key.startswith("one.") else call)
    assert (error.code, error.http_code) == (307, 307)
    assert error.target == elsewhere.url + "/steal" and "secret" not in str(error)
    assert "redirects are not followed" in str(error) and elsewhere.url in str(error)


def test_a_redirect_from_https_down_to_http_is_refused(hostile, hdriver, cloud):
    with Hostile(cloud, tls=False) as plain:
        hostile.answers["one.vm.allocate"] = (302, {}, _redirect(302, plain.url + "/one-proxy/pswd/xmlrpc"))
        with pytest.raises(RedirectRefusedError, match="HTTP 302"):
            hdriver.create_node(name="n", size="t1.micro", image="http://example.invalid/image.img")
        assert plain.seen == []


def test_a_redirect_with_a_huge_body_is_not_read(hostile, hdriver):
    sent = []
    hostile.answers["pdisk GET"] = (307, {}, _redirect(307, hostile.url + "/pdisk/pswd/disks/", 300 * 2**20, sent))
    with pytest.raises(RedirectRefusedError):
        hdriver.list_volumes()
    deadline = time.monotonic() + 10
    while not sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent and sent[0] < 32 * 2**20  # the client hung up; it did not take 300 MiB


def test_a_redirect_loop_is_one_request_and_an_error(hostile, hdriver):
    hostile.answers["marketplace"] = (302, {}, _redirect(302, hostile.url + "/marketplace/metadata"))
    with pytest.raises(RedirectRefusedError):
        hdriver.list_images()
    assert [key for key, *_ in hostile.seen] == ["marketplace"]


def test_plain_http_with_credentials_warns_once_per_location(cloud, tmp_path):
    with Hostile(cloud, tls=False) as plain:
        plain.rpc("one.vmpool.info", [True, "<VM_POOL></VM_POOL>", 0])
        path = tmp_path / "plain.cfg"
        path.write_text("[default]\nselected_section = a\n[a]\nendpoint = %s/one-proxy/xmlrpc\n"
                        "username = u\npassword = hunter2-secret\n[b]\nendpoint = %s/one-proxy/xmlrpc\n"
                        "username = u\npassword = hunter2-secret\n"
                        % (plain.url, plain.url))
        path.chmod(0o600)
        with pytest.warns(UserWarning) as caught:
            driver = get_driver("stratuslab")("default", stratuslab_user_config=str(path))
            driver.list_nodes()
            driver.list_nodes()
    messages = sorted(str(w.message) for w in caught if "plain HTTP" in str(w.message))
    assert len(messages) == 2 and messages[0].startswith("a: ") and messages[1].startswith("b: ")
    assert "credentials" in messages[0] and not any("hunter2" in m for m in messages)
