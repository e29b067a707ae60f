"""What users' own tests import: local StratusLab clouds and clean-up after each test.

With pytest, installing the package is enough: its plugin (:mod:`.pytest_plugin`) offers
the ``stratuslab_cloud``, ``stratuslab_driver`` and ``stratuslab_config`` fixtures. Without
pytest, :func:`local_cloud` and :func:`nothing_left_behind` do the same::

    from stratuslab_lc_plugin.testing import local_cloud

    with local_cloud() as cloud:   # STRATUSLAB_USER_CONFIG names its configuration meanwhile
        driver = get_driver('stratuslab')('default')

Importing this package imports only the standard library.
"""

from stratuslab_lc_plugin.testing.clouds import (
    DEFAULT_DELAY,
    LeftBehindError,
    driver_for,
    local_cloud,
    nothing_left_behind,
)

__all__ = ["DEFAULT_DELAY", "LeftBehindError", "driver_for", "local_cloud", "nothing_left_behind"]
