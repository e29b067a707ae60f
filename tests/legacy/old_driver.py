"""Drive the original StratusLab Libcloud driver (14.06, Python 2.7) over a JSON-lines pipe.

The conformance tests and the list_nodes benchmark run the 14.06 driver unchanged, in
its own Python 2.7 interpreter, and need to interleave its calls with checks against the
cloud. So this script keeps one driver object alive and answers one JSON request per
line on stdin with one JSON line on the original stdout:

    {"op": "init", "config": "/path/stratuslab-user.cfg"}
    {"op": "create_node", "name": "n1", "size": "m1.small", "image": "<marketplace id>"}
    -> {"ok": true, "result": {...}, "output": "<what the old code printed>"}
    -> {"ok": false, "error": "ValueError: ...", "traceback": "...", "output": "..."}

Nodes are named by "<location id>/<node id>", volumes by their UUID; the objects the
old driver returned are kept, because some calls depend on state it stores in them
(``detach_volume`` needs the node that ``attach_volume`` put in ``volume.extra``).

Whatever the old code prints is captured per call and returned as ``output``: the
14.06 driver reports some failures only by printing them (``list_images``).

Runs under Python 2.7 with the 14.06 packages on PYTHONPATH.
"""

from __future__ import print_function

import json
import os
import sys
import time
import traceback

try:
    from StringIO import StringIO
except ImportError:  # pragma: no cover - Python 3, only for linting
    from io import StringIO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import offline_resolver  # noqa: E402

offline_resolver.install()

from libcloud.compute.base import NodeAuthSSHKey, NodeImage  # noqa: E402
from libcloud.compute.types import NodeState  # noqa: E402
from stratuslab.libcloud.compute_driver import StratusLabNodeDriver  # noqa: E402

STATE_NAMES = dict((value, name.lower()) for name, value in vars(NodeState).items()
                   if name.isupper() and isinstance(value, int))


class Session(object):
    """One 14.06 driver and the objects it handed out."""

    def __init__(self):
        self.driver = None
        self.nodes = {}
        self.volumes = {}

    # -- conversions ---------------------------------------------------------------------

    def location(self, location_id):
        if location_id is None:
            return None
        return self.driver.locations[location_id]

    def node(self, handle):
        return self.nodes[handle]

    def remember_node(self, node):
        handle = "%s/%s" % (node.location.id, node.id)
        self.nodes[handle] = node
        return handle

    def node_dict(self, node, with_state=False):
        size = node.size
        result = {
            "handle": self.remember_node(node),
            "id": node.id,
            "name": node.name,
            "public_ips": list(node.public_ips or []),
            "private_ips": list(node.private_ips or []),
            "image": node.image.id if node.image is not None else None,
            "size": None if size is None else {
                "id": size.id, "ram": size.ram, "disk": size.disk, "cpu": getattr(size, "cpu", None)},
            "location": node.location.id,
        }
        if with_state:
            result["state"] = STATE_NAMES.get(node.state, node.state)
        return result

    def volume_dict(self, volume):
        self.volumes[volume.id] = volume
        extra = volume.extra or {}
        location = extra.get("location")
        attached = extra.get("node")
        return {
            "id": volume.id,
            "name": volume.name,
            "size": volume.size,
            "location": location.id if location is not None else None,
            "node": attached.id if attached is not None else None,
        }

    # -- operations ----------------------------------------------------------------------

    def op_init(self, config, default_location=None):
        kwargs = {"stratuslab_user_config": config}
        if default_location:
            kwargs["stratuslab_default_location"] = default_location
        self.driver = StratusLabNodeDriver("ignored", **kwargs)
        return {"default_location": self.driver.default_location.id}

    def op_list_locations(self):
        return [{"id": loc.id, "name": loc.name, "country": loc.country}
                for loc in self.driver.list_locations()]

    def op_list_sizes(self):
        return [{"id": s.id, "name": s.name, "ram": s.ram, "disk": s.disk, "cpu": s.cpu,
                 "bandwidth": s.bandwidth, "price": s.price}
                for s in self.driver.list_sizes()]

    def op_list_images(self, location=None):
        return [{"id": image.id, "name": image.name}
                for image in self.driver.list_images(location=self.location(location))]

    def op_create_node(self, name, size, image, location=None, public_key=None):
        sizes = dict((s.id, s) for s in self.driver.list_sizes())
        kwargs = {"name": name, "size": sizes[size],
                  "image": NodeImage(id=image, name=image, driver=self.driver)}
        if location is not None:
            kwargs["location"] = self.location(location)
        if public_key is not None:
            kwargs["auth"] = NodeAuthSSHKey(public_key)
        return self.node_dict(self.driver.create_node(**kwargs))

    def op_list_nodes(self, with_state=False):
        return [self.node_dict(node, with_state) for node in self.driver.list_nodes()]

    def op_node_state(self, node):
        return STATE_NAMES.get(self.node(node).state)

    def op_node_host(self, node):
        return self.node(node).host

    def op_destroy_node(self, node):
        return self.driver.destroy_node(self.node(node))

    def op_create_volume(self, size, name, location=None):
        volume = self.driver.create_volume(size, name, location=self.location(location))
        return self.volume_dict(volume)

    def op_list_volumes(self, location=None):
        return [self.volume_dict(v) for v in self.driver.list_volumes(location=self.location(location))]

    def op_attach_volume(self, node, volume):
        result = self.driver.attach_volume(self.node(node), self.volumes[volume])
        return {"result": result, "volume": self.volume_dict(self.volumes[volume])}

    def op_detach_volume(self, volume):
        result = self.driver.detach_volume(self.volumes[volume])
        return {"result": result, "volume": self.volume_dict(self.volumes[volume])}

    def op_destroy_volume(self, volume):
        return self.driver.destroy_volume(self.volumes[volume])

    def op_time_list_nodes(self, repeat=1, state_sample=None):
        """Seconds for list_nodes (each repeat) and for reading ``node.state`` of an
        evenly spread sample of the nodes (all of them when no sample size is given)."""
        list_times, state_times, count, sample = [], [], 0, 0
        for _ in range(repeat):
            start = time.time()
            nodes = self.driver.list_nodes()
            list_times.append(time.time() - start)
            count = len(nodes)
            picked = nodes
            if state_sample is not None and state_sample < count:
                step = float(count) / max(state_sample, 1)
                picked = [nodes[int(i * step)] for i in range(state_sample)]
            sample = len(picked)
            start = time.time()
            states = [node.state for node in picked]
            state_times.append(time.time() - start)
            if len(states) != sample:
                raise AssertionError("lost node states")
        return {"list": list_times, "states": state_times, "count": count, "sample": sample}


def main():
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    session = Session()
    for line in iter(sys.stdin.readline, ""):
        if not line.strip():
            continue
        request = json.loads(line)
        operation = request.pop("op")
        if operation == "quit":
            break
        captured = StringIO()
        sys.stdout = captured
        try:
            result = getattr(session, "op_" + operation)(**request)
            answer = {"ok": True, "result": result}
        except BaseException as exc:  # SystemExit too: the 14.06 client exits on some errors
            if isinstance(exc, KeyboardInterrupt):
                raise
            answer = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc),
                      "traceback": traceback.format_exc()}
        finally:
            sys.stdout = sys.__stdout__
        answer["output"] = captured.getvalue()
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
