"""ONE 3.2 XML-RPC of the local cloud over real HTTPS (spec §2): methods, error codes,
wrong-state actions, pool filters, the VM document, leases, life cycle, restarts and
concurrency."""

from __future__ import annotations

import base64
import os
import ssl
import threading
import time
import xml.etree.ElementTree as ET
import xmlrpc.client
from urllib.parse import quote

import pytest

from stratuslab_lc_plugin.emulator import LocalCloud
from stratuslab_lc_plugin.emulator.lifecycle import (ACTIVE, BOOT, CANCEL, DONE, EPILOG,
                                                     FAILED, HOLD, PENDING, PROLOG,
                                                     PROLOG_RESUME, RUNNING, SHUTDOWN,
                                                     STOPPED, SUSPENDED)

XSD = "/work/shared/fixtures/real/opennebula-3.2/vm.xsd"
IMAGE = "BN1EEkPiBx87_uLj2-sdybSI-Xb"   # ttylinux, in the seeded catalogue
ALICE_PASSWORD = "p%40ss:w%rd é"

TEMPLATE = """CPU = 1
VCPU = 1
MEMORY = 1536
RANK = "- RUNNING_VMS"
{name}
DISK = [
source   = "https://127.0.0.1/marketplace/metadata/{image}",
target   = "hda",
save     = no,
readonly = "no",
driver = "raw"
]
DISK = [
type     = swap,
size     = 1536,
target   = "hdb",
readonly = "no"
]
{nic}
GRAPHICS = [
port = "-1",
type = "vnc"
]
CONTEXT = [
public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey user@host
",
target = "hdd"
]
"""


def template(name: str = "", nic: str = 'NIC = [ network_uname=oneadmin,network = "public" ]',
             image: str = IMAGE) -> str:
    return TEMPLATE.format(name='NAME = "%s"' % name if name else "", nic=nic, image=image)


class One:
    """XML-RPC to the local cloud as the 14.06 client does it (credentials in the URL,
    percent-encoded; Python's transport turns them into a Basic header)."""

    def __init__(self, cloud: LocalCloud, user: str, password: str, route: str = "pswd",
                 cert=None) -> None:
        context = ssl.create_default_context(cafile=cloud.ca_path)
        if cert:
            context.load_cert_chain(*cert)
        host = cloud.url.split("://", 1)[1]
        if route == "pswd":
            url = "https://%s:%s@%s/one-proxy/pswd/xmlrpc" % (quote(user, safe=""),
                                                            quote(password, safe=""), host)
        else:
            url = "https://%s/one-proxy/cert/xmlrpc" % host
        self.proxy = xmlrpc.client.ServerProxy(url, context=context)
        self.session = "%s:%s" % (user, password)

    def allocate(self, text: str):
        return self.proxy.one.vm.allocate(self.session, text)

    def info(self, vm_id: int):
        return self.proxy.one.vm.info(self.session, vm_id)

    def pool(self, filter_flag: int = -3, start: int = -1, end: int = -1, state: int = -1):
        return self.proxy.one.vmpool.info(self.session, filter_flag, start, end, state)

    def action(self, name: str, vm_id: int):
        return self.proxy.one.vm.action(self.session, name, vm_id)

    def new_vm(self, **kwargs) -> int:
        ok, vm_id, code = self.allocate(template(**kwargs))
        assert ok and code == 0, vm_id
        return vm_id

    def doc(self, vm_id: int) -> ET.Element:
        ok, xml, code = self.info(vm_id)
        assert ok and code == 0, xml
        return ET.fromstring(xml)

    def state(self, vm_id: int):
        doc = self.doc(vm_id)
        return int(doc.findtext("STATE")), int(doc.findtext("LCM_STATE"))

    def wait(self, vm_id: int, state: int, lcm: int = 0, timeout: float = 10.0) -> ET.Element:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.doc(vm_id)
            now = (int(doc.findtext("STATE")), int(doc.findtext("LCM_STATE")))
            if now == (state, lcm):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError("VM %d is %r, not %r" % (vm_id, now, (state, lcm)))
            time.sleep(0.01)

    def pool_ids(self, *args):
        ok, xml, code = self.pool(*args)
        assert ok, xml
        return [int(vm.findtext("ID")) for vm in ET.fromstring(xml)]


class FakeGuests:
    """Records the GuestHooks calls; the SSH port it hands out is configurable."""

    def __init__(self, port=2222) -> None:
        self.port = port
        self.calls = []
        self.lock = threading.Lock()

    def vm_running(self, vm_id, ip, public_key, image_id):
        with self.lock:
            self.calls.append(("running", vm_id, ip, public_key, image_id))
        return self.port

    def vm_stopped(self, vm_id):
        with self.lock:
            self.calls.append(("stopped", vm_id))


USERS = {"alice": ALICE_PASSWORD, "bob": "bob-pw", "oneadmin": "admin-pw",
         "jane doe@x.org": "jane-pw"}


@pytest.fixture(scope="module")
def fast():
    """Instant life cycle, fake guests on port 2222."""
    with LocalCloud(users=USERS, delays=0, guests=FakeGuests()) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def slow():
    """VMs stay PENDING (the scheduler never picks them up during a test)."""
    with LocalCloud(users=USERS, delays=3600, guests=False) as cloud:
        yield cloud


@pytest.fixture
def alice(fast):
    return One(fast, "alice", ALICE_PASSWORD)


@pytest.fixture
def bob(fast):
    return One(fast, "bob", "bob-pw")


@pytest.fixture
def admin(fast):
    return One(fast, "oneadmin", "admin-pw")


# ---------------------------------------------------------------------------------------
# one.vm.allocate and the VM document
# ---------------------------------------------------------------------------------------

