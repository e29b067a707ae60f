"""Scripts written for the StratusLab 14.06 driver run unchanged (Python 3 syntax aside).

The example follows the 14.06 examples (``src/test/python/libcloud_demo_*.py`` of
StratusLab/libcloud-drivers): the old import line, the old ``set_driver`` line,
``StratusLabDriver('unused-key')``, ``wait_until_running`` then ``node.state``, and
``deploy_node`` with a ``ScriptDeployment``, against two local clouds configured as two
sections. The list of the 14.06 classes' public names comes from the 14.06 sources
themselves (the conformance cache, read by Python 2.7), so none is forgotten.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
import warnings

import pytest
from libcloud.compute.base import NodeLocation
from libcloud.compute.types import NodeState

from stratuslab_lc_plugin.emulator import LocalCloud
from tests.conftest import LOCATION
from tests.keys import key_factory  # noqa: F401 - pytest fixture

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def second_cloud(tmp_path_factory):
    with LocalCloud(state_dir=str(tmp_path_factory.mktemp("second-cloud")), delays=0.05) as running:
        yield running


def section(name: str, cloud) -> str:
    user, password = next(iter(cloud.users.items()))
    return "[%s]\n" % name + textwrap.dedent(LOCATION).format(
        url=cloud.url, user=user, password=password, ca=cloud.ca_path, key=cloud.public_key_path)


@pytest.fixture
def two_clouds_config(tmp_path, cloud, second_cloud):
    path = tmp_path / "stratuslab-user.cfg"
    path.write_text("[default]\nselected_section = first\n" + section("first", cloud) + section("second", second_cloud))
    path.chmod(0o600)
    return str(path)


EXAMPLE = '''
import os.path

from libcloud.compute.base import NodeAuthSSHKey
from libcloud.compute.providers import get_driver
from libcloud.compute.deployment import ScriptDeployment

from libcloud.compute.providers import set_driver

import stratuslab.libcloud.compute_driver

set_driver('stratuslab',
           'stratuslab.libcloud.compute_driver',
           'StratusLabNodeDriver')


def select_id(identifier, objects):
    for o in objects:
        if o.id == identifier:
            return o
    return None


# Obtain instance of StratusLab driver.
StratusLabDriver = get_driver('stratuslab')
driver = StratusLabDriver('unused-key')

print('Driver: ', driver)

sizes = driver.list_sizes()
locations = driver.list_locations()
images = driver.list_images()

size = select_id('m1.large', sizes)
location = select_id('second', locations)
image = select_id('%(image)s', images)

# Get ssh key.
home = os.path.expanduser('~')
ssh_public_key_path = os.path.join(home, '.ssh', 'id_key.pub')
ssh_private_key_path = ssh_public_key_path.rstrip('.pub')

with open(ssh_public_key_path) as f:
    pubkey = NodeAuthSSHKey(f.read())

node = driver.create_node(name='my-libcloud-node',
                          size=size,
                          location=location,
                          image=image,
                          auth=pubkey)

driver.wait_until_running([node])

print(node)
print(node.state)

script = ScriptDeployment('touch STRATUSLAB_WAS_HERE && echo deployed')
deployed = driver.deploy_node(name='my-deployed-node',
                              size=size,
                              location=location,
                              image=image,
                              auth=pubkey,
                              ssh_key=ssh_private_key_path,
                              deploy=script)
print(deployed.state)
print(script.stdout.strip())

for n in driver.list_nodes():
    print('%%s -- %%s' %% (n.id, n.name))

# Kill the nodes.
node.destroy()
deployed.destroy()
'''


def test_a_1406_example_script_runs_unchanged(two_clouds_config, second_cloud, tmp_path, key_factory):
    key = key_factory("ed25519", name="id_key")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_key").write_text(key.private_text)
    (home / ".ssh" / "id_key").chmod(0o600)
    (home / ".ssh" / "id_key.pub").write_text(key.public_line + "\n")
    image = next(image for image in second_cloud_images(two_clouds_config) if image.extra["os"] == "Ubuntu")
    script = tmp_path / "libcloud_demo.py"
    script.write_text(EXAMPLE % {"image": image.id})
    env = dict(os.environ, HOME=str(home), STRATUSLAB_USER_CONFIG=two_clouds_config)
    env.pop("PYTHONWARNINGS", None)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines.count("running") == 2, out.stdout  # after wait_until_running, and after deploy_node
    assert "deployed" in lines
    # Python shows the DeprecationWarnings of __main__: both say what to write instead.
    assert "stratuslab.libcloud.compute_driver is the module of the StratusLab 14.06 driver" in out.stderr
    assert "set_driver('stratuslab', 'stratuslab.libcloud.compute_driver', 'StratusLabNodeDriver') is no " \
           "longer needed" in out.stderr
    assert "libcloud_demo.py" in out.stderr  # attributed to the script's own lines
    # Both nodes went to the second cloud, and are gone again.
    second = client_driver(two_clouds_config)
    assert [n for n in second.list_nodes(ex_location="second") if n.name.startswith("my-")] == []


def second_cloud_images(config):
    return client_driver(config).list_images(location="second")


def client_driver(config):
    from libcloud.compute.providers import get_driver

    return get_driver("stratuslab")("first", stratuslab_user_config=config)


@pytest.mark.parametrize("key", ["unused-key", None, "", "default"])
def test_a_key_that_is_not_a_section_is_ignored(two_clouds_config, key):
    driver = client_driver(two_clouds_config).__class__(key, stratuslab_user_config=two_clouds_config)
    assert driver.config.default_location == "first"  # the file's selected_section


def test_a_key_that_names_a_section_selects_it(two_clouds_config):
    driver = client_driver(two_clouds_config).__class__("second", stratuslab_user_config=two_clouds_config)
    assert driver.default_location.id == "second"


def test_the_module_path_warns_once_and_offers_the_1406_classes():
    sys.modules.pop("stratuslab.libcloud.compute_driver", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import stratuslab.libcloud.compute_driver as old

    from stratuslab_lc_plugin.driver import StratusLabNode, StratusLabNodeDriver, StratusLabNodeSize

    assert (old.StratusLabNodeDriver, old.StratusLabNode, old.StratusLabNodeSize) == (
        StratusLabNodeDriver, StratusLabNode, StratusLabNodeSize)
    (warning,) = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert "get_driver('stratuslab')" in str(warning.message)
    assert warning.filename == __file__  # the import line, not importlib's


# -- every public name of the 14.06 classes ------------------------------------------------

NAMES_OF_1406 = r"""
import ast, inspect, json
import stratuslab.libcloud.compute_driver as module
tree = ast.parse(inspect.getsource(module))
names = {}
for cls in tree.body:
    if not isinstance(cls, ast.ClassDef):
        continue
    found = set()
    for item in cls.body:
        if isinstance(item, ast.FunctionDef):
            found.add(item.name)
        elif isinstance(item, ast.Assign):
            found.update(t.id for t in item.targets if isinstance(t, ast.Name))
    for sub in ast.walk(cls):
        if isinstance(sub, ast.Assign):
            for t in sub.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    found.add(t.attr)
    names[cls.name] = sorted(n for n in found if not n.startswith("_"))
