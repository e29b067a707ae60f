"""The ONE 3.2 template parser of the local cloud (spec §2.8)."""

from __future__ import annotations

import pytest

from stratuslab_lc_plugin.emulator.template import TemplateError, parse

SCHEMA = "/work/shared/fixtures/real/client/schema.one"


def fill_schema(**overrides) -> str:
    """schema.one filled like the 14.06 client does for create_node."""
    values = dict(
        vm_cpu=1, vm_vcpu=1, vm_ram=1536, vm_requirements="", vm_name='NAME = "my-node"',
        os_options="", vm_image="https://mp.example/metadata/BN1EEkPiBx87_uLj2-sdybSI-Xb",
        vm_disks_prefix="hd", save_disk="no", disk_driver="raw", vm_swap=1536, extra_disk="",
        persistent_disk="", readonly_disk="",
        vm_nic='NIC = [ network_uname=oneadmin,network = "public" ]',
        graphics='GRAPHICS = [\nport = "-1",\ntype = "vnc"\n]', raw_data="",
        public_key="ssh-rsa AAAAB3Nza...== user@host\n", extra_context="", create_image="",
        inbound_ports='INBOUND_PORTS = "22,80"')
    values.update(overrides)
    with open(SCHEMA) as handle:
        return handle.read() % values


def test_the_client_template_parses_in_order_with_upper_case_names():
    attrs = parse(fill_schema())
    assert [name for name, _ in attrs] == [
        "CPU", "VCPU", "MEMORY", "RANK", "NAME", "DISK", "DISK", "NIC", "GRAPHICS",
        "CONTEXT", "INBOUND_PORTS"]
    values = dict(attrs[:5])
    assert values == {"CPU": "1", "VCPU": "1", "MEMORY": "1536", "RANK": "- RUNNING_VMS",
                      "NAME": "my-node"}
    assert attrs[5][1] == [("SOURCE", "https://mp.example/metadata/BN1EEkPiBx87_uLj2-sdybSI-Xb"),
                           ("TARGET", "hda"), ("SAVE", "no"), ("READONLY", "no"),
                           ("DRIVER", "raw")]
    assert attrs[7][1] == [("NETWORK_UNAME", "oneadmin"), ("NETWORK", "public")]
    # the public key keeps its trailing newline: quoted strings may span lines
    assert attrs[9][1] == [("PUBLIC_KEY", "ssh-rsa AAAAB3Nza...== user@host\n"),
                           ("TARGET", "hdd")]


def test_cloud_init_extra_context_lines():
    text = fill_schema(extra_context='CONTEXT_METHOD = "cloud-init",\n'
                                     'CLOUD_INIT_AUTHORIZED_KEYS = "c3NoLXJzYQ==",')
    context = dict(parse(text)[9][1])
    assert context["CONTEXT_METHOD"] == "cloud-init"
    assert context["CLOUD_INIT_AUTHORIZED_KEYS"] == "c3NoLXJzYQ=="


@pytest.mark.parametrize("text, expected", [
    ('A = ""', [("A", '""')]),                       # "" is a bare two-character value
    ('A = "x\\"y"', [("A", 'x"y')]),                 # escaped quote
    ('A = "abc"xyz', [("A", '"abc"xyz')]),           # longest match: bare token wins
    ("a_b = Value", [("A_B", "Value")]),             # names upper-cased, values kept
    ("A =\nB = 2", [("A", ""), ("B", "2")]),          # empty value at end of line
    ("A = 1 # comment\n# whole line\nB = 2\n", [("A", "1"), ("B", "2")]),
    ("A = [ x = 1\n,\n y = \"2\" \n]\n", [("A", [("X", "1"), ("Y", "2")])]),
    ("A = [ b = 1, B = 2 ]", [("A", [("B", "1")])]),  # repeated member: first wins
    ("A = 1\nA = 2", [("A", "1"), ("A", "2")]),       # repeated attributes are kept
    ("A = é", [("A", "é")]),
    ("A = 1\r\n", [("A", "1\r")]),                     # CR is not a blank for ONE
    ('A = "multi\nline"', [("A", "multi\nline")]),
])
def test_values(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text, message", [
    ("= 1", "syntax error, unexpected EQUAL, expecting $end at line 1, columns 1:3"),
    ("A", "syntax error, unexpected $end, expecting EQUAL or EQUAL_EMPTY at line 1, columns 1:2"),
    ("A = ", "syntax error, unexpected $end, expecting OBRACKET or STRING at line 1, columns 2:5"),
    ("A = [ ]", "syntax error, unexpected CBRACKET, expecting VARIABLE at line 1, columns 7:8"),
    ("A = [ b = ]", "syntax error, unexpected $end, expecting STRING at line 1, columns 11:12"),
    ("A = [ b = 1", "syntax error, unexpected $end, expecting COMMA or CBRACKET at line 1, "
                    "columns 11:12"),
    ("A-B = 1", "syntax error, unexpected VARIABLE, expecting EQUAL or EQUAL_EMPTY at line 1, "
                "columns 3:4"),
    ("A = 1 = 2", "syntax error, unexpected EQUAL, expecting $end at line 1, columns 6:9"),
    ("A = 1\nB = [ c = 1 d = 2 ]", "syntax error, unexpected VARIABLE, expecting COMMA or "
                                  "CBRACKET at line 2, columns 19:20"),
])
def test_errors_read_like_bison(text, message):
    with pytest.raises(TemplateError) as error:
        parse(text)
    assert str(error.value) == message


def test_comment_at_end_without_newline_is_not_a_comment():
    # flex's comment rule needs the newline: '#' is skipped and the words become tokens
    with pytest.raises(TemplateError) as error:
        parse("A = 1\n# trailing words")
    assert str(error.value) == ("syntax error, unexpected VARIABLE, expecting EQUAL or "
                                "EQUAL_EMPTY at line 2, columns 18:23")


def test_unmatched_characters_are_skipped_like_flex_does():
    assert parse("A = ,\nB") == [("A", "B")]


def test_xml_templates_are_a_syntax_error_in_3_2():
    with pytest.raises(TemplateError) as error:
        parse("<TEMPLATE><CPU>1</CPU></TEMPLATE>")
    assert str(error.value) == ("syntax error, unexpected VARIABLE, expecting EQUAL or "
                                "EQUAL_EMPTY at line 1, columns 12:15")


@pytest.mark.parametrize("text", ["", "  \n\t\n", "# only a comment\n", "# one\n# two\n\n"])
def test_empty_and_comment_only_templates_are_valid(text):
    assert parse(text) == []


@pytest.mark.parametrize("written, name", [
    ("cpu", "CPU"), ("1st", "ONE_1ST"), ("_x", "ONE__X"), ("XMLNS", "ONE_XMLNS"),
    ("XmlNs", "XMLNS"), ("xml", "XML"), ("X1", "X1"),
])
def test_names_that_are_not_xml_names_get_the_one_prefix(written, name):
    assert parse("%s = 1\nV = [ %s = 2 ]" % (written, written)) == [
        (name, "1"), ("V", [(written.upper(), "2")])]