def test_allocate_answers_a_triple_with_the_new_id(alice):
    ok, first, code = alice.allocate(template())
    assert (ok, code) == (True, 0) and isinstance(first, int)
    ok, second, code = alice.allocate(template())
    assert second == first + 1


def test_new_vm_document_follows_one_3_2(slow):
    alice = One(slow, "alice", ALICE_PASSWORD)
    vm_id = alice.new_vm()
    ok, xml, code = alice.info(vm_id)
    assert xml.startswith("<VM><ID>%d</ID><UID>1</UID><GID>1</GID><UNAME>alice</UNAME>"
                          "<GNAME>users</GNAME><NAME>one-%d</NAME><PERMISSIONS><OWNER_U>1"
                          "</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A><GROUP_U>0"
                          "</GROUP_U><GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0"
                          "</OTHER_U><OTHER_M>0</OTHER_M><OTHER_A>0</OTHER_A></PERMISSIONS>"
                          "<LAST_POLL>0</LAST_POLL><STATE>1</STATE><LCM_STATE>0</LCM_STATE>"
                          % (vm_id, vm_id))
    assert "<DEPLOY_ID></DEPLOY_ID><MEMORY>0</MEMORY><CPU>0</CPU><NET_TX>0</NET_TX>" \
           "<NET_RX>0</NET_RX><TEMPLATE>" in xml
    assert xml.endswith("</TEMPLATE><HISTORY_RECORDS/></VM>")
    assert "\n<" not in xml   # ONE emits no whitespace between elements
    doc = ET.fromstring(xml)
    tmpl = doc.find("TEMPLATE")
    names = [child.tag for child in tmpl]
    assert names == sorted(names)
    assert names == ["CONTEXT", "CPU", "DISK", "DISK", "GRAPHICS", "MEMORY", "NAME", "NIC",
                     "RANK", "VCPU", "VMID"]
    assert "<CPU><![CDATA[1]]></CPU>" in xml and "<VMID><![CDATA[%d]]></VMID>" % vm_id in xml
    assert "<NAME><![CDATA[one-%d]]></NAME>" % vm_id in xml
    disks = tmpl.findall("DISK")
    assert [d.findtext("DISK_ID") for d in disks] == ["0", "1"]
    assert [child.tag for child in disks[0]] == ["DISK_ID", "DRIVER", "READONLY", "SAVE",
                                                 "SOURCE", "TARGET"]
    assert disks[1].findtext("TYPE") == "swap" and disks[1].findtext("SIZE") == "1536"
    nic = tmpl.find("NIC")
    assert [child.tag for child in nic] == ["BRIDGE", "IP", "MAC", "NETWORK", "NETWORK_ID",
                                            "NETWORK_UNAME", "VLAN"]
    ip = nic.findtext("IP")
    assert ip.startswith("127.1.") and nic.findtext("NETWORK") == "public"
    assert nic.findtext("MAC") == "02:00:" + ":".join("%02x" % int(o) for o in ip.split("."))
    assert (nic.findtext("NETWORK_ID"), nic.findtext("VLAN")) == ("0", "NO")
    context = tmpl.find("CONTEXT")
    assert context.findtext("PUBLIC_KEY") == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey user@host\n"
    assert context.findtext("TARGET") == "hdd"
    assert tmpl.find("GRAPHICS").findtext("PORT") == "-1"   # given: kept


def test_document_matches_the_vm_xsd_sequence(fast, alice):
    """Element order of every child against share/doc/xsd/vm.xsd of ONE 3.2."""
    xs = "{http://www.w3.org/2001/XMLSchema}"
    schema = ET.parse(XSD).getroot()
    vm_seq = schema.find("%selement/%scomplexType/%ssequence" % (xs, xs, xs))
    expected = [e.get("name") for e in vm_seq.findall(xs + "element")]
    perms = [e.get("name") for e in vm_seq.find(
        "%selement[@name='PERMISSIONS']/%scomplexType/%ssequence" % (xs, xs, xs))]
    history = [e.get("name") for e in vm_seq.find(
        "%selement[@name='HISTORY_RECORDS']//%selement[@name='HISTORY']/%scomplexType/%ssequence"
        % (xs, xs, xs, xs))]
    integers = {e.get("name") for e in schema.iter(xs + "element") if e.get("type") == "xs:integer"}
    vm_id = alice.new_vm(name="xsd")
    doc = alice.wait(vm_id, ACTIVE, RUNNING)
    assert [child.tag for child in doc] == expected
    assert [child.tag for child in doc.find("PERMISSIONS")] == perms
    records = doc.find("HISTORY_RECORDS").findall("HISTORY")
    assert len(records) == 1 and [child.tag for child in records[0]] == history
    for element in doc.iter():
        if element.tag in integers and not list(element):
            int(element.text)
    assert records[0].findtext("HOSTNAME")


def test_defaults_added_by_one(alice):
    text = template(nic='NIC = [ network_uname=oneadmin,network = "local" ]').replace(
        'port = "-1",\n', "").replace('target = "hdd"', 'x = "y"').replace(
        'target   = "hdb",\n', "")
    vm_id = alice.allocate(text)[1]
    tmpl = alice.doc(vm_id).find("TEMPLATE")
    assert tmpl.find("GRAPHICS").findtext("PORT") == str(5900 + vm_id)
    assert tmpl.find("CONTEXT").findtext("TARGET") == "hdb"
    assert tmpl.findall("DISK")[1].findtext("TARGET") == "hdd"   # swap without target
    nic = tmpl.find("NIC")
    assert nic.findtext("NETWORK") == "local" and nic.findtext("IP").startswith("127.2.")
    assert nic.findtext("NETWORK_ID") == "1"


