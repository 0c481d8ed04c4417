"""hermes_policy: the streaming runtime and its memory policies.

Imports nothing from probes/, analysis/ or dashboard/ (they build on it).

The names below load on first use (PEP 562), so ``import hermes_policy.errors``
or the data helpers do not pay for torch and transformers.
"""

from __future__ import annotations

from hermes_policy.lazy import exports_from, lazy_exports

__version__ = "0.1.0"

_EXPORTS = exports_from({
    "hermes_policy.attention": ["ATTENTION_NAME", "AttentionEvent", "AttentionObserver", "streaming_context"],
    "hermes_policy.cache": ["CompactCache"],
    "hermes_policy.errors": ["BudgetError", "HermesError", "ModelError", "PolicyError", "SessionError",
                             "VideoError"],
    "hermes_policy.models": ["load_model"],
    "hermes_policy.policies": ["POLICIES", "Policy", "PolicySpec", "make_policy"],
    "hermes_policy.session": ["Answer", "SessionConfig", "StreamingSession"],
})
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
__all__ = sorted([*_EXPORTS, "__version__"])
