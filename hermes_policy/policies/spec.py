"""PolicySpec: a memory policy as a JSON document.

``hermes-lab derive`` writes one from measurements; ``--spec`` loads one. The
document names a registered policy and its parameters, plus optional
per-layer settings (tier, score parameters, budget share) for policies that
use them, and free-form provenance.

.. code-block:: json

    {"format": "hermes-lab/policy-spec", "version": 1,
     "policy": "sink-window", "params": {"budget": 512},
     "layers": null, "source": {"method": "manual"}}

Every command reads a spec through :meth:`PolicySpec.load`, which checks it
against one schema (:func:`check_spec`) before anything runs: the top-level
keys and their types, a registered ``policy``, ``params`` keys that are fields
of that policy with values of the field's type (and range, for the fields in
:data:`PARAM_RULES`), and ``layers`` entries (:func:`check_layers`). Each
failure is one :class:`~hermes_policy.errors.PolicyError` that names the file
and the field, e.g. ``spec runs/p.json: layers[3].alpha must be a number in
[0, 1], got "0.5"``. How many layers the model has is known only once it
loads; the policy checks that count then.
"""

from __future__ import annotations

import json
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hermes_policy.atomic import atomic_write_json
from hermes_policy.errors import BudgetError, PolicyError
from hermes_policy.jsonfile import read_json
from hermes_policy.policies.registry import POLICIES, make_policy

if TYPE_CHECKING:
    from hermes_policy.policies.base import Policy

FORMAT = "hermes-lab/policy-spec"
VERSION = 1
#: the keys a spec may have at its top level
TOP_LEVEL_KEYS = ("format", "version", "policy", "params", "layers", "source")
#: the keys a per-layer entry may have (``layer`` and ``heads`` are provenance, written by ``derive``)
LAYER_KEYS = ("layer", "tier", "alpha", "k", "budget_share", "heads")
#: HERMES's memory tiers, shallow to deep; each layer of a spec names one (the policy reads them from here)
TIERS = ("sensory", "working", "long-term")


