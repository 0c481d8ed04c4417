"""hermes_policy: the streaming runtime and its memory policies.

Imports nothing from probes/, analysis/ or dashboard/ (they build on it).
"""

from hermes_policy.attention import ATTENTION_NAME, AttentionEvent, AttentionObserver, streaming_context
from hermes_policy.cache import CompactCache
from hermes_policy.errors import BudgetError, HermesError, ModelError, PolicyError, SessionError, VideoError
from hermes_policy.models import load_model
from hermes_policy.policies import POLICIES, Policy, PolicySpec, make_policy
from hermes_policy.session import Answer, SessionConfig, StreamingSession

__version__ = "0.1.0"

__all__ = [
    "ATTENTION_NAME",
    "POLICIES",
    "Answer",
    "AttentionEvent",
    "AttentionObserver",
    "BudgetError",
    "CompactCache",
    "HermesError",
    "ModelError",
    "Policy",
    "PolicyError",
    "PolicySpec",
    "SessionConfig",
    "SessionError",
    "StreamingSession",
    "VideoError",
    "__version__",
    "load_model",
    "make_policy",
    "streaming_context",
]