def test_name_limit_and_parse_errors(alice):
    assert alice.allocate(template(name="n" * 128))[0] is True
    next_id = alice.new_vm()
    # 3.2 writes the message after the VM id still in its buffer
    assert alice.allocate(template(name="n" * 129)) == [
        False, "[VirtualMachineAllocate] Error allocating a new virtual machine. "
               "%dNAME is too long; max length is 128 chars." % (next_id + 1), 0x2000]
    assert alice.allocate('CPU = 1\nDISK = [ source = "a" target = "b" ]\n') == [
        False, "[VirtualMachineAllocate] Error allocating a new virtual machine. Parse error: "
               "syntax error, unexpected VARIABLE, expecting COMMA or CBRACKET at line 2, "
               "columns 31:37", 0x2000]
    ok, message, code = alice.allocate(template() + "CONTEXT = [ a = b ]\n")
    assert (ok, code) == (False, 0x2000) and message.endswith(
        "Only one CONTEXT attribute can be defined.")


def context_of(alice, context: str, **template_args):
    """Allocate with this CONTEXT; the expanded CONTEXT, or the failure triple."""
    text = template(**template_args).replace(
        'CONTEXT = [\npublic_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey user@host\n",\n'
        'target = "hdd"\n]', "CONTEXT = [ %s ]" % context)
    ok, vm_id, code = alice.allocate(text)
    if not ok:
        return [ok, vm_id, code]
    doc = alice.doc(vm_id)
    return {e.tag: e.text for e in doc.find("TEMPLATE/CONTEXT")}, doc


def test_context_variables_of_3_2(alice):
    context, doc = context_of(alice, 'UID = "$UID", BOTH = "$NAME$VMID", DOT = "$NAME.", '
                                     'ADDR = "$NETWORK[NETWORK_ADDRESS, NETWORK=\\"public\\"]", '
                                     'BYID = "$NETWORK[BRIDGE, NETWORK_ID=\\"0\\"]", '
                                     'USER = "<$USER[SSH_KEY]>", '
                                     'SWAP = "$DISK[SIZE, TYPE=\\"swap\\"]", CPU = "$CPU"', name="ctx")
    vm_id = doc.findtext("ID")
    assert context == {"UID": "1", "BOTH": "ctx" + vm_id, "DOT": "ctx.", "ADDR": "127.1.0.0",
                       "BYID": "br0", "USER": "<>", "SWAP": "1536", "CPU": "1",
                       "TARGET": "hdb"}


def test_template_variable_is_the_vm_document_without_its_context(alice):
    context, doc = context_of(alice, 'DOC = "$TEMPLATE"', name="doc")
    inner = ET.fromstring(base64.b64decode(context["DOC"]))
    assert inner.tag == "VM" and inner.findtext("ID") == doc.findtext("ID")
    assert inner.findtext("NAME") == "doc" and inner.findtext("STATE") == "0"
    assert inner.find("TEMPLATE/CONTEXT") is None
    assert inner.findtext("TEMPLATE/NIC/IP") == doc.findtext("TEMPLATE/NIC/IP")


# After a variable, "," "=" "]" are tokens of the variable syntax, not text.
@pytest.mark.parametrize("value", ['"$NAME, more"', '"[$NAME]"', '"costs 5$"', '"$ alone"',
                                   '"$[X]"'])
def test_a_dollar_the_grammar_rejects_fails_the_allocation_without_a_reason(alice, value):
    assert context_of(alice, "BAD = %s" % value) == [
        False, "[VirtualMachineAllocate] Error allocating a new virtual machine.", 0x2000]


def test_requirements_are_expanded_too(alice):
    text = template(name="req") + 'REQUIREMENTS = "HOSTNAME = \\"$NAME\\""\n'
    vm_id = alice.allocate(text)[1]
    assert alice.doc(vm_id).findtext("TEMPLATE/REQUIREMENTS") == 'HOSTNAME = "req"'


def test_context_variables_are_expanded(alice):
    text = template(name="vars").replace('target = "hdd"', 'ip = "$NIC[IP]", vm = "$NAME",\n'
                                                           'net = "$NIC[MAC, NETWORK=\\"public\\"]"')
    vm_id = alice.allocate(text)[1]
    tmpl = alice.doc(vm_id).find("TEMPLATE")
    context, nic = tmpl.find("CONTEXT"), tmpl.find("NIC")
    assert context.findtext("IP") == nic.findtext("IP")
    assert context.findtext("VM") == "vars"


NO_NETWORK = [False, "[VirtualMachineAllocate] Error allocating a new virtual machine. "
                     "Could not get virtual network for VM.", 0x2000]


@pytest.mark.parametrize("nic", [
    'NIC = [ network = "public" ]',                              # alice owns no network
    'NIC = [ network_uname=oneadmin, network = "nope" ]',
    'NIC = [ network_uname=nobody, network = "public" ]',
    'NIC = [ network_uid=x, network = "public" ]',
    'NIC = [ network_id = 9 ]',
    'NIC = [ network_uname=oneadmin, network = "public", ip = "127.2.0.9" ]',  # not in its range
    'NIC = [ network_uname=oneadmin, network = "public", ip = "not-an-ip" ]',
])
def test_every_nic_failure_has_one_text_in_3_2(alice, nic):
    assert alice.allocate(template(nic=nic)) == NO_NETWORK


