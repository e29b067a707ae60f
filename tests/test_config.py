"""Tests of the user configuration reader (spec §1): every rule and every error message."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import pytest

from stratuslab_lc_plugin.config import (
    BUILTIN_SIZES,
    LocationConfig,
    SizeSpec,
    UserConfig,
    default_config_path,
    load_user_config,
    normalise_compute_endpoint,
    normalise_marketplace_endpoint,
    normalise_pdisk_endpoint,
)
from stratuslab_lc_plugin.errors import ConfigurationError

REAL_REF = Path("/work/shared/fixtures/real/client/stratuslab-user.cfg.ref")
OUR_REF = Path(__file__).resolve().parent.parent / "stratuslab_lc_plugin" / "data" / "stratuslab-user.cfg.ref"
SECRET = "Zq%9s3cr%(t)s;x"

BASIC = """\
[default]
selected_section = alpha
username = alice
password = {secret}

[alpha]
name = Alpha cloud
country = FR
endpoint = https://alpha.example.org/one-proxy/xmlrpc

[beta]
endpoint = beta.example.org
""".format(secret=SECRET)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("STRATUSLAB_USER_CONFIG", raising=False)
    monkeypatch.delenv("STRATUSLAB_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path: Path, text: str, name: str = "user.cfg", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def load(text: str, **kwargs) -> UserConfig:
    return load_user_config(io.StringIO(text), **kwargs)


def error_of(text: str, **kwargs) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        load(text, **kwargs)
    assert SECRET not in str(info.value)
    return info.value


# -- sources -------------------------------------------------------------------------------


def test_load_from_path(tmp_path):
    path = write(tmp_path, BASIC)
    config = load_user_config(str(path))
    assert config.source == str(path)
    assert config.location().source == str(path)
    assert config.default_location == "alpha"
    assert load_user_config(path) == config  # os.PathLike too


def test_load_from_text_stream_is_named_stream():
    config = load(BASIC)
    assert config.source == "<stream>"
    assert config.location("beta").source == "<stream>"


def test_load_from_bytes_stream_and_named_stream():
    stream = io.BytesIO(BASIC.encode("utf-8"))
    stream.name = "site.cfg"
    config = load_user_config(stream)
    assert config.source == "site.cfg"
    assert config.location().username == "alice"


def test_load_from_open_file_uses_its_name(tmp_path):
    path = write(tmp_path, BASIC)
    with open(path) as handle:
        config = load_user_config(handle)
    assert config.source == str(path)


def test_none_uses_environment_variable(tmp_path, monkeypatch):
    path = write(tmp_path, BASIC, name="from-env.cfg")
    monkeypatch.setenv("STRATUSLAB_USER_CONFIG", str(path))
    assert default_config_path() == str(path)
    assert load_user_config().source == str(path)


def test_none_uses_home_file(tmp_path):
    home = tmp_path / "home" / ".stratuslab"
    home.mkdir(parents=True)
    path = write(home, BASIC, name="stratuslab-user.cfg")
    assert default_config_path() == str(path)
    assert load_user_config(None).source == str(path)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.cfg"
    with pytest.raises(ConfigurationError) as info:
        load_user_config(str(missing))
    assert str(info.value) == "configuration file %s does not exist" % missing
    assert info.value.path == str(missing)


def test_missing_default_file_names_it(tmp_path):
    with pytest.raises(ConfigurationError, match=r"stratuslab-user\.cfg does not exist"):
        load_user_config()


def test_unreadable_source_is_an_error(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read configuration file"):
        load_user_config(str(tmp_path))  # a directory


def test_bad_utf8_names_line():
    stream = io.BytesIO(b"[default]\nname = \xff\n")
    with pytest.raises(ConfigurationError) as info:
        load_user_config(stream)
    assert str(info.value) == "<stream>, line 2: not valid UTF-8 text"
    assert info.value.line == 2


def test_source_of_wrong_type():
    with pytest.raises(TypeError):
        load_user_config(42)


# -- parsing -------------------------------------------------------------------------------


def test_no_default_section():
    err = error_of("[alpha]\nendpoint = https://h/x\n")
    assert str(err) == "<stream>: no [default] section (it is mandatory, even if empty)"
    assert err.section == "default"


def test_empty_file_has_no_default_section(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ConfigurationError) as info:
        load_user_config(path)
    assert str(info.value) == "%s: no [default] section (it is mandatory, even if empty)" % path


def test_key_before_any_section_names_line_not_value():
    err = error_of("# comment\npassword = %s\n[default]\n" % SECRET)
    assert str(err) == (
        "<stream>, line 2: key outside any section; the file must start with a section header such as [default]"
    )
    assert err.line == 2


def test_unparsable_line_names_line_and_section():
    err = error_of("[default]\nusername = a\n\n[alpha]\nendpoint = https://h/x\n%s\n" % SECRET)
    assert str(err) == (
        "<stream>, line 6, section [alpha]: cannot parse this line, expected 'key = value' or '[section]'"
    )
    assert (err.line, err.section) == (6, "alpha")


def test_duplicate_section():
    err = error_of("[default]\n[alpha]\nname = a\n[alpha]\nname = b\n")
    assert str(err) == "<stream>, line 4: section [alpha] appears twice (merge the two)"
    assert (err.line, err.section) == (4, "alpha")


def test_duplicate_key_names_both_lines():
    err = error_of("[default]\n[alpha]\nEndpoint = https://h/x\nendpoint = https://h/y\n")
    assert str(err) == (
        "<stream>, line 4, section [alpha], key 'endpoint': key set twice in the same section (first at line 3)"
    )
    assert (err.line, err.section, err.key) == (4, "alpha", "endpoint")


def test_percent_in_password_is_literal():
    config = load("[default]\nusername = a\npassword = " + SECRET + "\npdisk_password = 100%%\n")
    location = config.location()
    assert location.password == SECRET
    assert location.pdisk_password == "100%%"


def test_quotes_stripped_once():
    config = load(
        "[default]\n[a]\nname = \"Cloud A\"\ncountry = 'FR'\nusername = \"'x'\"\n"
        "password = \"unbalanced\nx1 = \"\n",
        default_location="a",
    )
    location = config.location()
    assert location.name == "Cloud A"
    assert location.country == "FR"
    assert location.username == "'x'"
    assert location.password == '"unbalanced'
    assert location.options["x1"] == '"'


def test_option_names_lower_cased_sections_not():
    config = load("[default]\nSelected_Section = Alpha\n[Alpha]\nENDPOINT = https://h/x\n")
    assert config.default_location == "Alpha"
    assert config.location().endpoint == "https://h/x"


def test_colon_delimiter_comments_and_continuation_lines_keep_key_lines():
    text = (
        "[default]\n"  # 1
        "; a comment\n"  # 2
        "name: first\n"  # 3
        "  continued\n"  # 4
        "\n"  # 5
        "verify_ssl = maybe\n"  # 6
    )
    err = error_of(text)
    assert err.line == 6 and err.key == "verify_ssl"


def test_default_merged_under_every_section_and_section_wins():
    config = load(
        "[default]\nusername = base\npassword = p\nendpoint = https://d/one-proxy/xmlrpc\n"
        "verify_ssl = no\n[a]\nusername = own\n[b]\n",
        default_location="a",
    )
    a, b = config.location("a"), config.location("b")
    assert (a.username, a.password, a.endpoint, a.verify_ssl) == ("own", "p", "https://d/one-proxy/xmlrpc", False)
    assert (b.username, b.password) == ("base", "p")
    assert a.options["username"] == "own" and a.options["endpoint"] == "https://d/one-proxy/xmlrpc"


def test_name_and_country_not_inherited_and_defaults():
    config = load("[default]\nname = Everything\ncountry = XX\n[a]\n", default_location="a")
    a = config.location()
    assert (a.name, a.country) == ("a", "unknown")


def test_empty_value_counts_as_unset():
    config = load("[default]\nmarketplace_endpoint =\nverify_ssl =\nusername =\n")
    location = config.location()
    assert location.marketplace_endpoint == ""
    assert location.verify_ssl is None
    assert location.username is None


def test_dataclasses_are_frozen_hashable_and_hide_passwords():
    location = load(BASIC).location()
    assert SECRET not in repr(location)
    with pytest.raises(AttributeError):
        location.endpoint = "x"
    assert hash(location) == hash(load(BASIC).location())
    with pytest.raises(TypeError):
        location.options["x"] = "y"


# -- locations -----------------------------------------------------------------------------


def test_locations_in_file_order_without_default_and_instance_types():
    config = load(BASIC + "[instance_types]\nx = 1, 1, 0\n[gamma]\n")
    assert list(config.locations) == ["alpha", "beta", "gamma"]
    alpha = config.locations["alpha"]
    assert isinstance(alpha, LocationConfig)
    assert (alpha.id, alpha.name, alpha.country) == ("alpha", "Alpha cloud", "FR")


def test_default_location_argument_wins():
    config = load(BASIC, default_location="beta")
    assert config.default_location == "beta"
    assert config.location().id == "beta"
    assert list(config.locations) == ["alpha", "beta"]


@pytest.mark.parametrize("requested", [None, "", "default"])
def test_default_location_follows_selected_section(requested):
    assert load(BASIC, default_location=requested).default_location == "alpha"


@pytest.mark.parametrize("requested", [None, "default"])
def test_default_section_is_default_without_selected_section(requested):
    config = load("[default]\nendpoint = https://h/x\n[a]\n", default_location=requested)
    assert config.default_location == "default"
    assert list(config.locations) == ["default", "a"]
    assert config.location().endpoint == "https://h/x"


def test_explicit_section_keeps_default_out_of_the_list():
    config = load("[default]\n[a]\n", default_location="a")
    assert list(config.locations) == ["a"]


def test_unknown_default_location_lists_available():
    err = error_of(BASIC, default_location="nowhere")
    assert str(err) == (
        "<stream>: the default location 'nowhere' is not a section of the file; available: default, alpha, beta"
    )
    assert err.section == "nowhere"


def test_instance_types_is_never_a_location():
    err = error_of(BASIC + "[instance_types]\n", default_location="instance_types")
    assert "'instance_types' is not a section" in str(err)


def test_unknown_selected_section_names_key_and_line():
    err = error_of("[default]\n\nselected_section = gone\n[a]\n")
    assert str(err) == (
        "<stream>, line 3, section [default], key 'selected_section': "
        "selected_section = 'gone' names no location section; available: default, a"
    )
    assert (err.line, err.section, err.key) == (3, "default", "selected_section")


def test_selected_section_not_checked_when_argument_names_a_section():
    config = load("[default]\nselected_section = gone\n[a]\n", default_location="a")
    assert config.default_location == "a"


def test_location_lookup():
    config = load(BASIC)
    assert config.location().id == "alpha"
    assert config.location("beta").id == "beta"
    assert config.location("default").id == "alpha"  # the file's default, as for the driver key
    with pytest.raises(ConfigurationError) as info:
        config.location("zeta")
    assert str(info.value) == "<stream>: unknown location 'zeta'; available: alpha, beta"


# -- sizes ---------------------------------------------------------------------------------


def test_builtin_sizes_table():
    assert [(s.name, s.cpu, s.ram, s.swap) for s in BUILTIN_SIZES.values()] == [
        ("t1.micro", 1, 512, 512),
        ("m1.small", 1, 1536, 1536),
        ("m1.medium", 1, 3072, 3072),
        ("m1.large", 2, 6144, 6144),
        ("m1.xlarge", 4, 8192, 8192),
        ("c1.medium", 2, 1536, 1536),
        ("c1.xlarge", 4, 6144, 6144),
    ]
    assert load(BASIC).sizes == dict(BUILTIN_SIZES)


def test_instance_types_add_and_override():
    config = load(
        BASIC + "[instance_types]\nM1.Small = 2, 2048, 0\nmy.type = 4,2048,2048\n"
        "spaced = (8 16384 1024)\nquoted = \"1, 256, 0\"\n"
    )
    sizes = config.sizes
    assert sizes["m1.small"] == SizeSpec("m1.small", 2, 2048, 0)
    assert sizes["my.type"] == SizeSpec("my.type", 4, 2048, 2048)
    assert sizes["spaced"] == SizeSpec("spaced", 8, 16384, 1024)
    assert sizes["quoted"] == SizeSpec("quoted", 1, 256, 0)
    assert list(sizes)[:7] == list(BUILTIN_SIZES)
    assert len(sizes) == 10
    assert all(isinstance(v, int) for s in sizes.values() for v in (s.cpu, s.ram, s.swap))


@pytest.mark.parametrize(
    "value, problem",
    [
        ("4, 2048", "expected three integers '<cpu>, <ram MiB>, <swap MiB>'"),
        ("4, 2048, 2048, 1", "expected three integers '<cpu>, <ram MiB>, <swap MiB>'"),
        ("4, 2G, 2048", "expected three integers '<cpu>, <ram MiB>, <swap MiB>'"),
        ("four", "expected three integers '<cpu>, <ram MiB>, <swap MiB>'"),
        ("0, 2048, 2048", "the CPU count must be > 0"),
        ("2, 0, 2048", "the RAM must be > 0 MiB"),
        ("2, 1024, -1", "the swap must be >= 0 MiB"),
    ],
)
def test_bad_instance_type(tmp_path, value, problem):
    path = write(tmp_path, "[default]\n[instance_types]\nok = 1, 1, 0\nbad.type = %s\n" % value)
    with pytest.raises(ConfigurationError) as info:
        load_user_config(path)
    err = info.value
    assert str(err) == "%s, line 4, section [instance_types], key 'bad.type': bad instance type %r: %s" % (
        path, value, problem,
    )
    assert (err.path, err.section, err.key, err.line) == (str(path), "instance_types", "bad.type", 4)


# -- endpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://cloud.example.com/one-proxy/xmlrpc", "https://cloud.example.com/one-proxy/xmlrpc"),
        ("https://cloud.example.com/one-proxy/xmlrpc/", "https://cloud.example.com/one-proxy/xmlrpc"),
        ("http://127.0.0.1:8080/one-proxy/xmlrpc", "http://127.0.0.1:8080/one-proxy/xmlrpc"),
        ("cloud.example.com", "https://cloud.example.com:2634/xmlrpc"),
        ("cloud.example.com:9000", "https://cloud.example.com:9000/xmlrpc"),
        ("localhost", "https://localhost:2634/xmlrpc"),
        ("10.0.0.1", "https://10.0.0.1:2634/xmlrpc"),
        ("[::1]:2700", "https://[::1]:2700/xmlrpc"),
        ("::1", "https://[::1]:2634/xmlrpc"),
    ],
)
def test_compute_normalisation(value, expected):
    assert normalise_compute_endpoint(value) == expected
    assert load("[default]\nendpoint = %s\n" % value).location().endpoint == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://cloud.example.com/pdisk/", "https://cloud.example.com/pdisk"),
        ("https://cloud.example.com:8443/pdisk", "https://cloud.example.com:8443/pdisk"),
        ("pdisk.example.com", "https://pdisk.example.com:8445"),
        ("pdisk.example.com:9445", "https://pdisk.example.com:9445"),
    ],
)
def test_pdisk_normalisation(value, expected):
    assert normalise_pdisk_endpoint(value) == expected
    config = load("[default]\nendpoint = other.example.com\npdisk_endpoint = %s\n" % value)
    assert config.location().pdisk_endpoint == expected


@pytest.mark.parametrize(
    "endpoint, expected",
    [
        ("https://cloud.example.com/one-proxy/xmlrpc", "https://cloud.example.com/pdisk"),
        ("HTTPS://cloud.example.com:8443/one-proxy/xmlrpc", "https://cloud.example.com:8443/pdisk"),
        ("cloud.example.com", "https://cloud.example.com:8445"),
        ("cloud.example.com:2634", "https://cloud.example.com:8445"),
    ],
)
def test_pdisk_derived_from_endpoint(endpoint, expected):
    assert load("[default]\nendpoint = %s\n" % endpoint).location().pdisk_endpoint == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://marketplace.example.org/", "https://marketplace.example.org"),
        ("https://127.0.0.1:4443/marketplace", "https://127.0.0.1:4443/marketplace"),
        ("http://mp.example.org", "http://mp.example.org"),
        ("mp.example.org", "https://mp.example.org"),
        ("mp.example.org:8443", "https://mp.example.org:8443"),
    ],
)
def test_marketplace_normalisation(value, expected):
    assert normalise_marketplace_endpoint(value) == expected
    assert load("[default]\nmarketplace_endpoint = %s\n" % value).location().marketplace_endpoint == expected


def test_no_marketplace_default_and_the_error_names_file_section_and_key(tmp_path):
    # 14.06 defaulted to https://marketplace.stratuslab.eu, a domain nobody may hold safely now.
    path = write(tmp_path, "[default]\nendpoint = https://h/one-proxy/xmlrpc\n[a]\n[b]\n")
    location = load_user_config(path, default_location="b").location()
    assert location.marketplace_endpoint == ""
    with pytest.raises(ConfigurationError) as info:
        location.require_endpoint("marketplace")
    assert str(info.value) == (
        "%s, section [b], key 'marketplace_endpoint': no Marketplace endpoint: set marketplace_endpoint "
        "= https://<host>/marketplace in [b] or [default] (there is no default: marketplace.stratuslab.eu, "
        "the former central Marketplace, no longer runs)" % path
    )
    assert (info.value.path, info.value.section, info.value.key) == (str(path), "b", "marketplace_endpoint")


def test_without_a_marketplace_locations_and_nodes_work_and_images_are_refused(write_config, cloud):
    from libcloud.compute.providers import get_driver

    path = write_config("""
        [default]
        [local]
        endpoint = {url}/one-proxy/xmlrpc
        pdisk_endpoint = {url}/pdisk
        username = {user}
        password = {password}
        ca_certs_path = {ca}
        user_public_key_file = {key}
    """)
    driver = get_driver("stratuslab")("local", stratuslab_user_config=path)
    assert [loc.id for loc in driver.list_locations()] == ["local"]
    nodes_before = {node.id for node in driver.list_nodes()}
    assert isinstance(driver.list_volumes(), list)
    expected = "%s, section [local], key 'marketplace_endpoint': no Marketplace endpoint" % path
    with pytest.raises(ConfigurationError) as info:
        driver.list_images()
    assert str(info.value).startswith(expected)
    with pytest.raises(ConfigurationError) as info:
        driver.create_node(name="x", size="m1.small", image="MwNYqFqJ6xw5jNznhJOeclRJpKX")
    assert str(info.value).startswith(expected)
    assert {node.id for node in driver.list_nodes()} == nodes_before  # nothing was created


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("endpoint", "ftp://h/x", "malformed URL 'ftp://h/x': the scheme must be http or https"),
        ("endpoint", "https://h", "endpoint URL 'https://h' has no path; expected e.g. https://h/one-proxy/xmlrpc"),
        ("endpoint", "https:///x", "malformed URL 'https:///x': no host name"),
        ("endpoint", "https://h:99999/x", "malformed URL 'https://h:99999/x': Port out of range 0-65535"),
        ("endpoint", "https://h:0/x", "malformed URL 'https://h:0/x': port 0"),
        ("endpoint", "https://h/x?a=1", "malformed URL 'https://h/x?a=1': a service URL takes no query or fragment"),
        ("endpoint", "h.example.org/one-proxy/xmlrpc",
         "malformed endpoint 'h.example.org/one-proxy/xmlrpc': expected a URL such as https://host/path, or host[:port]"),
        ("endpoint", "host:70000", "malformed endpoint 'host:70000': port out of range"),
        ("pdisk_endpoint", "https://h/a b", "malformed URL 'https://h/a b': it contains white space"),
        ("pdisk_endpoint", "-bad-", "malformed endpoint '-bad-': expected a URL such as https://host/path, or host[:port]"),
        ("marketplace_endpoint", "https://h/#top", "malformed URL 'https://h/#top': a service URL takes no query or fragment"),
        ("marketplace_endpoint", "mp.example.org/path",
         "malformed endpoint 'mp.example.org/path': expected a URL such as https://host/path, or host[:port]"),
    ],
)
def test_malformed_endpoints(key, value, problem):
    err = error_of("[default]\n[a]\n\n%s = %s\n" % (key, value), default_location="a")
    assert str(err) == "<stream>, line 4, section [a], key %r: %s" % (key, problem)
    assert (err.section, err.key, err.line) == ("a", key, 4)


def test_credentials_in_url_rejected_without_echo():
    err = error_of("[default]\nendpoint = https://bob:%s@h/one-proxy/xmlrpc\n" % SECRET)
    assert str(err) == (
        "<stream>, line 2, section [default], key 'endpoint': "
        "the URL must not hold credentials; use the username and password keys instead"
    )


def test_bad_port_in_url_with_credentials_is_redacted():
    err = error_of("[default]\nendpoint = https://bob:%s@h:x/y\n" % SECRET.replace("%", "").replace(";", ""))
    assert "bob" not in str(err) and "***@h:x" in str(err)


def test_error_in_default_is_reported_where_written():
    err = error_of("[default]\nendpoint = ftp://h/x\n[a]\n", default_location="a")
    assert str(err).startswith("<stream>, line 2, section [default], key 'endpoint': ")
    assert err.section == "default"


def test_missing_endpoint_is_lazy_and_names_file_section_key(tmp_path):
    path = write(tmp_path, "[default]\nusername = u\npassword = %s\n[a]\nname = A\n" % SECRET)
    config = load_user_config(path, default_location="a")
    location = config.location()
    assert location.endpoint == "" and location.pdisk_endpoint == ""
    for call in (location.check_usable, location.require_endpoint):
        with pytest.raises(ConfigurationError) as info:
            call()
        assert str(info.value) == (
            "%s, section [a], key 'endpoint': no compute endpoint: "
            "set endpoint = https://<host>/one-proxy/xmlrpc in [a] or [default]" % path
        )
        assert (info.value.path, info.value.section, info.value.key) == (str(path), "a", "endpoint")
    with pytest.raises(ConfigurationError) as info:
        location.check_usable("pdisk")
    assert str(info.value) == (
        "%s, section [a], key 'pdisk_endpoint': no pdisk endpoint: "
        "set pdisk_endpoint = https://<host>/pdisk (or endpoint) in [a] or [default]" % path
    )
    with pytest.raises(ConfigurationError) as info:
        location.require_endpoint("marketplace")
    assert info.value.key == "marketplace_endpoint"
    with pytest.raises(ValueError):
        location.require_endpoint("cimi")


def test_check_usable_returns_auth_mode():
    location = load(BASIC).location()
    assert location.check_usable() == "pswd"
    assert location.check_usable("pdisk") == "pswd"
    assert location.require_endpoint("pdisk") == "https://alpha.example.org/pdisk"


# -- credentials ---------------------------------------------------------------------------


def test_pdisk_credentials_default_to_username_password():
    config = load(BASIC + "[gamma]\npdisk_username = disk\npdisk_password = dpw\n")
    alpha, gamma = config.location("alpha"), config.location("gamma")
    assert (alpha.pdisk_username, alpha.pdisk_password) == ("alice", SECRET)
    assert (gamma.pdisk_username, gamma.pdisk_password) == ("disk", "dpw")
    assert (gamma.username, gamma.password) == ("alice", SECRET)


def test_password_wins_over_certificate(tmp_path):
    (tmp_path / "k.pem").write_text("k")
    (tmp_path / "c.pem").write_text("c")
    config = load(
        "[default]\nendpoint = h\nusername = u\npassword = p\npem_key = %s\npem_certificate = %s\n"
        % (tmp_path / "k.pem", tmp_path / "c.pem")
    )
    assert config.location().auth_mode() == "pswd"


def test_certificate_mode_and_relative_paths(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "k.pem").write_text("k")
    (tmp_path / "certs" / "c.pem").write_text("c")
    path = write(tmp_path, "[default]\nendpoint = h\npem_key = certs/k.pem\npem_certificate = certs/c.pem\n")
    location = load_user_config(path).location()
    assert location.pem_key == str(tmp_path / "certs" / "k.pem")
    assert location.auth_mode() == "cert"
    assert location.auth_mode("pdisk") == "cert"
    assert location.check_usable() == "cert"


def test_certificate_file_missing(tmp_path):
    (tmp_path / "k.pem").write_text("k")
    path = write(tmp_path, "[default]\n[a]\nendpoint = h\npem_key = k.pem\npem_certificate = gone.pem\n")
    location = load_user_config(path, default_location="a").location()
    with pytest.raises(ConfigurationError) as info:
        location.auth_mode()
    assert str(info.value) == (
        "%s, line 5, section [a], key 'pem_certificate': pem_certificate file %s does not exist "
        "(no username and password either)" % (path, tmp_path / "gone.pem")
    )
    assert (info.value.section, info.value.key, info.value.line) == ("a", "pem_certificate", 5)


@pytest.mark.parametrize(
    "keys, detail, key",
    [
        ("", "none is set", "username"),
        ("username = u\n", "username is set but password is missing", "password"),
        ("password = %s\n" % SECRET, "password is set but username is missing", "username"),
        ("pem_key = /k.pem\n", "pem_key is set but pem_certificate is missing", "pem_certificate"),
        ("pem_certificate = /c.pem\n", "pem_certificate is set but pem_key is missing", "pem_key"),
    ],
)
def test_missing_credentials(keys, detail, key):
    location = load("[default]\n[a]\nendpoint = h\n" + keys, default_location="a").location()
    with pytest.raises(ConfigurationError) as info:
        location.check_usable()
    assert str(info.value) == (
        "<stream>, section [a], key %r: no usable credentials (%s): set username and password, "
        "or pem_key and pem_certificate, in [a] or [default]" % (key, detail)
    )
    assert (info.value.path, info.value.section, info.value.key) == ("<stream>", "a", key)
    assert SECRET not in str(info.value)


def test_missing_pdisk_credentials_names_pdisk_keys():
    location = load("[default]\nendpoint = h\npdisk_username = d\n").location()
    with pytest.raises(ConfigurationError) as info:
        location.auth_mode("pdisk")
    assert "set pdisk_username and pdisk_password" in str(info.value)
    assert info.value.key == "pdisk_password"
    with pytest.raises(ValueError):
        location.auth_mode("marketplace")


def test_inherited_credential_problem_names_default_section(tmp_path):
    path = write(tmp_path, "[default]\npem_key = gone.pem\npem_certificate = gone.pem\n[a]\nendpoint = h\n")
    location = load_user_config(path, default_location="a").location()
    with pytest.raises(ConfigurationError) as info:
        location.auth_mode()
    assert str(info.value).startswith(
        "%s, line 3, section [default], key 'pem_certificate': (used by location 'a') pem_certificate file" % path
    )
    assert info.value.section == "a"


# -- TLS and other values ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [("true", True), ("Yes", True), ("on", True), ("1", True),
     ("false", False), ("NO", False), ("off", False), ("0", False), ("'false'", False)],
)
def test_verify_ssl_values(value, expected):
    assert load("[default]\nverify_ssl = %s\n" % value).location().verify_ssl is expected


def test_verify_ssl_unset_is_none_so_that_libcloud_security_decides():
    assert load("[default]\n").location().verify_ssl is None


def test_bad_verify_ssl(tmp_path):
    path = write(tmp_path, "[default]\n[a]\n\nverify_ssl = sometimes\n")
    with pytest.raises(ConfigurationError) as info:
        load_user_config(path)
    assert str(info.value) == (
        "%s, line 4, section [a], key 'verify_ssl': "
        "'sometimes' is not a boolean (use true/false, yes/no, on/off or 1/0)" % path
    )
    assert (info.value.line, info.value.section, info.value.key) == (4, "a", "verify_ssl")


def test_ca_certs_path_expanded(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "ca.pem").write_text("x")
    location = load("[default]\nca_certs_path = ~/ca.pem\n").location()
    assert location.ca_certs_path == str(home / "ca.pem")


def test_ca_certs_path_relative_to_config_file(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    path = write(tmp_path, "[default]\nca_certs_path = ca.pem\n")
    assert load_user_config(path).location().ca_certs_path == str(tmp_path / "ca.pem")


def test_ca_certs_path_missing(tmp_path):
    path = write(tmp_path, "[default]\nca_certs_path = %s\n" % (tmp_path / "nope.pem"))
    with pytest.raises(ConfigurationError) as info:
        load_user_config(path)
    assert str(info.value) == (
        "%s, line 2, section [default], key 'ca_certs_path': CA bundle %s does not exist"
        % (path, tmp_path / "nope.pem")
    )
    assert (info.value.key, info.value.line) == ("ca_certs_path", 2)


def test_default_context_method():
    assert load("[default]\n").location().default_context_method == "one"
    assert load("[default]\ndefault_context_method = Cloud-Init\n").location().default_context_method == "cloud-init"
    err = error_of("[default]\ndefault_context_method = puppet\n")
    assert str(err) == (
        "<stream>, line 2, section [default], key 'default_context_method': "
        "'puppet' is not one of: one, cloud-init"
    )


# -- SSH keys ------------------------------------------------------------------------------


def test_key_paths_defaults(tmp_path):
    location = load("[default]\n").location()
    home = tmp_path / "home"
    assert location.public_key_path() == str(home / ".ssh" / "id_rsa.pub")
    assert location.private_key_path() == str(home / ".ssh" / "id_rsa")


def test_key_paths_from_environment(monkeypatch, tmp_path):
    location = load("[default]\n").location()
    monkeypatch.setenv("STRATUSLAB_KEY", "~/keys/bup.pub")
    assert location.public_key_path() == str(tmp_path / "home" / "keys" / "bup.pub")
    # 14.06 stripped the characters '.', 'p', 'u', 'b' from both ends, giving ".../keys/".
    assert location.private_key_path() == str(tmp_path / "home" / "keys" / "bup")


def test_key_paths_from_file(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATUSLAB_KEY", "/elsewhere.pub")
    path = write(tmp_path, "[default]\nuser_public_key_file = id.pub.pub\n[a]\nuser_private_key_file = /k/priv\n")
    config = load_user_config(path, default_location="a")
    a = config.location()
    assert a.public_key_path() == str(tmp_path / "id.pub.pub")
    assert a.private_key_path() == "/k/priv"
    default = load_user_config(path).location()
    assert default.private_key_path() == str(tmp_path / "id.pub")


def test_public_key_without_suffix_is_its_own_private_path(monkeypatch):
    monkeypatch.setenv("STRATUSLAB_KEY", "/keys/pub")
    assert load("[default]\n").location().private_key_path() == "/keys/pub"


# -- file permissions ----------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_world_readable_file_with_password_warns(tmp_path):
    path = write(tmp_path, BASIC, mode=0o644)
    with pytest.warns(UserWarning) as record:
        load_user_config(path)
    message = str(record[0].message)
    assert str(path) in message and "chmod 600" in message and "644" in message
    assert SECRET not in message


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_group_readable_open_file_warns(tmp_path):
    path = write(tmp_path, BASIC, mode=0o640)
    with open(path) as handle, pytest.warns(UserWarning, match="chmod 600"):
        load_user_config(handle)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize(
    "text, mode",
    [(BASIC, 0o600), (BASIC, 0o400), ("[default]\nusername = u\n", 0o644)],
)
def test_no_warning_when_private_or_no_password(tmp_path, text, mode):
    path = write(tmp_path, text, mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_user_config(path)


def test_stream_never_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(BASIC)


# -- reference files -----------------------------------------------------------------------


def test_real_reference_file_parses():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture may be world-readable and holds "password"
        config = load_user_config(str(REAL_REF))
    assert config.default_location == "sl-cloud"
    assert list(config.locations) == ["sl-cloud"]
    location = config.location()
    assert (location.name, location.country) == ("StratusLab Cloud", "Earth")
    assert location.endpoint == "https://cloud.example.com/one-proxy/xmlrpc"
    assert location.pdisk_endpoint == "https://cloud.example.com/pdisk"
    assert location.marketplace_endpoint == ""  # the 14.06 reference file leaves it out
    assert location.check_usable() == "pswd"
    assert location.options["endpoint_timeout"] == "5"
    assert config.sizes == dict(BUILTIN_SIZES)


def test_our_reference_file_parses_and_documents_every_key():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = load_user_config(str(OUR_REF))
    location = config.location()
    assert (config.default_location, location.name, location.country) == ("sl-cloud", "StratusLab Cloud", "Earth")
    assert location.check_usable() == "pswd"
    assert location.verify_ssl is None
    text = OUR_REF.read_text()
    for key in (
        "selected_section", "endpoint_timeout", "name", "country", "endpoint", "pdisk_endpoint",
        "marketplace_endpoint", "ca_certs_path", "verify_ssl", "username", "password",
        "pdisk_username", "pdisk_password", "pem_key", "pem_certificate", "default_context_method",
        "user_public_key_file", "user_private_key_file", "p12_certificate", "p12_password",
        "default_instance_type", "[instance_types]",
    ):
        assert "\n%s" % key in text or "\n#%s" % key in text, key
    # Every commented-out setting is valid once uncommented (except files that must exist).
    home = Path(os.environ["HOME"])
    (home / ".stratuslab").mkdir(parents=True)
    (home / ".stratuslab" / "cloud-ca.pem").write_text("x")
    uncommented = "\n".join(
        line[1:] if line.startswith("#") and "=" in line and not line.startswith("# ") else line
        for line in text.splitlines()
    )
    full = load(uncommented).location()
    assert full.default_context_method == "cloud-init"
    assert full.ca_certs_path == str(home / ".stratuslab" / "cloud-ca.pem")
    assert load(uncommented).sizes["my.type"] == SizeSpec("my.type", 4, 2048, 2048)


def test_a_location_from_arguments_says_which_argument_to_pass():
    from stratuslab_lc_plugin.config import ARGUMENTS_SOURCE, config_from_arguments

    location = config_from_arguments(username=None, password=None, host="cloud.example.org").location()
    assert (location.id, location.source, location.endpoint) == (
        "cloud.example.org", ARGUMENTS_SOURCE, "https://cloud.example.org:2634/xmlrpc")
    with pytest.raises(ConfigurationError, match=r"pass ex_marketplace_endpoint='https://<host>/marketplace'"):
        location.require_endpoint("marketplace")
    with pytest.raises(ConfigurationError, match="pass the user name as key and the password as secret"):
        location.check_usable("compute")
    with pytest.raises(ConfigurationError, match="port must be 1 to 65535"):
        config_from_arguments(username="u", password="p", host="h", port=0)
