"""Memory policies: one per module, registered by name, configured by dataclass fields."""

from hermes_policy.policies.base import POLICIES, Policy, keep_rows, make_policy, register_policy
from hermes_policy.policies.full import FullPolicy
from hermes_policy.policies.hermes import HermesPolicy
from hermes_policy.policies.memstream import HermesMemStreamPolicy, MemStreamPolicy
from hermes_policy.policies.rekv import ReKVPolicy
from hermes_policy.policies.scoring import ScoringPolicy
from hermes_policy.policies.sink_window import SinkWindowPolicy
from hermes_policy.policies.snapkv import SnapKVPolicy
from hermes_policy.policies.spec import PolicySpec, policy_from_args
from hermes_policy.policies.uniform import UniformPolicy
from hermes_policy.policies.window import WindowPolicy

__all__ = [
    "POLICIES",
    "FullPolicy",
    "HermesMemStreamPolicy",
    "HermesPolicy",
    "MemStreamPolicy",
    "Policy",
    "PolicySpec",
    "ReKVPolicy",
    "ScoringPolicy",
    "SinkWindowPolicy",
    "SnapKVPolicy",
    "UniformPolicy",
    "WindowPolicy",
    "keep_rows",
    "make_policy",
    "policy_from_args",
    "register_policy",
]