def test_nic_vlan_id_is_restricted_for_users_but_not_for_oneadmin(alice, admin):
    nic = 'NIC = [ network_uname=oneadmin, network = "public", vlan_id = "7" ]'
    assert alice.allocate(template(nic=nic, name="n" * 200)) == [   # checked first
        False, "[VirtualMachineAllocate] Error allocating a new virtual machine. VM Template "
               "includes a restricted attribute NIC/VLAN_ID.", 0x2000]
    vm_id = admin.new_vm(nic=nic)
    assert admin.doc(vm_id).findtext("TEMPLATE/NIC/VLAN_ID") == "7"


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n"])
def test_an_empty_template_is_a_vm_named_after_its_id(alice, text):
    ok, vm_id, code = alice.allocate(text)
    assert (ok, code) == (True, 0)
    doc = alice.doc(vm_id)
    assert doc.findtext("NAME") == "one-%d" % vm_id
    assert [(e.tag, e.text) for e in doc.find("TEMPLATE")] == [
        ("NAME", "one-%d" % vm_id), ("VMID", str(vm_id))]


def test_an_xml_template_is_a_syntax_error_in_3_2(alice):
    assert alice.allocate("<TEMPLATE><CPU>1</CPU></TEMPLATE>") == [
        False, "[VirtualMachineAllocate] Error allocating a new virtual machine. Parse error: "
               "syntax error, unexpected VARIABLE, expecting EQUAL or EQUAL_EMPTY at line 1, "
               "columns 12:15", 0x2000]


def test_names_that_are_not_xml_names_get_a_one_prefix(alice):
    vm_id = alice.allocate("CPU = 1\n2X = a\nXMLISH = b\nxml = c\n")[1]
    names = [e.tag for e in alice.doc(vm_id).find("TEMPLATE")]
    assert names == sorted(["CPU", "ONE_2X", "ONE_XMLISH", "XML", "NAME", "VMID"])


def test_disk_ids_count_every_disk_attribute(alice):
    vm_id = alice.allocate('DISK = "a single value"\nDISK = [ source = "x", target = "hda" ]\n')[1]
    disks = alice.doc(vm_id).findall("TEMPLATE/DISK")
    assert [d.findtext("DISK_ID") for d in disks] == [None, "1"]


def test_uname_is_url_encoded_by_the_proxy(fast):
    jane = One(fast, "jane doe@x.org", "jane-pw")
    vm_id = jane.new_vm()
    doc = jane.doc(vm_id)
    assert doc.findtext("UNAME") == "jane+doe%40x.org"      # java.net.URLEncoder
    assert vm_id in jane.pool_ids()


def test_network_rules(alice):
    by_uid = alice.new_vm(nic='NIC = [ network_uid=0, network = "local" ]')
    assert alice.doc(by_uid).find("TEMPLATE/NIC").findtext("NETWORK") == "local"
    by_id = alice.new_vm(nic='NIC = [ network_id = 2 ]')
    assert alice.doc(by_id).find("TEMPLATE/NIC").findtext("NETWORK") == "private"


def test_each_vm_gets_its_own_address_and_released_leases_come_back(alice):
    ips = []
    for _ in range(5):
        vm_id = alice.new_vm(nic='NIC = [ network_uname=oneadmin,network = "private" ]')
        ips.append((vm_id, alice.doc(vm_id).findtext("TEMPLATE/NIC/IP")))
    assert len({ip for _, ip in ips}) == 5
    vm_id, ip = ips[0]
    taken = alice.allocate(template(
        nic='NIC = [ network_uname=oneadmin,network = "private", ip = "%s" ]' % ip))
    assert taken == NO_NETWORK
    assert alice.action("finalize", vm_id) == [True, vm_id, 0]
    again = alice.new_vm(nic='NIC = [ network_uname=oneadmin,network = "private", ip = "%s" ]' % ip)
    assert alice.doc(again).findtext("TEMPLATE/NIC/IP") == ip


def test_session_string_is_ignored_the_http_identity_decides(fast):
    alice = One(fast, "alice", ALICE_PASSWORD)
    alice.session = "bob:whatever"
    vm_id = alice.new_vm()
    assert alice.doc(vm_id).findtext("UNAME") == "alice"


# ---------------------------------------------------------------------------------------
# one.vm.info / one.vm.action errors
# ---------------------------------------------------------------------------------------

def test_info_errors(alice, bob):
    assert alice.info(999999) == [False, "[VirtualMachineInfo] Error getting virtual machine "
                                         "[999999].", 0x0400]
    vm_id = alice.new_vm()
    assert bob.info(vm_id) == [False, "[VirtualMachineInfo] User [2] : Not authorized to "
                                      "perform USE VM [%d]." % vm_id, 0x0200]
    assert bob.action("finalize", vm_id) == [
        False, "[VirtualMachineAction] User [2] : Not authorized to perform MANAGE VM [%d]."
        % vm_id, 0x0200]
    assert bob.action("finalize", 999999) == [
        False, "[VirtualMachineAction] Error getting virtual machine [999999].", 0x0400]


def test_id_minus_one_asks_for_the_pool_in_3_2(alice, admin):
    assert admin.info(-1) == [False, "[VirtualMachineInfo] Error getting virtual machine Pool.",
                              0x0400]
    assert alice.info(-1) == [False, "[VirtualMachineInfo] User [1] : Not authorized to perform "
                                     "USE VM.", 0x0200]
    assert alice.info(-7) == [False, "[VirtualMachineInfo] User [1] : Not authorized to perform "
                                     "USE VM.", 0x0200]
    assert admin.info(-7) == [False, "[VirtualMachineInfo] Error getting virtual machine [-7].",
                              0x0400]
    for who in (alice, admin):
        assert who.action("finalize", -1) == [
            False, "[VirtualMachineAction] Error getting virtual machine Pool.", 0x0400]


def test_authentication_comes_before_the_parameters(fast):
    stranger = One(fast, "mallory", "", route="cert", cert=fast.client_cert("mallory"))
    refused = [False, "[VirtualMachineInfo] User couldn't be authenticated, aborting call.", 0x0100]
    assert stranger.proxy.one.vm.info(stranger.session) == refused   # not "Not enough parameters"
    assert stranger.proxy.one.vm.info(stranger.session, "not an int") == refused


