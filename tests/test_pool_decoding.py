"""The one-pass decoding of ``one.vmpool.info`` answers gives what the two-pass decoding gives.

``services.one._pool_element`` takes a shortcut for the plain success frame (the string
unescaped where it stands, one parse); every other answer goes the two-pass way (the
XML-RPC answer, then the document in its string). These tests feed both ways the same
answers, written as Python's xmlrpc, xmlrpc-c (behind ONE) and the one-proxy's Apache
XML-RPC write them, and check that the shortcut is taken where it can be and that the
VMs are the same, or that it steps aside. Over real sockets the same paths are covered
by test_hostile.py and by every list_nodes test against the local cloud.
"""

from __future__ import annotations

import xmlrpc.client
from xml.sax.saxutils import escape

import pytest
from defusedxml.common import DTDForbidden

from stratuslab_lc_plugin.services import one

VM = (
    "<VM><ID>{id}</ID><UID>5</UID><GID>1</GID><UNAME>alice</UNAME><GNAME>users</GNAME><NAME>{name}</NAME>"
    "<STATE>3</STATE><LCM_STATE>3</LCM_STATE><STIME>1404799000</STIME><ETIME>0</ETIME>"
    "<TEMPLATE><CONTEXT><LIBCLOUD_CLIENT_TOKEN><![CDATA[t-{id}]]></LIBCLOUD_CLIENT_TOKEN>"
    "<USER_DATA><![CDATA[{user_data}]]></USER_DATA></CONTEXT><CPU><![CDATA[1]]></CPU>"
    "<DISK><DISK_ID><![CDATA[0]]></DISK_ID><SOURCE><![CDATA[https://mp.example/metadata/{image}]]></SOURCE>"
    "<TARGET><![CDATA[hda]]></TARGET></DISK><MEMORY><![CDATA[512]]></MEMORY>"
    "<NIC><IP><![CDATA[10.0.0.{id}]]></IP><MAC><![CDATA[02:00:0a:00:00:0{id}]]></MAC>"
    "<NETWORK><![CDATA[public]]></NETWORK></NIC><VCPU><![CDATA[1]]></VCPU></TEMPLATE>"
    "<HISTORY_RECORDS><HISTORY><SEQ>0</SEQ><HOSTNAME>node-{id}</HOSTNAME></HISTORY></HISTORY_RECORDS></VM>"
)
IMAGE = "BN1EEkPiBx87_uLj2-sdybSI-Xb"


def vm(vm_id: int, name: str = "node", user_data: str = "#cloud-config") -> str:
    return VM.format(id=vm_id, name=name, user_data=user_data, image=IMAGE)


def pool(*vms: str) -> str:
    return "<VM_POOL>%s</VM_POOL>" % "".join(vms)


# The frames, each with the pool document as its string.

def python_frame(document: str) -> bytes:
    return xmlrpc.client.dumps(([True, document, 0],), methodresponse=True).encode("utf-8")


def xmlrpc_c_frame(document: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n<methodResponse>\r\n<params>\r\n<param><value><array><data>\r\n'
        "<value><boolean>1</boolean></value>\r\n<value><string>%s</string></value>\r\n<value><i4>0</i4></value>\r\n"
        "</data></array></value></param>\r\n</params>\r\n</methodResponse>\r\n" % escape(document)
    ).encode("utf-8")


def apache_frame(document: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><methodResponse><params><param><value><array><data>'
        "<value><boolean>1</boolean></value><value>%s</value><value><i4>0</i4></value>"
        "</data></array></value></param></params></methodResponse>" % escape(document, {'"': "&quot;", "'": "&apos;"})
    ).encode("utf-8")


FRAMES = [python_frame, xmlrpc_c_frame, apache_frame]


def one_pass(body: bytes):
    element = one._pool_element(body)
    return None if element is None else one._vms_of_pool(element)


def two_pass(body: bytes):
    (answer,) = one._loads(body)
    assert answer[0] is True
    return one.parse_vm_pool(answer[1])


DOCUMENTS = {
    "plain": pool(vm(1), vm(2), vm(3)),
    "empty": "<VM_POOL></VM_POOL>",
    "empty element": "<VM_POOL/>",
    "escaped escapes": pool(vm(1, name="a &lt; b &amp; c &amp;lt; &amp;amp; &quot;d&quot; 'e' &gt;")),
    "markup in cdata": pool(vm(1, user_data="</VM><VM><ID>99</ID></VM> <!DOCTYPE x> &lol; <![CDATA[")),
    "line ends": pool(vm(1, user_data="one\r\ntwo\rthree\n")),
    "non-ascii": pool(vm(1, name="n\u00f6de-\u00e9t\u00e9-\u4e2d\u6587-\U0001f600")),
    "character reference in the document": pool(vm(1, name="&#60;tag&#62;")),
    "whitespace and comments around the root": " \n<!-- made by ONE -->\n" + pool(vm(1)) + "\n<!-- end -->\n",
    "a template attribute named VM": pool(vm(1).replace("<CPU>", "<VM><![CDATA[x]]></VM><CPU>", 1)),
}


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("document", list(DOCUMENTS.values()), ids=list(DOCUMENTS))
def test_one_pass_gives_the_vms_two_passes_give(frame, document):
    body = frame(document)
    fast = one_pass(body)
    assert fast is not None, "the plain frame must take the one-pass way"
    assert fast == two_pass(body)


