"""The remote services of one location, built from its configuration.

:class:`ServicePool` hands out one :class:`LocationServices` per location and thread:
connections are reused (keep-alive) by the thread that made them, and a driver object can be
shared between threads because no connection is ever used by two at once.
"""

from __future__ import annotations

import threading
import warnings
from functools import cached_property
from urllib.parse import urlsplit, urlunsplit

from stratuslab_lc_plugin.config import LocationConfig
from stratuslab_lc_plugin.services.common import RetryPolicy
from stratuslab_lc_plugin.services.marketplace import MarketplaceClient, MarketplaceConnection
from stratuslab_lc_plugin.services.one import OneClient, OneConnection
from stratuslab_lc_plugin.services.pdisk import PdiskClient, PdiskConnection

__all__ = ["LocationServices", "ServicePool", "authenticated_url"]


class LocationServices:
    """The clients of one location's three services, each made on first use.

    A location without a pdisk endpoint can still run VMs: each service checks its own
    part of the configuration only when it is first needed.
    """

    def __init__(self, location: LocationConfig, timeout: float, retry: RetryPolicy) -> None:
        self.location = location
        self._common = dict(
            location_id=location.id,
            ca_certs_path=location.ca_certs_path,
            verify_ssl=location.verify_ssl,
            timeout=timeout,
            retry=retry,
        )
        if not location.verify_ssl:
            warnings.warn(
                "TLS certificates are not verified for location %s (verify_ssl = false in %s)"
                % (location.id, location.source),
                stacklevel=4,
            )

    @cached_property
    def one(self) -> OneClient:
        location = self.location
        mode = location.check_usable("compute")
        base, action = _split_last_segment(authenticated_url(location.endpoint, mode))
        connection = OneConnection(
            base, username=location.username, password=location.password,
            client_cert=self._client_cert(mode), **self._common,
        )
        return OneClient(connection, action, location.username)

    @cached_property
    def pdisk(self) -> PdiskClient:
        location = self.location
        mode = location.check_usable("pdisk")
        connection = PdiskConnection(
            location.pdisk_endpoint.rstrip("/") + "/" + mode,
            username=location.pdisk_username, password=location.pdisk_password,
            client_cert=self._client_cert(mode), **self._common,
        )
        return PdiskClient(connection)

    @cached_property
    def marketplace(self) -> MarketplaceClient:
        endpoint = self.location.require_endpoint("marketplace")
        return MarketplaceClient(MarketplaceConnection(endpoint, **self._common))

    def _client_cert(self, mode: str):
        if mode != "cert":
            return None
        return (self.location.pem_certificate, self.location.pem_key)


class ServicePool:
    def __init__(self, timeout: float, retry: RetryPolicy) -> None:
        self.timeout = timeout
        self.retry = retry
        self._local = threading.local()

    def get(self, location: LocationConfig) -> LocationServices:
        cache = self._local.__dict__.setdefault("services", {})
        services = cache.get(location.id)
        if services is None:
            services = cache[location.id] = LocationServices(location, self.timeout, self.retry)
        return services


def authenticated_url(endpoint: str, mode: str) -> str:
    """Insert ``/pswd`` or ``/cert`` before the last path segment (spec §2.1).

    ``https://h/one-proxy/xmlrpc`` becomes ``https://h/one-proxy/pswd/xmlrpc``. A trailing
    slash is dropped first, unlike the 14.06 client which then produced ``…/pswd/``.
    """
    scheme, netloc, path, query, fragment = urlsplit(endpoint)
    head, _, last = path.rstrip("/").rpartition("/")
    return urlunsplit((scheme, netloc, "%s/%s/%s" % (head, mode, last), query, fragment))


def _split_last_segment(url: str) -> tuple[str, str]:
    # Libcloud joins a connection's path and the request action with urljoin, so the base
    # must end at the parent and the action be the last segment (no trailing slash added).
    base, _, action = url.rpartition("/")
    return base, action