def test_oneadmin_may_see_and_manage_every_vm(alice, admin):
    vm_id = alice.new_vm()
    assert admin.doc(vm_id).findtext("UNAME") == "alice"
    assert vm_id in admin.pool_ids(-2)
    assert admin.action("finalize", vm_id) == [True, vm_id, 0]


UNDEFINED_ACTION = [False, "[VirtualMachineAction] Internal error. Action result not defined",
                    0x2000]


def test_an_unknown_action_has_no_result_in_3_2(alice, admin):
    vm_id = alice.new_vm()
    assert alice.action("explode", vm_id) == UNDEFINED_ACTION
    assert alice.action("explode", 99999) == [   # vm_authorization comes first
        False, "[VirtualMachineAction] Error getting virtual machine [99999].", 0x0400]
    assert admin.action("explode", 99999) == UNDEFINED_ACTION  # an admin skips it


WRONG = [False, "[VirtualMachineAction] Wrong state to perform action", 0x0800]


def test_actions_on_a_pending_vm(slow):
    alice = One(slow, "alice", ALICE_PASSWORD)
    vm_id = alice.new_vm()
    for action in ("shutdown", "stop", "cancel", "suspend", "reboot", "resume", "restart",
                   "release"):
        assert alice.action(action, vm_id) == WRONG, action
    assert alice.action("resubmit", vm_id) == [True, vm_id, 0]   # PENDING: nothing to do
    assert alice.action("hold", vm_id) == [True, vm_id, 0]
    assert alice.state(vm_id) == (HOLD, 0)
    assert alice.action("hold", vm_id) == WRONG
    assert alice.action("release", vm_id) == [True, vm_id, 0]
    assert alice.state(vm_id) == (PENDING, 0)
    assert alice.action("finalize", vm_id) == [True, vm_id, 0]
    assert alice.state(vm_id) == (DONE, 0)
    assert alice.action("finalize", vm_id) == [True, vm_id, 0]   # DONE: no-op success
    assert alice.action("resubmit", vm_id) == WRONG
    assert alice.action("hold", vm_id) == WRONG


def test_actions_on_a_running_vm(alice):
    vm_id = alice.new_vm()
    alice.wait(vm_id, ACTIVE, RUNNING)
    for action in ("hold", "release", "resume", "restart"):
        assert alice.action(action, vm_id) == WRONG, action
    assert alice.action("reboot", vm_id) == [True, vm_id, 0]
    assert alice.state(vm_id) == (ACTIVE, RUNNING)


