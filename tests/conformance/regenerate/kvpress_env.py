"""Scratch only: import kvpress's SnapKV press modules from the mirror without running kvpress/__init__ (which
pulls in every press and their extra dependencies)."""
import os

#: the scratch folder outside the project: src/<owner+repo> (git archive of each mirror), tf444, out
SCRATCH = os.environ.get("CONFORMANCE_SCRATCH", "/tmp/conf")

import sys
import types

ROOT = os.path.join(SCRATCH, "src", "NVIDIA+kvpress", "kvpress")
for name, path in (("kvpress", ROOT), ("kvpress.presses", ROOT + "/presses")):
    mod = types.ModuleType(name)
    mod.__path__ = [path]
    sys.modules[name] = mod
from kvpress.presses.scorer_press import ScorerPress  # noqa: F401
from kvpress.presses.snapkv_press import SnapKVPress  # noqa: F401
