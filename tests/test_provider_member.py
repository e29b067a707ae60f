"""``Provider.STRATUSLAB`` is a member of Libcloud's ``Provider`` enum, like Libcloud's own.

Menu-building code iterates ``Provider``, looks names up with ``Provider['NAME']`` or
values with ``Provider('value')``; tools such as Ansible's inventory and ElastiCluster do
``getattr(Provider, name.upper())``. Each Python version of the tox matrix runs this.
"""

from __future__ import annotations

import enum

from libcloud.compute.providers import get_driver
from libcloud.compute.types import Provider

import stratuslab_lc_plugin  # registers where .pth files are not processed
from stratuslab_lc_plugin.driver import StratusLabNodeDriver
from stratuslab_lc_plugin import registry
from stratuslab_lc_plugin.registry import add_provider_member


def test_stratuslab_is_a_real_member_of_libclouds_provider_enum():
    member = Provider.STRATUSLAB
    assert isinstance(member, Provider) and isinstance(member, str)
    assert member in list(Provider) and "STRATUSLAB" in Provider.__members__
    assert Provider["STRATUSLAB"] is member and Provider("stratuslab") is member
    assert (member.value, member.name, member, str(member)) == ("stratuslab", "STRATUSLAB", "stratuslab", "stratuslab")
    assert getattr(Provider, "stratuslab".upper()) is member  # ElastiCluster's and Ansible's lookup
    assert get_driver(member) is StratusLabNodeDriver
    assert Provider.DUMMY in list(Provider)  # Libcloud's own members are untouched


def test_adding_is_verified_and_falls_back_to_a_plain_constant():
    class Plain:
        pass

    assert add_provider_member(Plain, "FOO", "foo") == "foo" and Plain.FOO == "foo"

    class Numbers(enum.IntEnum):  # not a str enum: no member is made
        ONE = 1

    assert add_provider_member(Numbers, "FOO", "foo") == "foo" and Numbers.FOO == "foo"
    assert list(Numbers) == [Numbers.ONE]

    class Kinds(str, enum.Enum):
        A = "a"

    member = add_provider_member(Kinds, "B", "b")
    assert isinstance(member, Kinds) and Kinds("b") is member and list(Kinds) == [Kinds.A, member]


def test_registering_again_adds_no_second_member():
    before = list(Provider)
    registry.register(["compute"])
    assert list(Provider) == before and before.count(Provider.STRATUSLAB) == 1


def test_the_typed_constant_names_the_same_provider():
    assert stratuslab_lc_plugin.STRATUSLAB == Provider.STRATUSLAB == "stratuslab"
    assert get_driver(stratuslab_lc_plugin.STRATUSLAB) is StratusLabNodeDriver
