"""Reverse DNS from /etc/hosts only, for the original 14.06 software under test.

The 14.06 client resolves every VM address back to a host name (``Monitor.listVms``,
``stratus-describe-instance``). The local cloud's VMs have loopback addresses no DNS
server knows, so those lookups could only ever fail, but each would still send a query to
the machine's resolver; benchmarks make ten thousand of them. Importing this module and
calling :func:`install` answers them from /etc/hosts alone (``hosts: files``), which is
what the client gets anyway, minus the network traffic.

Runs under Python 2.7 (and 3, for linting).
"""

from __future__ import print_function

import socket

_HOSTS_FILE = "/etc/hosts"


def _read_hosts(path):
    """Map each address of the hosts file to (first name, other names)."""
    table = {}
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (IOError, OSError):
        return table
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] not in table:
            table[fields[0]] = (fields[1], fields[2:])
    return table


def install(path=_HOSTS_FILE):
    """Replace ``socket.gethostbyaddr`` with a hosts-file lookup."""
    table = _read_hosts(path)

    def gethostbyaddr(address):
        try:
            name, aliases = table[address]
        except KeyError:
            raise socket.herror(1, "Unknown host")
        return name, list(aliases), [address]

    socket.gethostbyaddr = gethostbyaddr