def test_restart_only_from_boot():
    with LocalCloud(users=USERS, delays={"default": 0, "boot": 3600}, guests=False) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        vm_id = alice.new_vm()
        doc = alice.wait(vm_id, ACTIVE, BOOT)
        assert doc.findtext("DEPLOY_ID") == ""  # set when the deployment succeeds
        assert alice.action("shutdown", vm_id) == WRONG
        assert alice.action("restart", vm_id) == [True, vm_id, 0]
        assert alice.state(vm_id) == (ACTIVE, BOOT)
        assert alice.action("resubmit", vm_id) == [True, vm_id, 0]
        deadline = time.monotonic() + 10
        while len(alice.doc(vm_id).findall("HISTORY_RECORDS/HISTORY")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        doc = alice.wait(vm_id, ACTIVE, BOOT)      # redeployed through PENDING
        first = doc.find("HISTORY_RECORDS/HISTORY")
        assert first.findtext("REASON") == "3" and int(first.findtext("ETIME")) > 0


# ---------------------------------------------------------------------------------------
# life cycle
# ---------------------------------------------------------------------------------------

def test_normal_path_is_observable_step_by_step():
    delays = {"pending": 0.2, "prolog": 0.2, "boot": 0.2, "shutdown": 0.2, "epilog": 0.2}
    with LocalCloud(users=USERS, delays=delays, guests=False) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        vm_id = alice.new_vm()
        seen = []
        deadline = time.monotonic() + 10
        while (not seen or seen[-1] != (ACTIVE, RUNNING)) and time.monotonic() < deadline:
            state = alice.state(vm_id)
            if not seen or seen[-1] != state:
                seen.append(state)
            time.sleep(0.01)
        assert seen == [(PENDING, 0), (ACTIVE, PROLOG), (ACTIVE, BOOT), (ACTIVE, RUNNING)]
        assert alice.action("shutdown", vm_id) == [True, vm_id, 0]
        assert alice.state(vm_id) == (ACTIVE, SHUTDOWN)
        alice.wait(vm_id, ACTIVE, EPILOG)
        doc = alice.wait(vm_id, DONE, 0)
        assert int(doc.findtext("ETIME")) > 0
        assert vm_id not in alice.pool_ids(-3, -1, -1, -1)    # DONE hidden by default
        assert vm_id in alice.pool_ids(-3, -1, -1, -2)


def test_running_vm_has_history_and_monitoring(fast, alice):
    vm_id = alice.new_vm()
    doc = alice.wait(vm_id, ACTIVE, RUNNING)
    assert doc.findtext("DEPLOY_ID") == "one-%d" % vm_id
    assert int(doc.findtext("MEMORY")) == 1536 * 1024 and int(doc.findtext("LAST_POLL")) > 0
    history = doc.find("HISTORY_RECORDS/HISTORY")
    assert history.findtext("SEQ") == "0" and history.findtext("HOSTNAME")
    assert history.findtext("TMMAD") == "tm_stratuslab"


def test_stop_and_resume_go_through_prolog_resume(alice):
    vm_id = alice.new_vm()
    alice.wait(vm_id, ACTIVE, RUNNING)
    assert alice.action("stop", vm_id) == [True, vm_id, 0]
    alice.wait(vm_id, STOPPED, 0)
    assert alice.action("resume", vm_id) == [True, vm_id, 0]
    doc = alice.wait(vm_id, ACTIVE, RUNNING)
    records = doc.findall("HISTORY_RECORDS/HISTORY")
    assert [r.findtext("SEQ") for r in records] == ["0", "1"]
    assert records[0].findtext("REASON") == "2"      # STOP_RESUME
    # vmpool.info carries only the last record
    ok, xml, _ = alice.pool(-3, vm_id, vm_id, -1)
    pooled = ET.fromstring(xml).find("VM")
    assert [r.findtext("SEQ") for r in pooled.findall("HISTORY_RECORDS/HISTORY")] == ["1"]


def test_prolog_resume_and_cancel_are_visible(tmp_path):
    state_dir = str(tmp_path / "cloud")
    with LocalCloud(state_dir=state_dir, users=USERS, delays=0, guests=False) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        stopped, cancelled = alice.new_vm(), alice.new_vm()
        alice.wait(stopped, ACTIVE, RUNNING)
        alice.wait(cancelled, ACTIVE, RUNNING)
        alice.action("stop", stopped)
        alice.wait(stopped, STOPPED, 0)
    slow_steps = {"default": 0, "prolog": 3600, "cancel": 3600}
    with LocalCloud(state_dir=state_dir, users=USERS, delays=slow_steps, guests=False) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        assert alice.action("resume", stopped) == [True, stopped, 0]
        alice.wait(stopped, ACTIVE, PROLOG_RESUME)
        assert alice.action("cancel", cancelled) == [True, cancelled, 0]
        assert alice.state(cancelled) == (ACTIVE, CANCEL)
        fresh = alice.new_vm()
        alice.wait(fresh, ACTIVE, PROLOG)


def test_suspend_resume_cancel_and_resubmit(alice):
    vm_id = alice.new_vm()
    alice.wait(vm_id, ACTIVE, RUNNING)
    assert alice.action("suspend", vm_id) == [True, vm_id, 0]
    alice.wait(vm_id, SUSPENDED, 0)
    assert alice.action("resubmit", vm_id) == WRONG
    assert alice.action("resume", vm_id) == [True, vm_id, 0]
    alice.wait(vm_id, ACTIVE, RUNNING)
    assert alice.action("resubmit", vm_id) == [True, vm_id, 0]
    alice.wait(vm_id, ACTIVE, RUNNING)
    assert alice.action("cancel", vm_id) == [True, vm_id, 0]
    doc = alice.wait(vm_id, DONE, 0)
    assert doc.findall("HISTORY_RECORDS/HISTORY")[-1].findtext("REASON") == "4"  # CANCEL


def test_shutdown_keeps_reason_none_and_deploy_id_comes_with_running(alice):
    vm_id = alice.new_vm()
    doc = alice.wait(vm_id, ACTIVE, RUNNING)
    assert doc.findtext("DEPLOY_ID") == "one-%d" % vm_id
    assert alice.action("shutdown", vm_id) == [True, vm_id, 0]
    doc = alice.wait(vm_id, DONE, 0)
    assert doc.findtext("HISTORY_RECORDS/HISTORY/REASON") == "0"


def test_unknown_marketplace_image_fails_in_prolog_and_keeps_its_lease(alice):
    vm_id = alice.new_vm(image="A" * 27)
    doc = alice.wait(vm_id, FAILED, 0)
    error = doc.find("TEMPLATE/ERROR")   # PoolObjectSQL::set_template_error_message
    assert [e.tag for e in error] == ["MESSAGE", "TIMESTAMP"]
    assert error.findtext("MESSAGE") == ("Error excuting image transfer script: image %s not "
                                         "found in the Marketplace" % ("A" * 27))
    time.strptime(error.findtext("TIMESTAMP"), "%a %b %d %H:%M:%S %Y")  # ctime()
    assert doc.find("TEMPLATE/ERROR_MESSAGE") is None
    assert vm_id in alice.pool_ids(-3, -1, -1, FAILED)
    assert doc.findtext("HISTORY_RECORDS/HISTORY/REASON") == "1"   # ERROR
    ip = doc.findtext("TEMPLATE/NIC/IP")      # FAILED keeps the lease (failed_action)...
    taken = alice.allocate(template(
        nic='NIC = [ network_uname=oneadmin,network = "public", ip = "%s" ]' % ip))
    assert taken == NO_NETWORK
    assert alice.action("resubmit", vm_id) == [True, vm_id, 0]
    assert alice.doc(vm_id).findtext("TEMPLATE/NIC/IP") == ip   # ...and runs on it again
    doc = alice.wait(vm_id, FAILED, 0)
    assert len(doc.findall("TEMPLATE/ERROR")) == 2     # 3.2 adds one per failure
    assert alice.action("finalize", vm_id) == [True, vm_id, 0]  # only finalize frees it
    again = alice.new_vm(nic='NIC = [ network_uname=oneadmin,network = "public", ip = "%s" ]' % ip)
    assert alice.doc(again).findtext("TEMPLATE/NIC/IP") == ip


def test_guest_hooks_and_ssh_port(fast, alice):
    guests = fast.guests
    vm_id = alice.new_vm()
    doc = alice.wait(vm_id, ACTIVE, RUNNING)
    assert doc.findtext("TEMPLATE/SSH_PORT") == "2222"
    names = [c.tag for c in doc.find("TEMPLATE")]
    assert names == sorted(names)
    ip = doc.findtext("TEMPLATE/NIC/IP")
    assert ("running", vm_id, ip, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey user@host",
            IMAGE) in guests.calls
    assert alice.action("shutdown", vm_id) == [True, vm_id, 0]
    doc = alice.wait(vm_id, DONE, 0)
    assert doc.find("TEMPLATE/SSH_PORT") is None
    deadline = time.monotonic() + 5
    while ("stopped", vm_id) not in guests.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ("stopped", vm_id) in guests.calls


def test_port_22_is_not_published():
    with LocalCloud(users=USERS, delays=0, guests=FakeGuests(port=22)) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        vm_id = alice.new_vm()
        assert alice.wait(vm_id, ACTIVE, RUNNING).find("TEMPLATE/SSH_PORT") is None


# ---------------------------------------------------------------------------------------
# one.vmpool.info
# ---------------------------------------------------------------------------------------

def test_pool_filters_and_ranges():
    with LocalCloud(users=USERS, delays=3600, guests=False) as cloud:
        alice, bob, admin = (One(cloud, "alice", ALICE_PASSWORD), One(cloud, "bob", "bob-pw"),
                             One(cloud, "oneadmin", "admin-pw"))
        assert alice.pool() == [True, "<VM_POOL></VM_POOL>", 0]
        a = [alice.new_vm() for _ in range(3)]
        b = [bob.new_vm() for _ in range(2)]
        root = admin.new_vm()
        assert alice.pool_ids(-3) == a
        assert alice.pool_ids(-2) == a            # default permissions: owner only
        assert alice.pool_ids(-1) == a
        assert alice.pool_ids(1) == a and alice.pool_ids(2) == []
        assert admin.pool_ids(-2) == a + b + [root]
        assert admin.pool_ids(2) == b
        assert admin.pool_ids(-3) == [root]
        assert alice.pool_ids(-3, a[1], -1) == a[1:]
        assert alice.pool_ids(-3, a[1], a[1]) == [a[1]]
        assert alice.pool_ids(-3, -1, a[0]) == a     # no start: no range at all
        assert alice.action("finalize", a[0]) == [True, a[0], 0]
        assert alice.pool_ids(-3, -1, -1, -1) == a[1:]
        assert alice.pool_ids(-3, -1, -1, -2) == a
        assert alice.pool_ids(-3, -1, -1, DONE) == [a[0]]
        assert alice.pool_ids(-3, -1, -1, PENDING) == a[1:]
        assert alice.pool(-4) == [False, "[VirtualMachinePoolInfo] Incorrect filter_flag", 0x1000]
        for state in (-3, 8):
            assert alice.pool(-3, -1, -1, state) == [
                False, "[VirtualMachinePoolInfo] Incorrect filter_flag, state", 0x1000]
        ok, xml, _ = alice.pool(-3)
        assert xml.startswith("<VM_POOL><VM><ID>%d</ID>" % a[1]) and xml.endswith("</VM></VM_POOL>")


# ---------------------------------------------------------------------------------------
# protocol errors, authentication
# ---------------------------------------------------------------------------------------

def test_xmlrpc_faults(alice):
    with pytest.raises(xmlrpc.client.Fault) as fault:
        alice.proxy.one.vm.migrate(alice.session, 1, 2)
    assert fault.value.faultCode == -506
    assert fault.value.faultString == "Method 'one.vm.migrate' not defined"  # xmlrpc-c
    with pytest.raises(xmlrpc.client.Fault) as fault:
        alice.proxy.one.vm.info(alice.session, "1")
    assert (fault.value.faultCode, fault.value.faultString) == (
        -501, "Parameter that is supposed to be integer is not")
    with pytest.raises(xmlrpc.client.Fault) as fault:
        alice.proxy.one.vm.action(alice.session, 7, 1)
    assert (fault.value.faultCode, fault.value.faultString) == (
        -501, "Parameter that is supposed to be a string is not")
    with pytest.raises(xmlrpc.client.Fault) as fault:
        alice.proxy.one.vm.info()  # the proxy puts a session in, whatever the client sent
    assert (fault.value.faultCode, fault.value.faultString) == (-501, "Not enough parameters")
    with pytest.raises(xmlrpc.client.Fault) as fault:
        alice.proxy.one.vmpool.info(alice.session, -3)
    assert (fault.value.faultCode, fault.value.faultString) == (-501, "Not enough parameters")
    with pytest.raises(xmlrpc.client.Fault) as fault:
        alice.proxy.one.vm.allocate(alice.session, 42)
    assert fault.value.faultCode == -501


def _post(cloud, body: bytes, user="alice", password=ALICE_PASSWORD):
    import requests
    token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    return requests.post(cloud.url + "/one-proxy/pswd/xmlrpc", data=body, verify=cloud.ca_path,
                         headers={"Authorization": "Basic " + token, "Content-Type": "text/xml"},
                         timeout=10)


@pytest.mark.parametrize("body", [
    b"", b"garbage", b"<methodCall>", b"<?xml version='1.0'?><methodResponse><params>"
    b"<param><value><int>1</int></value></param></params></methodResponse>",
    b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]><methodCall><methodName>&a;</methodName></methodCall>",
    b"\xff\xfe<\x00",
])
def test_malformed_calls_get_a_fault(fast, body):
    response = _post(fast, body)
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/xml"
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(response.content)
    assert fault.value.faultCode == 0
    assert fault.value.faultString.startswith("Failed to parse XML-RPC request")