def test_the_records_hold_what_the_document_says():
    (first,) = one_pass(apache_frame(pool(vm(7, name="a &lt; b", user_data="x]]]]><![CDATA[>y"))))
    assert (first.id, first.name, first.owner, first.state, first.lcm_state, first.host) == (7, "a < b", "alice", 3, 3, "node-7")
    assert first.context == {"LIBCLOUD_CLIENT_TOKEN": "t-7", "USER_DATA": "x]]>y"}
    assert [(n.network, n.ip, n.mac) for n in first.nics] == [("public", "10.0.0.7", "02:00:0a:00:00:07")]
    assert [(d.disk_id, d.source, d.target) for d in first.disks] == [(0, "https://mp.example/metadata/" + IMAGE, "hda")]
    assert (first.cpu, first.vcpu, first.memory) == (1.0, 1, 512)


def _replace_once(body: bytes, old: bytes, new: bytes) -> bytes:
    assert old in body
    return body.replace(old, new, 1)


# Answers that are not the plain frame, or whose string is not plain text: the one-pass
# way steps aside (None) and the two-pass way decides.
STEP_ASIDE = {
    "failure answer": lambda: xmlrpc.client.dumps(([False, "[VirtualMachinePoolInfo] no", 512],), methodresponse=True).encode(),
    "fault": lambda: xmlrpc.client.dumps(xmlrpc.client.Fault(1, "boom"), methodresponse=True).encode(),
    # read at face value, the reference would turn the <CPU> element into text
    "character reference in the string": lambda: xmlrpc_c_frame(pool(vm(1))).replace(b"&lt;CPU&gt;", b"&#60;CPU&gt;")
    .replace(b"&lt;/CPU&gt;", b"&#60;/CPU&gt;"),
    "cdata in the string": lambda: _replace_once(
        python_frame(pool(vm(1))), b"<string>&lt;VM_POOL&gt;", b"<string><![CDATA[<VM_POOL>]]>"),
    "comment in the frame": lambda: _replace_once(python_frame(pool(vm(1))), b"<params>", b"<params><!-- c -->"),
    "typed head, untyped tail": lambda: _replace_once(python_frame(pool(vm(1))), b"</string>", b""),
    "a third value that is not 0": lambda: _replace_once(python_frame(pool(vm(1))), b"<int>0</int>", b"<int>1</int>"),
    # ElementTree would name the VM's children {urn:x}ID..., the two-pass parser ID...
    "namespace declaration": lambda: python_frame(pool(vm(1).replace("<VM>", '<VM xmlns="urn:x">'))),
    "xml: name": lambda: python_frame(pool(vm(1)).replace("<CPU>", "<xml:a>1</xml:a><CPU>", 1)),
    "xml declaration in the string": lambda: python_frame('<?xml version="1.0"?>' + pool(vm(1))),
    "dtd in the string": lambda: python_frame('<!DOCTYPE VM_POOL [<!ENTITY a "b">]>' + pool(vm(1, name="&a;"))),
    "two roots": lambda: python_frame(pool(vm(1)) + pool(vm(2))),
    "text after the root": lambda: python_frame(pool(vm(1)) + "junk"),
    "not a pool": lambda: python_frame(vm(1)),
    "not xml in the string": lambda: python_frame("<VM_POOL><VM>"),
}


@pytest.mark.parametrize("make", list(STEP_ASIDE.values()), ids=list(STEP_ASIDE))
def test_other_answers_go_the_two_pass_way(make):
    assert one._pool_element(make()) is None


def test_what_the_two_pass_way_then_does():
    # The cases above that are well-formed pools decode the same; the others are refused.
    assert two_pass(STEP_ASIDE["character reference in the string"]()) == one_pass(xmlrpc_c_frame(pool(vm(1))))
    assert two_pass(STEP_ASIDE["xml declaration in the string"]()) == one_pass(python_frame(pool(vm(1))))
    with pytest.raises(DTDForbidden):
        two_pass(STEP_ASIDE["dtd in the string"]())
    with pytest.raises(ValueError):
        two_pass(STEP_ASIDE["not a pool"]())
