"""Memory policies: one per module, registered by name, configured by dataclass fields.

Names load on first use (PEP 562): the registry and PolicySpec need no torch, the
policy classes do. ``POLICIES`` imports the built-in policies when it is first read.
"""

from __future__ import annotations

from hermes_policy.lazy import exports_from, lazy_exports

_EXPORTS = exports_from({
    "hermes_policy.policies.registry": ["POLICIES", "make_policy", "register_policy"],
    "hermes_policy.policies.spec": ["PolicySpec", "policy_from_args"],
    "hermes_policy.policies.base": ["Policy", "keep_rows"],
    "hermes_policy.policies.scoring": ["ScoringPolicy"],
    "hermes_policy.policies.full": ["FullPolicy"],
    "hermes_policy.policies.hermes": ["HermesPolicy"],
    "hermes_policy.policies.memstream": ["HermesMemStreamPolicy", "MemStreamPolicy"],
    "hermes_policy.policies.rekv": ["ReKVPolicy"],
    "hermes_policy.policies.sink_window": ["SinkWindowPolicy"],
    "hermes_policy.policies.snapkv": ["SnapKVPolicy"],
    "hermes_policy.policies.uniform": ["UniformPolicy"],
    "hermes_policy.policies.window": ["WindowPolicy"],
})
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
__all__ = sorted(_EXPORTS)
