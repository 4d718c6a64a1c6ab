"""pgolf: a plugin-based benchmark harness for the Parameter Golf challenge.

Packages by role: ``harness.api`` (the plugin API), ``harness.pipeline`` (the run; what
ships), ``harness.datasets``, ``harness.leaderboard`` and ``harness.tools`` (never shipped);
this package does no work at import time so the bundler can inline exactly what a
submission uses.
"""

__version__ = "0.1.0"