def test_utf8_answer_without_charset(fast):
    alice = One(fast, "alice", ALICE_PASSWORD)
    vm_id = alice.new_vm(name="café ☕")
    body = xmlrpc.client.dumps(("s", vm_id), "one.vm.info").encode("utf-8")
    response = _post(fast, body)
    assert response.headers["Content-Type"] == "text/xml"
    assert "&lt;NAME&gt;café ☕&lt;/NAME&gt;".encode("utf-8") in response.content


def test_get_on_the_xmlrpc_url(fast):
    import requests
    response = requests.get(fast.url + "/one-proxy/pswd/xmlrpc", verify=fast.ca_path,
                            auth=("bob", "bob-pw"), timeout=10)
    assert response.status_code == 405


def test_certificate_route(fast):
    alice = One(fast, "alice", "", route="cert", cert=fast.client_cert("alice"))
    vm_id = alice.new_vm()
    assert alice.doc(vm_id).findtext("UNAME") == "alice"
    stranger = One(fast, "mallory", "", route="cert", cert=fast.client_cert("mallory"))
    assert stranger.allocate(template()) == [
        False, "[VirtualMachineAllocate] User couldn't be authenticated, aborting call.", 0x0100]
    assert stranger.pool()[2] == 0x0100


# ---------------------------------------------------------------------------------------
# concurrency and restarts
# ---------------------------------------------------------------------------------------

