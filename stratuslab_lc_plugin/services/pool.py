"""The remote services of each location, and the connections behind them, for one driver.

:class:`ServicePool` hands out one :class:`LocationServices` per location and thread:
connections are reused (keep-alive) by the thread that made them, and a driver object can
be shared between threads because no connection is ever used by two at once. The driver's
own ``driver.connection`` (made by Libcloud's ``BaseDriver`` in the constructing thread) is
adopted as that thread's compute connection of the default location, so it is a real one.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Dict, List, Tuple

from stratuslab_lc_plugin.config import LocationConfig
from stratuslab_lc_plugin.services.connection import StratusLabConnection, TransportSettings
from stratuslab_lc_plugin.services.marketplace import MarketplaceClient
from stratuslab_lc_plugin.services.one import OneClient
from stratuslab_lc_plugin.services.pdisk import PdiskClient

__all__ = ["LocationServices", "ServicePool"]


class LocationServices:
    """The clients of one location's three services, each made on first use.

    A location without a pdisk endpoint can still run VMs: each service checks its own
    part of the configuration only when it is first called.
    """

    def __init__(self, location: LocationConfig, pool: "ServicePool") -> None:
        self.location = location
        self._pool = pool

    @cached_property
    def one(self) -> OneClient:
        return OneClient(self._pool.connection(self.location, "compute"), self.location.username)

    @cached_property
    def pdisk(self) -> PdiskClient:
        return PdiskClient(self._pool.connection(self.location, "pdisk"))

    @cached_property
    def marketplace(self) -> MarketplaceClient:
        return MarketplaceClient(self._pool.connection(self.location, "marketplace"))


class ServicePool:
    """Connections and service clients per thread, location and service, for one driver."""

    def __init__(self, settings: TransportSettings, connection_class: type = StratusLabConnection,
                 driver: object = None) -> None:
        self.settings = settings
        self.connection_class = connection_class
        self.driver = driver
        self._local = threading.local()
        self._made: List[StratusLabConnection] = []
        self._lock = threading.Lock()

    def services(self, location: LocationConfig) -> LocationServices:
        cache: Dict[str, LocationServices] = self._local.__dict__.setdefault("services", {})
        services = cache.get(location.id)
        if services is None or services.location is not location:
            services = cache[location.id] = LocationServices(location, self)
        return services

    def connection(self, location: LocationConfig, service: str) -> StratusLabConnection:
        """This thread's connection to ``service`` of ``location``."""
        connections: Dict[Tuple[str, str], StratusLabConnection] = self._local.__dict__.setdefault("connections", {})
        key = (location.id, service)
        connection = connections.get(key)
        if connection is None:
            connection = self.connection_class(location=location, service=service, settings=self.settings)
            connection.driver = self.driver
            self._keep(connection)
            connections[key] = connection
        return connection

    def adopt(self, connection: StratusLabConnection) -> None:
        """Use ``connection`` (the driver's own) as this thread's connection to its service."""
        connections = self._local.__dict__.setdefault("connections", {})
        connections.setdefault((connection.location_id, connection.service), connection)
        self._keep(connection)

    def close(self) -> None:
        """Close every connection made so far (they reconnect if used again)."""
        with self._lock:
            made, self._made = self._made, []
        for connection in made:
            session = getattr(connection.connection, "session", None)
            if session is not None:
                session.close()
            connection.connection = None

    def _keep(self, connection: StratusLabConnection) -> None:
        with self._lock:
            self._made.append(connection)

