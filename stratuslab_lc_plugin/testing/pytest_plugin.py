"""pytest plugin: a local StratusLab cloud for users' own tests, with no set-up.

Registered through the ``pytest11`` entry point, so installing the package is enough.
Fixtures:

``stratuslab_cloud``
    the running :class:`~stratuslab_lc_plugin.emulator.LocalCloud` (``url``, ``ca_path``,
    ``config_path``, ``users``, ``faults``): one per session, started when a test first
    asks for it, in a temporary state directory. Faults a test injects are removed after it.
    A test marked ``@pytest.mark.stratuslab_own_cloud(**options)`` gets a cloud of its own,
    made with those ``LocalCloud`` options (``delays``, ``users``, ``faults``...); so does
    every test with ``--stratuslab-cloud-per-test``.
``stratuslab_driver``
    a new driver bound to that cloud for each test; the nodes and volumes that appeared
    during the test are destroyed afterwards.
``stratuslab_config``
    the path of the configuration file the cloud wrote; ``STRATUSLAB_USER_CONFIG`` names it
    during the test, so code under test that makes its own driver finds the cloud.
``stratuslab_session_cloud``
    the session's cloud itself, for fixtures of a wider scope.

Options: ``--stratuslab-delay`` (also the ``stratuslab_delay`` ini value) sets the seconds
per VM lifecycle step, ``--stratuslab-cloud-per-test`` gives each test its own cloud.

A suite that uses none of this pays nothing: at collection this module imports only pytest
and the standard library, prints nothing and starts nothing.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Dict, Iterator, Union

import pytest

from stratuslab_lc_plugin.testing.clouds import DEFAULT_DELAY, driver_for, local_cloud, nothing_left_behind

if TYPE_CHECKING:  # for the annotations only: collection must not load Libcloud or the cloud
    from stratuslab_lc_plugin.driver import StratusLabNodeDriver
    from stratuslab_lc_plugin.emulator.cloud import LocalCloud

__all__ = ["parse_delays"]

MARKER = "stratuslab_own_cloud"
DELAY_OPTION = "--stratuslab-delay"
DELAY_INI = "stratuslab_delay"
PER_TEST_OPTION = "--stratuslab-cloud-per-test"

Delays = Union[float, Dict[str, float]]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stratuslab", "local StratusLab cloud (stratuslab-lc-plugin)")
    group.addoption(
        DELAY_OPTION, dest="stratuslab_delay", default=None, metavar="SECONDS|STEP=SECONDS,...",
        help="seconds per VM lifecycle step of the local clouds: one number for every step, or "
             "STEP=SECONDS pairs separated by commas (steps: pending, prolog, boot, shutdown, "
             "cancel, epilog, save, default); default %s" % DEFAULT_DELAY,
    )
    group.addoption(PER_TEST_OPTION, dest="stratuslab_cloud_per_test", action="store_true",
                    help="give every test that uses the stratuslab fixtures a local cloud of its own")
    parser.addini(DELAY_INI, "seconds per VM lifecycle step of the local clouds (as %s)" % DELAY_OPTION,
                  default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "%s(**options): give this test a local StratusLab cloud of its own, made with these "
        "LocalCloud options (delays=, users=, faults=...)" % MARKER,
    )
    _configured_delays(config)  # a bad value is a usage error now, not in the middle of a run


def parse_delays(text: str) -> Delays:
    """``"0.1"`` -> 0.1; ``"boot=1,default=0"`` -> ``{"boot": 1.0, "default": 0.0}``.

    Raises ValueError saying what is wrong. Step names are checked by the cloud itself.
    """
    text = text.strip()
    if "=" not in text:
        return _seconds(text, text)
    delays: Dict[str, float] = {}
    for pair in text.split(","):
        step, sep, value = pair.partition("=")
        step = step.strip()
        if not sep or not step:
            raise ValueError("%r is not STEP=SECONDS" % pair.strip())
        if step in delays:
            raise ValueError("step %r is given twice" % step)
        delays[step] = _seconds(value, pair.strip())
    return delays


def _seconds(value: str, where: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError("%r: %r is not a number of seconds" % (where, value.strip())) from None
    if not seconds >= 0:  # also refuses nan
        raise ValueError("%r: seconds must be >= 0" % where)
    return seconds


def _configured_delays(config: pytest.Config) -> Delays:
    option = config.getoption("stratuslab_delay")
    source, text = (DELAY_OPTION, option) if option is not None else ("ini " + DELAY_INI, config.getini(DELAY_INI))
    if not text:
        return DEFAULT_DELAY
    try:
        delays = parse_delays(str(text))
        if isinstance(delays, dict):
            # Only the cloud knows its steps; making one (not starting it) checks their names.
            from stratuslab_lc_plugin.emulator import LocalCloud

            LocalCloud(delays=delays)
    except ValueError as exc:
        raise pytest.UsageError("%s: %s" % (source, exc)) from None
    return delays


@contextmanager
def _cloud(config: pytest.Config, state_dir: str, options: Dict[str, Any], origin: str) -> Iterator[LocalCloud]:
    options = dict(options)
    options.setdefault("delays", _configured_delays(config))
    with ExitStack() as stack:
        try:
            cloud = stack.enter_context(local_cloud(state_dir=state_dir, set_env=False, **options))
        except (TypeError, ValueError) as exc:
            pytest.fail("cannot start the local StratusLab cloud of %s: %s" % (origin, exc), pytrace=False)
        yield cloud


@pytest.fixture(scope="session")
def stratuslab_session_cloud(request: pytest.FixtureRequest,
                             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """The session's local StratusLab cloud, started on first use."""
    with _cloud(request.config, str(tmp_path_factory.mktemp("stratuslab-cloud")), {}, "the session") as cloud:
        yield cloud


@pytest.fixture
def stratuslab_cloud(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """The local cloud of this test: the session's, or its own (marker or option)."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None and not request.config.getoption("stratuslab_cloud_per_test"):
        cloud = request.getfixturevalue("stratuslab_session_cloud")
        before = [id(fault) for fault in cloud.faults]
        yield cloud
        for fault in list(cloud.faults):
            if id(fault) not in before:
                cloud.faults.remove(fault)
        return
    if marker is not None and marker.args:
        pytest.fail("@pytest.mark.%s takes keyword arguments only (LocalCloud options), got %r"
                    % (MARKER, marker.args), pytrace=False)
    options = dict(marker.kwargs) if marker is not None else {}
    origin = "@pytest.mark.%s%r" % (MARKER, options) if marker is not None else PER_TEST_OPTION
    with _cloud(request.config, str(tmp_path_factory.mktemp("stratuslab-own-cloud")), options, origin) as cloud:
        yield cloud


@pytest.fixture
def stratuslab_driver(stratuslab_cloud: LocalCloud) -> Iterator[StratusLabNodeDriver]:
    """A new driver for this test's cloud; what the test created is destroyed after it."""
    driver = driver_for(stratuslab_cloud)
    try:
        with nothing_left_behind(driver, cloud=stratuslab_cloud):
            yield driver
    finally:
        driver.close()


@pytest.fixture
def stratuslab_config(stratuslab_cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> str:
    """The configuration file of this test's cloud, also in ``STRATUSLAB_USER_CONFIG``."""
    monkeypatch.setenv("STRATUSLAB_USER_CONFIG", stratuslab_cloud.config_path)
    return stratuslab_cloud.config_path
