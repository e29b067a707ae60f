"""Tests of the emulated Marketplace and its seeded catalogue (spec §3).

Most cases call the handler directly with Request values (fast); the last ones go
through the local cloud's HTTPS front.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timedelta, timezone

import defusedxml.ElementTree as ET
import pytest
import requests

from stratuslab_lc_plugin.emulator.catalogue import (
    Catalogue, CatalogueEntry, format_time, image_id_from_sha1, new_entry, sha1_from_image_id)
from stratuslab_lc_plugin.emulator.marketplace import MarketplaceHandler, XML_HEADER
from stratuslab_lc_plugin.emulator.web import Request

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "marketplace")  # see its README
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
DC = "{http://purl.org/dc/terms/}"
SLT = "{http://mp.stratuslab.eu/slterms#}"
SLR = "{http://mp.stratuslab.eu/slreq#}"

UBUNTU = "GJ5vp8gIxhZ1w1MQF16R6MIcNoq"
TTYLINUX = "BN1EEkPiBx87_uLj2-sdybSI-Xb"
OLD_TTYLINUX = "GOaxJFdoEXvqAm9ArJgnZ0_ky6F"
FIXTURE_ID = "BEE8-MMAw-Lk_IgsEExAy3d9R8h"
JANE = "jane.tester@example.org"
TEAM = "appliances@example.org"
NO_MATCH = XML_HEADER + "<error>no metadata matching query found</error>"
NOT_FOUND = XML_HEADER + "<error>metadata entry not found.</error>"
XML = "application/xml"

# Elements the 14.06 client requires in each entry (spec §3.4), plus what the server
# needs (endorsement e-mail and time).
REQUIRED = [DC + "identifier", SLR + "bytes", DC + "type", DC + "created", DC + "valid",
            DC + "description", DC + "compression", SLT + "os", SLT + "os-version",
            SLT + "os-arch", SLT + "version",
            SLR + "endorsement/" + DC + "created",
            SLR + "endorsement/" + SLR + "endorser/" + SLR + "email"]


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.seeded()


@pytest.fixture(scope="module")
def market(catalogue):
    return MarketplaceHandler(catalogue)


def get(handler, path, accept=None, method="GET", **query):
    headers = {"Accept": accept} if accept else {}
    request = Request(method=method, path=path, query={k: [v] for k, v in query.items()},
                      headers=headers, body=b"", user=None, form={})
    return handler.handle(request)


def entries_of(response):
    """(identifier, endorser, endorsement time) of each listed entry, checking the format."""
    assert response.status == 200, response.body
    assert response.content_type.startswith("application/xml")
    text = response.body.decode("utf-8")
    assert text.startswith(XML_HEADER + "<metadata>")
    assert text.count("<?xml") == 1  # each entry's own declaration is removed (§3.3)
    root = ET.fromstring(response.body)
    assert root.tag == "metadata"
    found = []
    for rdf in root:
        assert rdf.tag == RDF + "RDF"
        description = rdf.find(RDF + "Description")
        found.append((description.findtext(DC + "identifier"),
                      description.findtext(f"{SLR}endorsement/{SLR}endorser/{SLR}email"),
                      description.findtext(f"{SLR}endorsement/{DC}created")))
    return found


def ids_of(response):
    return [image_id for image_id, _, _ in entries_of(response)]


# --- identifiers -------------------------------------------------------------------------

def test_image_id_encodes_sha1_as_the_spec_example():
    sha1 = "1104f3e30c030f8b93f220b04131032dddf51f21"
    assert image_id_from_sha1(sha1) == FIXTURE_ID
    assert image_id_from_sha1(sha1.upper()) == FIXTURE_ID
    assert sha1_from_image_id(FIXTURE_ID) == sha1
    for real in (UBUNTU, TTYLINUX, OLD_TTYLINUX):
        assert image_id_from_sha1(sha1_from_image_id(real)) == real


@pytest.mark.parametrize("name", ["valid.xml", "valid-two-locations.xml",
                                  "valid-indate-deprecated-signature.xml"])
def test_real_fixture_identifiers_match_their_sha1(name):
    with open(os.path.join(FIXTURES, name), "rb") as handle:
        description = ET.fromstring(handle.read()).find(RDF + "Description")
    sha1 = next(c.findtext(SLR + "value") for c in description.iter(SLR + "checksum")
                if c.findtext(SLR + "algorithm") == "SHA-1")
    assert image_id_from_sha1(sha1) == description.findtext(DC + "identifier")


@pytest.mark.parametrize("bad", ["", "xyz", "g" * 40, "1104f3e3"])
def test_image_id_rejects_non_sha1(bad):
    with pytest.raises(ValueError):
        image_id_from_sha1(bad)


def test_sha1_from_image_id_rejects_bad_ids():
    for bad in ("short", "!" * 27, "Z" + "A" * 26):  # 'Z' first: more than 160 bits
        with pytest.raises(ValueError):
            sha1_from_image_id(bad)


def test_entry_refuses_identifier_inconsistent_with_checksum(catalogue):
    good = catalogue.entry(UBUNTU)
    fields = {name: getattr(good, name) for name in CatalogueEntry.__dataclass_fields__}
    fields["image_id"] = TTYLINUX
    with pytest.raises(ValueError, match="does not match"):
        CatalogueEntry(**fields)
    fields["checksums"] = {"MD5": "0" * 32}
    with pytest.raises(ValueError, match="no SHA-1"):
        CatalogueEntry(**fields)


def test_new_entry_computes_all_checksums_from_content():
    now = datetime.now(timezone.utc)
    entry = new_entry(content=b"image bytes", title="t", description="", os="Ubuntu",
                      os_version="1", arch="x86_64", version="1", format="raw",
                      disks_bus="ide", endorser_email="me@example.org",
                      created=now, valid=now + timedelta(days=1))
    assert entry.bytes == len(b"image bytes")
    assert set(entry.checksums) == {"MD5", "SHA-1", "SHA-256", "SHA-512"}
    assert entry.checksums["SHA-1"] == hashlib.sha1(b"image bytes").hexdigest()
    assert entry.checksums["MD5"] == hashlib.md5(b"image bytes").hexdigest()
    assert entry.image_id == image_id_from_sha1(entry.checksums["SHA-1"])
    assert entry.created.microsecond == 0 and entry.created.tzinfo is not None


# --- the seeded catalogue --------------------------------------------------------------

def test_seeded_catalogue_is_varied(catalogue):
    entries = catalogue.entries()
    assert len(entries) >= 8
    assert {e.status() for e in entries} == {"valid", "expired", "deprecated"}
    assert {"ttylinux", "Ubuntu", "CentOS", "Debian", "Fedora", "SL"} <= {e.os for e in entries}
    assert {"raw", "qcow2"} <= {e.format for e in entries}
    assert {"ide", "virtio"} <= {e.disks_bus for e in entries}
    assert any(len(e.inbound_ports) > 1 for e in entries)
    # A VM needs a location; only the deprecated copy of the real sample lacks one, as it does.
    assert all(e.locations for e in entries if e.status() != "deprecated")
    assert {e.has_sftp for e in entries if e.os == "ttylinux"} == {False}
    assert all(e.has_sftp for e in entries if e.os != "ttylinux")
    # Validity is relative to now: valid entries expire in the future, expired ones passed.
    now = datetime.now(timezone.utc)
    for entry in entries:
        if entry.status() == "valid":
            assert entry.valid > now + timedelta(days=30)
        elif entry.status() == "expired":
            assert entry.valid < now
    # Several versions of one image by the same endorser.
    versions = [e for e in entries if e.image_id == UBUNTU and e.endorser_email == TEAM]
    assert len(versions) == 2


def test_entry_returns_newest_valid_endorsement(catalogue):
    assert catalogue.entry(UBUNTU).version == "1.3"
    assert catalogue.entry(TTYLINUX).has_sftp is False
    assert catalogue.entry(TTYLINUX).format == "raw"
    assert catalogue.entry(FIXTURE_ID).created == datetime(2014, 3, 8, 14, 28, 15,
                                                           tzinfo=timezone.utc)
    assert catalogue.entry(OLD_TTYLINUX) is None  # expired
    assert catalogue.entry("A" * 27) is None
    centos = [e for e in catalogue.latest() if e.os == "CentOS"]
    assert len({e.endorser_email for e in centos}) == 2
    assert catalogue.entry(centos[0].image_id).endorser_email == "images@lal.example.org"


def test_newest_endorsement_deprecating_an_image_hides_it():
    catalogue = Catalogue.seeded()
    current = catalogue.entry(UBUNTU)
    fields = {name: getattr(current, name) for name in CatalogueEntry.__dataclass_fields__}
    fields.update(created=current.created + timedelta(days=1), deprecated="broken")
    catalogue.add(CatalogueEntry(**fields))
    assert catalogue.entry(UBUNTU) is None
    market = MarketplaceHandler(catalogue)
    assert get(market, f"/metadata/{UBUNTU}").status == 404
    assert ids_of(get(market, f"/metadata/{UBUNTU}", status="deprecated")) == [UBUNTU]
    # An endorsement date in the filter reaches the older, still valid versions.
    older = get(market, f"/metadata/{UBUNTU}/{format_time(current.created)}")
    assert entries_of(older) == [current.key]


def test_rdf_documents_have_what_the_client_requires(catalogue):
    for entry in catalogue.entries():
        text = entry.to_rdf_xml()
        assert not text.startswith("<?xml")
        root = ET.fromstring(text)
        assert root.tag == RDF + "RDF"
        assert root.get("{http://www.w3.org/XML/1998/namespace}base") == "http://mp.stratuslab.eu/"
        description = root.find(RDF + "Description")
        assert description.get(RDF + "about") == "#" + entry.image_id
        for path in REQUIRED:
            assert description.find(path) is not None, (entry.title, path)
        locations = [loc.text for loc in description.findall(SLT + "location")]
        assert locations == list(entry.locations)
        if entry.status() == "valid":
            assert locations
        assert description.findtext(DC + "identifier") == entry.image_id
        assert description.findtext(DC + "format") == entry.format
        assert description.findtext(SLT + "disks-bus") == entry.disks_bus
        assert [int(p.text) for p in description.findall(SLT + "inbound-port")] == \
            list(entry.inbound_ports)
        assert (description.find(SLT + "deprecated") is not None) == (entry.deprecated is not None)


def test_rdf_escapes_text():
    now = datetime.now(timezone.utc)
    entry = new_entry(title="a & b <c>", description='"quoted" & <tagged>', os="Debian",
                      os_version="7", arch="x86_64", version="1", format="raw",
                      disks_bus="virtio", endorser_email="me@example.org", created=now,
                      valid=now + timedelta(days=1), locations=("http://h/x?a=1&b=2",))
    description = ET.fromstring(entry.to_rdf_xml()).find(RDF + "Description")
    assert description.findtext(DC + "title") == "a & b <c>"
    assert description.findtext(SLT + "location") == "http://h/x?a=1&b=2"


# --- list resource -----------------------------------------------------------------------

def test_default_list_is_newest_valid_entry_per_image_and_endorser(market, catalogue):
    listed = entries_of(get(market, "/metadata"))
    expected = {e.key for e in catalogue.latest() if e.status() == "valid"}
    assert set(listed) == expected and len(listed) == len(expected)
    assert (UBUNTU, TEAM, "2014-02-20T08:30:00Z") in listed
    assert (UBUNTU, TEAM, "2013-05-02T10:11:12Z") not in listed
    assert (FIXTURE_ID, JANE, "2014-03-08T14:28:15Z") in listed
    assert OLD_TTYLINUX not in {i for i, _, _ in listed}
    assert get(market, "/metadata/").body == get(market, "/metadata").body


def test_list_document_wraps_stored_documents(market, catalogue):
    body = get(market, f"/metadata/{TTYLINUX}").body.decode()
    entry = catalogue.entry(TTYLINUX).to_rdf_xml()
    assert body == XML_HEADER + "<metadata>" + entry + "</metadata>"


def test_identifier_filter(market):
    assert ids_of(get(market, f"/metadata/{UBUNTU}")) == [UBUNTU]
    assert get(market, f"/metadata/{OLD_TTYLINUX}", accept=XML).body.decode() == NO_MATCH
    assert get(market, f"/metadata/{OLD_TTYLINUX}").status == 404
    assert ids_of(get(market, f"/metadata/{OLD_TTYLINUX}", status="expired")) == [OLD_TTYLINUX]
    assert get(market, "/metadata/unknown-image").status == 404


def test_one_entry_per_endorser(market, catalogue):
    centos = next(e.image_id for e in catalogue.entries() if e.os == "CentOS")
    endorsers = sorted(email for _, email, _ in entries_of(get(market, f"/metadata/{centos}")))
    assert endorsers == [TEAM, "images@lal.example.org"]
    only = entries_of(get(market, f"/metadata/{centos}/images@lal.example.org"))
    assert [email for _, email, _ in only] == ["images@lal.example.org"]


def test_email_and_date_arguments_in_any_order(market, catalogue):
    by_email = set(entries_of(get(market, f"/metadata/{JANE}")))
    assert by_email == {(FIXTURE_ID, JANE, "2014-03-08T14:28:15Z")}
    assert entries_of(get(market, f"/metadata/{JANE}/{FIXTURE_ID}")) == list(by_email)
    assert entries_of(get(market, f"/metadata/{FIXTURE_ID}/{JANE}")) == list(by_email)
    # Percent-encoded e-mail, as some HTTP clients send it.
    assert entries_of(get(market, f"/metadata/{JANE.replace('@', '%40')}")) == list(by_email)
    team = {e.key for e in catalogue.latest() if e.endorser_email == TEAM and e.status() == "valid"}
    assert set(entries_of(get(market, f"/metadata/{TEAM}"))) == team
    assert get(market, "/metadata/nobody@example.org").status == 404


def test_date_filter_lists_every_version(market):
    old = "2013-05-02T10:11:12Z"
    assert entries_of(get(market, f"/metadata/{UBUNTU}/{old}")) == [(UBUNTU, TEAM, old)]
    assert entries_of(get(market, f"/metadata/{old}")) == [(UBUNTU, TEAM, old)]
    deprecated = "2014-03-08T14:10:17Z"
    assert get(market, f"/metadata/{FIXTURE_ID}/{deprecated}").status == 404
    assert entries_of(get(market, f"/metadata/{FIXTURE_ID}/{deprecated}", status="deprecated")) \
        == [(FIXTURE_ID, JANE, deprecated)]
    assert get(market, "/metadata/2001-01-01T00:00:00Z").status == 404


def test_query_parameters_filter_like_path_arguments(market):
    assert ids_of(get(market, "/metadata", identifier=UBUNTU)) == [UBUNTU]
    assert entries_of(get(market, "/metadata", email=JANE, identifier=FIXTURE_ID)) == \
        [(FIXTURE_ID, JANE, "2014-03-08T14:28:15Z")]
    assert entries_of(get(market, "/metadata", created="2013-05-02T10:11:12Z")) == \
        [(UBUNTU, TEAM, "2013-05-02T10:11:12Z")]
    # The server classifies values, not parameter names.
    assert ids_of(get(market, "/metadata", email=UBUNTU)) == [UBUNTU]
    assert get(market, "/metadata", identifier="nothing-here").status == 404
    # Path and query filters combine.
    assert get(market, f"/metadata/{UBUNTU}", email=JANE).status == 404


def test_status_filter(market, catalogue):
    expired = set(ids_of(get(market, "/metadata", status="expired")))
    assert expired == {e.image_id for e in catalogue.latest() if e.status() == "expired"}
    assert OLD_TTYLINUX in expired and len(expired) >= 2
    deprecated = ids_of(get(market, "/metadata", status="deprecated"))
    # The fixture image's deprecated endorsement is not its newest one.
    assert FIXTURE_ID not in deprecated and len(deprecated) == 1
    everything = entries_of(get(market, "/metadata", status="any"))
    assert set(everything) == {e.key for e in catalogue.latest()}


def test_location_filter(market, catalogue):
    pdisk = set(ids_of(get(market, "/metadata", location="pdisk")))
    assert pdisk == {e.image_id for e in catalogue.latest() if e.status() == "valid"
                     and any(loc.startswith("pdisk") for loc in e.locations)}
    assert len(pdisk) == 2
    web = set(ids_of(get(market, "/metadata", location="web")))
    only_pdisk = {e.image_id for e in catalogue.latest()
                  if e.locations and all(loc.startswith("pdisk") for loc in e.locations)}
    assert only_pdisk and not web & only_pdisk
    assert pdisk - only_pdisk <= web
    assert set(ids_of(get(market, "/metadata", location="all"))) == \
        set(ids_of(get(market, "/metadata")))
    assert get(market, f"/metadata/{TTYLINUX}", location="pdisk").status == 404


def test_an_empty_catalogue_or_an_empty_status_is_a_404_too(market):
    # The server's query then yields one row of nulls, which it refuses (section 8).
    empty = MarketplaceHandler(Catalogue())
    for handler, path, query in ((empty, "/metadata", {}), (empty, "/metadata", {"status": "any"}),
                                 (empty, f"/metadata/{UBUNTU}", {}),
                                 (market, "/metadata", {"location": "nowhere-known",
                                                        "status": "bogus-and-deprecated"})):
        response = get(handler, path, accept=XML, **query)
        if handler is market:  # an unknown location is "all", an unknown status no filter
            assert response.status == 200
            continue
        assert (response.status, response.body.decode()) == (404, NO_MATCH)
    only_expired = MarketplaceHandler(Catalogue([e for e in Catalogue.seeded().entries()
                                                 if e.status() == "expired"]))
    assert get(only_expired, "/metadata", accept=XML).status == 404
    assert get(only_expired, "/metadata", accept=XML, status="expired").status == 200


# --- single entries ----------------------------------------------------------------------

def test_stored_document_by_full_address(market, catalogue):
    for entry in catalogue.entries():  # whatever the status
        response = get(market, "/metadata/%s/%s/%s/" % entry.key)
        assert response.status == 200
        assert response.content_type.startswith("application/rdf+xml")
        assert response.body.decode() == XML_HEADER + entry.to_rdf_xml()
        assert ET.fromstring(response.body).tag == RDF + "RDF"
    missing = get(market, f"/metadata/{UBUNTU}/{TEAM}/2001-01-01T00:00:00Z", accept=XML)
    assert (missing.status, missing.body.decode()) == (404, NOT_FOUND)


def test_tag_lookup_gives_newest_tagged_entry(market):
    response = get(market, f"/metadata/{TEAM}", tag="ubuntu-12.04")
    assert response.status == 200 and response.content_type.startswith("application/rdf+xml")
    description = ET.fromstring(response.body).find(RDF + "Description")
    assert description.findtext(DC + "identifier") == UBUNTU
    assert description.findtext(SLT + "version") == "1.3"
    assert get(market, f"/metadata/{TEAM}", tag="no-such-tag", accept=XML).body.decode() == NOT_FOUND
    assert get(market, f"/metadata/{JANE}", tag="ubuntu-12.04").status == 404
    by_path = get(market, f"/tag/{TEAM}/ubuntu-12.04/")
    assert (by_path.status, by_path.body) == (response.status, response.body)


# --- negotiation, errors, routing -----------------------------------------------------------

def test_json_list_is_a_datatables_object(market, catalogue):
    response = get(market, "/metadata", accept="application/json", sEcho="3")
    assert response.status == 200 and response.content_type.startswith("application/json")
    document = json.loads(response.body)
    assert set(document) == {"sEcho", "iTotalRecords", "iTotalDisplayRecords", "rMsg", "aaData"}
    valid = [e for e in catalogue.latest() if e.status() == "valid"]
    assert document["sEcho"] == 3 and document["rMsg"] == "no metadata matching query found"
    assert document["iTotalRecords"] == document["iTotalDisplayRecords"] == len(valid)
    rows = {row[7]: row for row in document["aaData"]}
    entry = catalogue.entry(UBUNTU)
    assert rows[UBUNTU] == ["", "Ubuntu", "12.04", "x86_64", TEAM, "machine",
                            "2014-02-20T08:30:00Z", UBUNTU, entry.locations[0],
                            entry.description, entry.title]
    filtered = json.loads(get(market, f"/metadata/{UBUNTU}", accept="application/json").body)
    assert filtered["iTotalRecords"] == len(valid) and filtered["iTotalDisplayRecords"] == 1
    assert json.loads(get(market, "/metadata", accept="application/json").body)["sEcho"] == 0


def test_a_json_list_that_matches_nothing_is_an_empty_table(market):
    for path in ("/metadata/nope", f"/metadata/{OLD_TTYLINUX}"):
        response = get(market, path, accept="application/json", sEcho="-2")
        assert response.status == 200
        assert json.loads(response.body) == {
            "sEcho": -2, "iTotalRecords": 0, "iTotalDisplayRecords": 0,
            "rMsg": "no metadata matching query found", "aaData": []}
    for echo in ("x", "1.5", "2147483648"):   # Integer.parseInt fails: an uncaught 500
        assert get(market, "/metadata", accept="application/json", sEcho=echo).status == 500


def test_json_errors(market):
    response = get(market, f"/metadata/{UBUNTU}/{TEAM}/2001-01-01T00:00:00Z",
                   accept="application/json")
    assert response.status == 404
    assert response.body.decode() == '{"404" : "metadata entry not found."}'


@pytest.mark.parametrize("accept, kind", [
    (None, "html"), ("*/*", "html"), ("text/html", "html"), ("application/xml", "xml"),
    ("text/xml", "xml"), ("application/rdf+xml", "xml"), ("application/json", "json"),
    ("application/xml;q=0.1, application/json", "xml"),       # the first entry, whatever q
    ("text/html, application/xml", "html"), ("application/json;charset=utf-8", "html"),
    ("application/json;q=0.5", "json"),
])
def test_errors_take_the_form_of_the_first_accepted_type(market, accept, kind):
    response = get(market, f"/metadata/{UBUNTU}/{TEAM}/2001-01-01T00:00:00Z", accept=accept)
    assert response.status == 404
    assert response.content_type.split(";")[0] == {
        "html": "text/html", "xml": "application/xml", "json": "application/json"}[kind]
    if kind == "html":
        page = response.body.decode()
        assert "<h1>Not Found</h1>" in page and "<td>metadata entry not found.</td>" in page


@pytest.mark.parametrize("accept, kind", [
    (None, "xml"), ("*/*", "xml"), ("application/xml", "xml"), ("text/xml", "xml"),
    ("text/html", "xml"), ("application/json", "json"),
    ("application/json;q=0.5, application/xml", "xml"),
    ("application/xml;q=0.2, application/json;q=0.9", "json"),
    ("application/json, */*;q=0.1", "json"), ("application/json;q=bogus, text/xml", "xml"),
])
def test_content_negotiation(market, accept, kind):
    response = get(market, "/metadata", accept=accept)
    assert response.content_type.startswith("application/" + kind)


def test_methods_and_unknown_paths(market):
    post = get(market, "/metadata", method="POST", accept=XML)
    assert post.status == 405 and post.headers["Allow"] == "GET, HEAD"
    assert post.body.decode().startswith(XML_HEADER + "<error>")
    head = get(market, f"/metadata/{UBUNTU}", method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert get(market, "/metadata/nope", method="HEAD").status == 404
    # Paths no route matches get the home page (the Router's default route).
    for path in ("/", "", "/metadatax", "/nothing/here", "/endorsers/x/y/z",
                 f"/metadata/{UBUNTU}/{TEAM}/2014-02-20T08:30:00Z/extra"):
        response = get(market, path, accept=XML)
        assert response.status == 200, path
        assert response.content_type.startswith("text/html")
        assert '<meta http-equiv="REFRESH" content="0;url=metadata">' in response.body.decode()
    assert get(market, "/nothing", method="POST").status == 405
    # '//' is '/' (DoubleSlashFilter); real routes the emulator does not serve are 404s.
    assert ids_of(get(market, f"/metadata//{UBUNTU}")) == [UBUNTU]
    for path in ("/endorsers", "/query", "/upload/", "/action/x", "/css/style.css"):
        assert get(market, path, accept=XML).status == 404, path


def test_case_insensitive_accept_header(market):
    request = Request("GET", "/metadata", {}, {"accept": "application/json"}, b"", None, {})
    assert market.handle(request).content_type.startswith("application/json")


# --- through the HTTPS front -----------------------------------------------------------

# ``cloud`` is the shared local cloud of tests/conftest.py (seeded catalogue).

def test_https_list_without_accept_header_is_xml(cloud):
    # The 14.06 driver sends no Accept header (requests would send */* unless removed).
    response = requests.get(cloud.url + "/marketplace/metadata", verify=cloud.ca_path,
                            headers={"Accept": None}, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    listed = {rdf.find(RDF + "Description").findtext(DC + "identifier") for rdf in root}
    assert {UBUNTU, TTYLINUX} <= listed and OLD_TTYLINUX not in listed
    assert listed == {e.image_id for e in cloud.catalogue.latest() if e.status() == "valid"}


def test_https_entry_filters_and_errors(cloud):
    base = cloud.url + "/marketplace/metadata"
    one = requests.get(f"{base}/{UBUNTU}", verify=cloud.ca_path, timeout=30,
                       headers={"Accept": "application/xml"})
    assert [r.find(RDF + "Description").findtext(SLT + "version")
            for r in ET.fromstring(one.content)] == ["1.3"]
    expired = requests.get(f"{base}/{OLD_TTYLINUX}", verify=cloud.ca_path, timeout=30)
    assert expired.status_code == 404 and "<td>no metadata matching query found</td>" in expired.text
    expired = requests.get(f"{base}/{OLD_TTYLINUX}", params={"status": "expired"},
                           verify=cloud.ca_path, timeout=30)
    assert expired.status_code == 200
    key = cloud.catalogue.entry(UBUNTU).key
    datum = requests.get(base + "/%s/%s/%s" % key, verify=cloud.ca_path, timeout=30)
    assert datum.status_code == 200
    assert datum.headers["Content-Type"].startswith("application/rdf+xml")
    assert re.match(r"<\?xml[^>]*\?><rdf:RDF", datum.text)
    as_json = requests.get(base, headers={"Accept": "application/json"},
                           verify=cloud.ca_path, timeout=30)
    assert as_json.json()["iTotalDisplayRecords"] == len(ET.fromstring(
        requests.get(base, verify=cloud.ca_path, timeout=30).content))
