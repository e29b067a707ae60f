"""SSH for ``deploy_node``: keys (:mod:`.keys`), the client that runs Libcloud's deployment
steps (:mod:`.client`), and the connect-and-run part of a deployment (:mod:`.deploy`).

Nothing here imports the driver: these modules are given an address, a port and keys.
"""