# ------------------------------------------------------------------ helpers
def show(value: Any) -> str:
    """A value as a message quotes it: JSON (``"0.5"``, ``true``, ``null``), shortened if long."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fail(where: str, name: str, must: str, value: Any) -> PolicyError:
    return PolicyError(f"{where}: {name} must be {must}, got {show(value)}")


# ----------------------------------------------------------- param schema
def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda x: _is_int(x) and x >= low


def _number_in(low: float, high: float, open_low: bool = False) -> Callable[[Any], bool]:
    return lambda x: _is_number(x) and (low < x if open_low else low <= x) and x <= high


def _is_gamma(x: Any) -> bool:
    return (isinstance(x, dict) and set(x) == set(TIERS)
            and all(_is_number(g) and 0 <= g <= 1 for g in x.values()))


#: value rules of policy parameters, by field name (a None the field's type allows is not checked here)
PARAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "budget": (_int_at_least(1), "a positive integer (video tokens per layer)"),
    "sink_tokens": (_int_at_least(0), "a non-negative integer"),
    "retrieve_frames": (_int_at_least(1), "a positive integer (frames)"),
    "window": (_int_at_least(1), "a positive integer"),
    "pool": (_int_at_least(1), "a positive integer"),
    "min_keep": (_int_at_least(1), "a positive integer (tokens per frame)"),
    "patch_budget": (_int_at_least(1), "a positive integer (tokens per frame) or null"),
    "thumb_size": (lambda x: _is_int(x) and 8 <= x <= 1024, "an integer in [8, 1024] (pixels)"),
    "beta": (_number_in(0, 1), "a number in [0, 1]"),
    "tau": (_number_in(-1, 1, open_low=True), "a number in (-1, 1] or null"),
    "merge_tau": (_number_in(-1, 1, open_low=True), "a number in (-1, 1] or null"),
    "gamma": (_is_gamma, "an object giving a weight in [0, 1] for each of sensory, working, long-term"),
}


def _matches(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a field's type annotation (unknown annotations accept anything)."""
    if tp is Any or tp is object:
        return True
    if tp is type(None) or tp is None:
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value)
    if tp is float:
        return _is_number(value)
    if tp is str:
        return isinstance(value, str)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return False
        if len(args) == 2:
            return all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
        return True
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is list and len(args) == 1:
            return all(_matches(v, args[0]) for v in value)
        return True
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _describe(tp: Any) -> str:
    if tp is type(None) or tp is None:
        return "null"
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(_describe(a) for a in typing.get_args(tp)))
    if origin is typing.Literal:
        return "one of " + ", ".join(show(a) for a in typing.get_args(tp))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    if origin is dict or tp is dict:
        return "an object"
    if origin in (list, tuple) or tp in (list, tuple):
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _field_types(cls: type) -> dict[str, Any]:
    """The constructor fields of a policy class and their (evaluated) annotations; Any where unknown."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError, AttributeError, SyntaxError):
        # some annotation names what only type checkers import: evaluate field by field
        hints = {}
        for f in fields(cls):
            owner = next((k for k in cls.__mro__ if f.name in getattr(k, "__annotations__", {})), cls)
            try:
                hints[f.name] = eval(f.type, vars(sys.modules[owner.__module__])) if isinstance(f.type, str) \
                    else f.type
            except (NameError, TypeError, AttributeError, SyntaxError):
                hints[f.name] = Any
    return {f.name: hints.get(f.name, Any) for f in fields(cls) if f.init}


def check_params(policy: str, params: Any, where: str = "spec") -> None:
    """Check ``params`` against the fields of the registered policy ``policy``; raise PolicyError naming the field."""
    if not isinstance(params, dict):
        raise _fail(where, "params", "an object of the policy's parameters", params)
    cls = POLICIES[policy]
    types_ = _field_types(cls)
    known = sorted(n for n in types_ if n != "layers")
    for name, value in params.items():
        if name == "layers" and "layers" in types_:
            raise PolicyError(f"{where}: params.layers: per-layer settings go in the top-level \"layers\" list")
        if name not in types_ or name == "layers":
            raise PolicyError(f"{where}: params has unknown key {show(name)}; policy {policy!r} takes "
                              f"{', '.join(known) or 'no parameters'}")
        tp = types_[name]
        rule = PARAM_RULES.get(name)
        if value is None and _matches(None, tp):
            continue
        if rule is not None and _matches(value, tp):
            ok, must = rule
            if not ok(value):
                raise _fail(where, f"params.{name}", must, value)
        elif not _matches(value, tp):
            must = rule[1] if rule is not None else _describe(tp)
            raise _fail(where, f"params.{name}", must, value)


# ----------------------------------------------------------- layer schema
def check_layers(layers: Any, where: str = "spec", name: str = "layers") -> None:
    """Check per-layer settings ``[{tier, alpha, k, budget_share}, ...]``; raise PolicyError naming the entry.

    ``tier`` is one of sensory, working, long-term; ``alpha`` in [0, 1]; ``k`` a number >= 0, or null
    when ``alpha`` is 0 (no recency is mixed in); ``budget_share`` (optional) a number >= 0. ``layer`` (an
    index) and ``heads`` (a tier per head) are optional provenance. Whether there is one entry per
    decoder layer is checked once the model is known.
    """
    tiers = TIERS
    if not isinstance(layers, list):
        raise _fail(where, name, "a list of objects, one per decoder layer (or null)", layers)
    if not layers:
        raise PolicyError(f"{where}: {name} is an empty list; give one entry per decoder layer, or null")
    for i, entry in enumerate(layers):
        at = f"{name}[{i}]"
        if not isinstance(entry, dict):
            raise _fail(where, at, "an object with tier, alpha, k and budget_share", entry)
        unknown = [k for k in entry if k not in LAYER_KEYS]
        if unknown:
            raise PolicyError(f"{where}: {at} has unknown key {show(unknown[0])}; "
                              f"a layer entry has {', '.join(LAYER_KEYS)}")
        if "tier" not in entry:
            raise PolicyError(f"{where}: {at}.tier is missing; give one of {', '.join(tiers)}")
        if not isinstance(entry["tier"], str) or entry["tier"] not in tiers:
            raise _fail(where, f"{at}.tier", f"one of {', '.join(tiers)}", entry["tier"])
        if "alpha" not in entry:
            raise PolicyError(f"{where}: {at}.alpha is missing; give a number in [0, 1]")
        alpha = entry["alpha"]
        if not (_is_number(alpha) and 0 <= alpha <= 1):
            raise _fail(where, f"{at}.alpha", "a number in [0, 1]", alpha)
        k = entry.get("k")
        if k is None:
            if alpha > 0:
                raise PolicyError(f"{where}: {at}.k must be a number >= 0 since alpha > 0 mixes in recency, "
                                  f"got {show(k)}")
        elif not (_is_number(k) and k >= 0):
            raise _fail(where, f"{at}.k", "a number >= 0 (or null when alpha is 0)", k)
        if "budget_share" in entry and not (_is_number(entry["budget_share"]) and entry["budget_share"] >= 0):
            raise _fail(where, f"{at}.budget_share", "a number >= 0", entry["budget_share"])
        if "layer" in entry and not (_is_int(entry["layer"]) and entry["layer"] >= 0):
            raise _fail(where, f"{at}.layer", "a layer index (an integer >= 0)", entry["layer"])
        heads = entry.get("heads")
        if heads is not None and not (isinstance(heads, list) and all(isinstance(h, str) and h in tiers
                                                                      for h in heads)):
            raise _fail(where, f"{at}.heads", f"a list of tiers ({', '.join(tiers)}), one per head", heads)
    shares = [e["budget_share"] for e in layers if "budget_share" in e]
    if len(shares) == len(layers) and sum(shares) <= 0:
        raise PolicyError(f"{where}: {name}: the budget shares must sum to a positive number")
    named = [(i, e["layer"]) for i, e in enumerate(layers) if "layer" in e]
    for (i, a), (j, b) in zip(named, named[1:]):
        if b <= a:  # one entry per decoder layer, shallow to deep
            raise PolicyError(f"{where}: {name}[{j}].layer is {b}, after {name}[{i}].layer {a}: each entry names "
                              "its own decoder layer, in depth order (a layer twice, or out of order)")


def check_layers_fit(layers: list[dict], adapter, where: str = "spec", name: str = "layers") -> None:
    """The per-layer settings against the model they are about to run on; PolicyError naming the mismatch.

    One entry per cache layer (decoder layers with attention), each entry's ``layer`` (when given) that
    decoder layer, and each ``heads`` list one tier per query head.
    """
    kv = list(adapter.kv_layers)
    if len(layers) != len(kv):
        raise PolicyError(f"{where}: {name} describes {len(layers)} layers but {adapter.name} has {len(kv)} "
                          "with attention")
    for i, (entry, model_layer) in enumerate(zip(layers, kv)):
        if "layer" in entry and entry["layer"] != model_layer:
            raise PolicyError(f"{where}: {name}[{i}].layer is {entry['layer']}, but {adapter.name}'s attention "
                              f"layer {i} is decoder layer {model_layer} (a spec derived from another model?)")
        heads = entry.get("heads")
        if heads is not None and len(heads) != adapter.num_heads:
            raise PolicyError(f"{where}: {name}[{i}].heads has {len(heads)} tiers but {adapter.name} has "
                              f"{adapter.num_heads} heads per layer")


# ------------------------------------------------------------ spec schema
def check_spec(data: Any, where: str = "spec") -> None:
    """Check a spec document (a parsed JSON object) against the schema; raise PolicyError naming the field.

    Args:
        where: how messages name the spec, e.g. ``"spec runs/p.json"``.
    """
    if not isinstance(data, dict):
        raise _fail(where, "the spec", "a JSON object", data)
    if data.get("format") != FORMAT:
        raise PolicyError(f"{where}: not a policy spec (\"format\" must be {show(FORMAT)}, "
                          f"got {show(data.get('format'))})")
    version = data.get("version")
    if not _is_int(version) or version != VERSION:
        raise PolicyError(f"{where}: policy spec version {show(version)} is not supported (expected {VERSION})")
    unknown = [k for k in data if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise PolicyError(f"{where}: unknown key {show(unknown[0])}; a spec has {', '.join(TOP_LEVEL_KEYS)}")
    available = ", ".join(sorted(POLICIES))
    if "policy" not in data:
        raise PolicyError(f"{where}: \"policy\" is missing; name one of: {available}")
    policy = data["policy"]
    if not isinstance(policy, str) or not policy:
        raise _fail(where, "policy", f"a non-empty policy name (one of: {available})", policy)
    if policy not in POLICIES:
        raise PolicyError(f"{where}: unknown policy {show(policy)}; available: {available}")
    params = data.get("params")
    check_params(policy, {} if params is None else params, where)
    layers = data.get("layers")
    if layers is not None:
        if "layers" not in _field_types(POLICIES[policy]):
            raise PolicyError(f"{where}: layers: policy {policy!r} takes no per-layer settings; "
                              "set \"layers\" to null")
        check_layers(layers, where)
    source = data.get("source")
    if source is not None and not isinstance(source, dict):
        raise _fail(where, "source", "an object (provenance) or null", source)


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
    #: how messages name this spec ("spec FILE" once loaded from a file)
    where: ClassVar[str] = "spec"

    def __post_init__(self) -> None:
        # the policy name is checked when the spec is built (or loaded), not here, so a spec
        # can be written and inspected by tools that do not run it
        if not isinstance(self.policy, str) or not self.policy:
            raise _fail("spec", "policy", "a non-empty policy name", self.policy)
        if not isinstance(self.params, dict):
            raise _fail("spec", "params", "an object of the policy's parameters", self.params)
        if self.layers is not None and (not isinstance(self.layers, list)
                                        or not all(isinstance(x, dict) for x in self.layers)):
            raise _fail("spec", "layers", "a list of objects, one per decoder layer (or null)", self.layers)
        if not isinstance(self.source, dict):
            raise _fail("spec", "source", "an object (provenance)", self.source)

    def validate(self) -> None:
        """Check the spec against the schema (:func:`check_spec`): raises PolicyError naming the field."""
        check_spec({"format": FORMAT, "version": VERSION, "policy": self.policy, "params": self.params,
                    "layers": self.layers, "source": self.source}, self.where)  # no deep copy, unlike to_dict

    def build(self, budget: int | None = None) -> Policy:
        """The policy, after :meth:`validate`; ``budget`` (e.g. ``--budget``) replaces the spec's own."""
        self.validate()
        params = dict(self.params)
        if self.layers is not None:
            params["layers"] = self.layers
        if budget is not None:
            params["budget"] = budget
        try:
            return make_policy(self.policy, **params)
        except (PolicyError, BudgetError) as e:
            # a spec value the policy itself refuses: say which spec (a refused override is the caller's)
            if self.where == "spec" or (budget is not None and isinstance(e, BudgetError)):
                raise
            raise type(e)(f"{self.where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "spec") -> PolicySpec:
        """The spec of a parsed document, checked against the schema (``where`` names it in messages)."""
        check_spec(data, where)
        spec = cls(
            policy=data["policy"],
            params=data.get("params") or {},
            layers=data.get("layers"),
            source=data.get("source") or {},
        )
        spec.where = where
        return spec

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash never leaves a truncated spec behind."""
        atomic_write_json(path, self.to_dict(), PolicyError)

    @classmethod
    def load(cls, path: str | Path) -> PolicySpec:
        """Read and check a spec file; every way it can be wrong is one PolicyError naming the file."""
        path = Path(path)
        if path.is_dir():
            raise PolicyError(f"policy spec {path} is a directory; give the spec's JSON file")
        try:
            data = read_json(path, PolicyError, "policy spec", expect=dict)
        except OSError as e:  # unreadable: permissions, a special file, ...
            raise PolicyError(f"policy spec {path} cannot be read: {e.strerror or e}") from None
        return cls.from_dict(data, f"spec {path}")


def policy_from_args(name: str, budget: int | None, spec: str | Path | None = None,
                     granularity: str | None = None) -> Policy:
    """A policy as the CLI takes it: ``--policy NAME [--budget N] [--spec FILE] [--granularity G]``.

    A spec builds its own policy and ``--budget`` overrides (or supplies) its budget;
    without a spec, ``full`` takes no budget and every other policy takes ``--budget``.
    ``granularity`` (``layer`` / ``head``) overrides the policy's cache layout; a policy that has only
    one refuses the other (PolicyError).
    """
    if spec is not None:
        policy = PolicySpec.load(spec).build(budget)
    else:
        policy = make_policy(name) if budget is None else make_policy(name, budget=budget)
    if granularity is not None and granularity != policy.granularity:
        policy = replace(policy, granularity=granularity)  # re-validated in __post_init__
    return policy
