"""The local StratusLab cloud: an emulator of the one-proxy (ONE 3.2), Marketplace and
pdisk services behind one HTTPS front on loopback, used by the demo and every test."""

from __future__ import annotations

__all__ = ["LocalCloud"]


def __getattr__(name: str):
    # Lazy: importing the package (e.g. for web.py/store.py) must not pull in TLS and
    # threading machinery.
    if name == "LocalCloud":
        from .cloud import LocalCloud
        return LocalCloud
    raise AttributeError(name)
