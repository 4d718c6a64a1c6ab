"""pgolf: a plugin-based benchmark harness for the Parameter Golf challenge.

Import from the submodules (``harness.config``, ``harness.hookspecs``, ``harness.runner``):
this package does no work at import time so the bundler can inline exactly what a
submission uses.
"""

__version__ = "0.1.0"