print(json.dumps(names))
"""


@pytest.fixture(scope="module")
def names_of_1406(legacy, cloud):
    out = subprocess.run([legacy.python, "-c", NAMES_OF_1406], env=legacy.env(cloud.ca_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def objects(driver):
    """An instance of each 14.06 class, made by our driver."""
    node = driver.create_node(name="names-1406", size="t1.micro", image=driver.list_images()[0])
    driver.wait_until_running([node], wait_period=0.05, timeout=60)
    yield {"StratusLabNodeDriver": driver, "StratusLabNode": node, "StratusLabNodeSize": driver.list_sizes()[0]}
    driver.destroy_node(node)


def test_every_public_name_of_the_1406_classes_exists_or_names_its_replacement(names_of_1406, objects):
    assert set(names_of_1406) == set(objects)
    assert sum(len(names) for names in names_of_1406.values()) > 30  # the parse found them
    for cls_name, names in names_of_1406.items():
        instance = objects[cls_name]
        for name in names:
            try:
                value = getattr(instance, name)
            except AttributeError as exc:
                assert "use " in str(exc), "%s.%s: %s" % (cls_name, name, exc)
                continue
            if name in ("get_vm_info", "get_config_section"):
                with pytest.raises(AttributeError, match="use driver"):
                    value(None, None) if name == "get_config_section" else value()


def test_the_1406_names_keep_their_meaning(objects, driver):
    node, size = objects["StratusLabNode"], objects["StratusLabNodeSize"]
    assert set(driver.locations) == {loc.id for loc in driver.list_locations()}
    assert all(isinstance(loc, NodeLocation) for loc in driver.locations.values())
    assert [s.id for s in driver.sizes] == [s.id for s in driver.list_sizes()]
    assert driver.default_location.id == driver.config.default_location
    assert {n.id for n in driver.list_nodes_in_location(driver.default_location)} == {n.id for n in driver.list_nodes()}
    assert uuid.UUID(driver.get_uuid()).version == 4
    assert driver.get_uuid() != driver.get_uuid()  # a fresh random UUID each time
    assert (size.cpu, size.extra["cpu"]) == (1, 1)
    assert node.location.id == node.extra["location"] and node.host == node.extra["host"] == "localhost"
    assert node.get_node_state() == NodeState.RUNNING and node.cached_state == NodeState.RUNNING
    with pytest.raises(AttributeError, match="there is no default any more: use the location's marketplace_endpoint"):
        driver.DEFAULT_MARKETPLACE_URL
    assert driver.RDF_RDF == "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}RDF"


def test_list_volumes_takes_the_1406_location_argument(driver):
    location = driver.default_location
    assert [v.id for v in driver.list_volumes(location=location)] == [v.id for v in driver.list_volumes(ex_location=location)]
    with pytest.raises(ValueError, match="give one"):
        driver.list_volumes(location="a", ex_location="b")
