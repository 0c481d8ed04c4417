"""PolicySpec: a memory policy as a JSON document.

``hermes-lab derive`` writes one from measurements; ``--spec`` loads one. The
document names a registered policy and its parameters, plus optional
per-layer settings (tier, score parameters, budget share) for policies that
use them, and free-form provenance.

.. code-block:: json

    {"format": "hermes-lab/policy-spec", "version": 1,
     "policy": "sink-window", "params": {"budget": 512},
     "layers": null, "source": {"method": "manual"}}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hermes_policy.atomic import atomic_write_json
from hermes_policy.errors import PolicyError
from hermes_policy.jsonfile import read_json
from hermes_policy.policies.registry import POLICIES, make_policy

if TYPE_CHECKING:
    from hermes_policy.policies.base import Policy

FORMAT = "hermes-lab/policy-spec"
VERSION = 1


@dataclass
class PolicySpec:
    """A serialisable policy description.

    Attributes:
        policy: registered policy name.
        params: constructor parameters of that policy.
        layers: optional per-layer settings, one dict per decoder layer.
        source: provenance (method, model, recording, ...).
    """

    policy: str
    params: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the policy name is checked when the spec is built, not here, so a spec
        # can be written and inspected by tools that do not run it
        if not isinstance(self.policy, str) or not self.policy:
            raise PolicyError("spec 'policy' must be a non-empty policy name")
        if self.layers is not None and not all(isinstance(x, dict) for x in self.layers):
            raise PolicyError("spec 'layers' must be a list of objects, one per decoder layer")

    def build(self) -> Policy:
        if self.policy not in POLICIES:
            raise PolicyError(f"spec names unknown policy {self.policy!r}; available: {', '.join(sorted(POLICIES))}")
        params = dict(self.params)
        if self.layers is not None:
            params["layers"] = self.layers
        return make_policy(self.policy, **params)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PolicySpec":
        if data.get("format") != FORMAT:
            raise PolicyError(f"not a policy spec (expected format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise PolicyError(f"policy spec version {data.get('version')!r} is not supported (expected {VERSION})")
        return cls(
            policy=data["policy"],
            params=data.get("params") or {},
            layers=data.get("layers"),
            source=data.get("source") or {},
        )

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash never leaves a truncated spec behind."""
        atomic_write_json(path, self.to_dict(), PolicyError)

    @classmethod
    def load(cls, path: str | Path) -> "PolicySpec":
        return cls.from_dict(read_json(path, PolicyError, "policy spec", expect=dict))


def policy_from_args(name: str, budget: int | None, spec: str | Path | None = None) -> Policy:
    """A policy as the CLI takes it: ``--policy NAME [--budget N] [--spec FILE]``.

    A spec builds its own policy and ``--budget`` overrides (or supplies) its budget;
    without a spec, ``full`` takes no budget and every other policy takes ``--budget``.
    """
    if spec is not None:
        loaded = PolicySpec.load(spec)
        if budget is not None:
            loaded.params["budget"] = budget
        return loaded.build()
    return make_policy(name) if budget is None else make_policy(name, budget=budget)