def test_fifty_concurrent_clients_leave_a_consistent_state():
    users = {"user%02d" % i: "pw%02d" % i for i in range(50)}
    with LocalCloud(users=users, delays=0.01, guests=FakeGuests()) as cloud:
        results, errors = {}, []

        def client(name):
            try:
                one = One(cloud, name, users[name])
                ids = [one.new_vm() for _ in range(4)]
                for vm_id in ids[:2]:
                    one.wait(vm_id, ACTIVE, RUNNING)
                for vm_id in ids:
                    assert one.action("finalize", vm_id) == [True, vm_id, 0]
                ids.append(one.new_vm())
                results[name] = ids
            except Exception as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(name,)) for name in users]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[:3]
        all_ids = sorted(i for ids in results.values() for i in ids)
        assert all_ids == list(range(250))                  # nothing lost or duplicated
        admin_view = One(cloud, "user00", users["user00"])
        for name, ids in results.items():
            one = One(cloud, name, users[name])
            assert one.pool_ids(-3, -1, -1, -2) == ids      # each sees exactly its own VMs
            assert one.pool_ids(-3, -1, -1, DONE) == ids[:4]
        live_ips = []
        for name, ids in results.items():
            one = One(cloud, name, users[name])
            live_ips.append(one.doc(ids[-1]).findtext("TEMPLATE/NIC/IP"))
        assert len(set(live_ips)) == 50
        assert admin_view.pool_ids(-2) == results["user00"][-1:]


def test_restart_keeps_vms_and_resumes_transitions(tmp_path):
    state_dir = str(tmp_path / "cloud")
    with LocalCloud(state_dir=state_dir, users=USERS, delays=0, guests=False) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        running = alice.new_vm(name="keep")
        alice.wait(running, ACTIVE, RUNNING)
        done = alice.new_vm()
        alice.action("finalize", done)
        before = alice.doc(running)
    with LocalCloud(state_dir=state_dir, users=USERS, delays=3600, guests=False) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        assert ET.tostring(alice.doc(running)) == ET.tostring(before)
        assert alice.pool_ids(-3, -1, -1, -2) == [running, done]
        pending = alice.new_vm()
        assert pending == done + 1
        ips = {alice.doc(i).findtext("TEMPLATE/NIC/IP") for i in (running, pending)}
        assert len(ips) == 2
    users = dict(USERS, carol="c")      # a new user: existing ids do not move
    with LocalCloud(state_dir=state_dir, users=users, delays=0, guests=False) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        alice.wait(pending, ACTIVE, RUNNING)                # rescheduled after the restart
        carol = One(cloud, "carol", "c")
        assert carol.doc(carol.new_vm()).findtext("UID") == "4"
        assert alice.doc(running).findtext("UID") == "1"
    assert os.path.exists(os.path.join(state_dir, "cloud.db"))


def test_restart_restarts_guests_of_running_vms(tmp_path):
    state_dir = str(tmp_path / "cloud")
    with LocalCloud(state_dir=state_dir, users=USERS, delays=0, guests=FakeGuests(2222)) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        vm_id = alice.new_vm()
        alice.wait(vm_id, ACTIVE, RUNNING)
    guests = FakeGuests(2323)
    with LocalCloud(state_dir=state_dir, users=USERS, delays=0, guests=guests) as cloud:
        alice = One(cloud, "alice", ALICE_PASSWORD)
        deadline = time.monotonic() + 5
        while alice.doc(vm_id).findtext("TEMPLATE/SSH_PORT") != "2323":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert guests.calls[0][:2] == ("running", vm_id)


def test_finalize_releases_pdisk_mounts(fast, alice):
    import requests
    if fast.pdisk is None:
        pytest.skip("the pdisk service is not installed")
    vm_id = alice.new_vm()
    auth = ("alice", ALICE_PASSWORD)
    created = requests.post(fast.url + "/pdisk/pswd/disks/", data={"size": "1", "tag": "t",
                                                                   "visibility": "private"},
                            auth=auth, verify=fast.ca_path, timeout=10)
    assert created.status_code == 201
    disk = created.json()["uuid"]
    mounted = requests.post(fast.url + "/pdisk/pswd/disks/%s/mounts/" % disk,
                            data={"node": "localhost", "vm_id": str(vm_id)}, auth=auth,
                            verify=fast.ca_path, timeout=10)
    assert mounted.status_code == 200
    alice.action("finalize", vm_id)
    deleted = requests.delete(fast.url + "/pdisk/pswd/disks/%s/" % disk, auth=auth,
                              verify=fast.ca_path, timeout=10)
    assert deleted.status_code == 200, deleted.text


@pytest.mark.parametrize("disk", ['DISK = [ image = "ttylinux" ]', 'DISK = [ image_id = 3 ]'])
def test_a_repository_image_is_refused_with_the_3_2_text(alice, disk):
    assert alice.allocate("CPU = 1\n%s\n" % disk) == [
        False, "[VirtualMachineAllocate] Error allocating a new virtual machine. "
               "Could not get disk image for VM.", 0x2000]
