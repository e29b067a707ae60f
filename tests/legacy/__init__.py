"""The original StratusLab 14.06 software (Python 2.7), run unchanged against the local cloud.

``harness`` (Python 3) installs it once into a cache directory and drives it;
``old_driver.py``, ``stratus.py`` and ``offline_resolver.py`` run under Python 2.7.
"""
