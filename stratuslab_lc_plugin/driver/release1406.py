"""The 14.06 driver's own public names, so that scripts written for it run unchanged.

The StratusLab 14.06 Libcloud driver had names of its own besides Libcloud's API
(``driver.locations``, ``list_nodes_in_location``...). Each one exists here with the same
meaning, or, where it handed out an object of the Python 2 client that no longer exists,
raises an ``AttributeError`` that names what to use instead. The node and size classes
carry theirs in :mod:`.convert` (``node.location``, ``node.host``, ``size.cpu``...).
``tests/test_release1406.py`` takes the list of names from the 14.06 sources.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, List, NoReturn, Optional

from libcloud.compute.base import Node, NodeLocation, NodeSize

from stratuslab_lc_plugin.driver import convert
from stratuslab_lc_plugin.driver.compute import ComputeMixin
from stratuslab_lc_plugin.driver.core import LocationArg

__all__ = ["Release1406Mixin"]

_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_DC = "{http://purl.org/dc/terms/}"


class _Replaced:
    """A 14.06 attribute whose object is gone: reading it says what to use instead."""

    def __init__(self, replacement: str, why: str = "belonged to the 14.06 driver's Python 2 client") -> None:
        self.replacement = replacement
        self.why = why
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: Optional[type] = None) -> NoReturn:
        raise AttributeError("%s.%s %s: %s"
                             % (getattr(owner, "__name__", "StratusLabNodeDriver"), self.name, self.why,
                                self.replacement))


class Release1406Mixin(ComputeMixin):
    """The 14.06 driver's names (composed into ``StratusLabNodeDriver``); they wrap compute methods."""

    # The element names the 14.06 driver parsed Marketplace metadata with.
    RDF_RDF = _RDF + "RDF"
    RDF_DESCRIPTION = _RDF + "Description"
    DC_IDENTIFIER = _DC + "identifier"
    DC_TITLE = _DC + "title"
    DC_DESCRIPTION = _DC + "description"
    # 14.06 fell back to https://marketplace.stratuslab.eu, of a project that no longer runs:
    # whoever holds that domain would choose users' disks, so there is no default any more.
    DEFAULT_MARKETPLACE_URL = _Replaced(
        "use the location's marketplace_endpoint (driver.location_config(location).marketplace_endpoint)",
        why="was the central Marketplace of a project that no longer runs; there is no default any more",
    )

    user_configurator = _Replaced(
        "use driver.config (a stratuslab_lc_plugin.config.UserConfig) and "
        "driver.location_config(location) for one location's settings"
    )

    @property
    def locations(self) -> Dict[str, NodeLocation]:
        """The locations by id (14.06: ``driver.locations``); ``list_locations()`` lists them."""
        return {location.id: location for location in self.list_locations()}

    @property
    def sizes(self) -> List[NodeSize]:
        """The sizes (14.06: ``driver.sizes``), as ``list_sizes()`` returns them."""
        return [convert.to_size(spec, self) for spec in self._config.sizes.values()]

    def get_uuid(self, unique_field: Optional[bool] = None) -> str:
        """A new random UUID, as the 14.06 driver's ``get_uuid`` returned."""
        return str(uuid.uuid4())

    @staticmethod
    def get_config_section(location: Any, user_configurator: Any, options: Any = None) -> NoReturn:
        """Not available: it returned the 14.06 client's ConfigHolder."""
        raise AttributeError(
            "StratusLabNodeDriver.get_config_section() returned the 14.06 client's ConfigHolder, "
            "which this driver does not have: use driver.location_config(location)"
        )

    def list_nodes_in_location(self, location: LocationArg) -> List[Node]:
        """The nodes of one location (14.06); the same as ``list_nodes(ex_location=location)``."""
        return self.list_nodes(ex_location=location)
