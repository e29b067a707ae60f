"""The three StratusLab services of a location, as this driver speaks them.

- :mod:`.connection`: the HTTPS transport every service shares (Libcloud's ``Connection``,
  the driver's ``connectionCls``), with :mod:`.http` (what it mounts under requests) and
  :mod:`.deadline` (the one deadline of a driver call);
- :mod:`.one` (OpenNebula 3.2 XML-RPC behind the one-proxy) with :mod:`.vmtemplate`
  (the VM template sent to ``one.vm.allocate``), :mod:`.pdisk` (persistent disks) and
  :mod:`.marketplace` (image metadata): the calls, their answers read into plain records,
  and their errors mapped;
- :mod:`.pool`: one client per service, location and thread, for one driver.

Nothing here knows Libcloud's Node or StorageVolume: turning records into them is the
driver's business (:mod:`stratuslab_lc_plugin.driver.convert`).
"""
