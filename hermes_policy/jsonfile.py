"""Reading user-supplied JSON with one clear error for every way it can be wrong.

Every JSON a user can hand hermes-lab (policy specs, ``--device-map`` files, datasets and
annotation files, recordings' metadata, eval and study resume files, model folders' own JSON)
is parsed here, because Python's parser has two failure modes besides bad syntax that surface
as tracebacks far from the file: nesting deep enough to exhaust the interpreter's stack
(``RecursionError``, in the parser or in any later recursive walk), and integers with more
digits than ``int()`` converts (``ValueError`` from the int-string limit). Both are refused
while parsing, with the file's name, before any value reaches the code that reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hermes_policy.errors import HermesError
from hermes_policy.inputs import check_regular_file

#: deepest nesting accepted: hermes-lab's own files nest at most 6 deep
MAX_DEPTH = 64
#: longest integer accepted, in digits: any count, index or seed hermes-lab reads fits in 20
MAX_INT_DIGITS = 40


def json_safe(x: Any) -> Any:
    """``x`` with every NaN / inf float turned into None (and mapping keys into str), so it dumps as strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


class _Refused(ValueError):
    """A parse hook's refusal (a subclass of ValueError, so it is not mistaken for one of json's)."""


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer with {digits} digits (at most {MAX_INT_DIGITS} are accepted)")
    return int(text)


def _depth(data: Any) -> int:
    """Nesting depth of parsed JSON, counted without recursion (so it cannot itself overflow)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return deepest


def loads_json(text: str | bytes, error: type[HermesError], what: str) -> Any:
    """Parse JSON text; anything wrong with it raises ``error`` naming ``what`` (e.g. "policy spec x.json").

    Refused besides bad syntax: nesting deeper than :data:`MAX_DEPTH`, integers longer than
    :data:`MAX_INT_DIGITS` digits, and bytes that are not UTF-8.
    """
    try:
        data = json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise error(f"{what} is nested too deeply to be a hermes-lab file (at most {MAX_DEPTH} levels)") from None
    except _Refused as e:
        raise error(f"{what} holds {e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} is not valid JSON: {e}") from None
    if _depth(data) > MAX_DEPTH:
        raise error(f"{what} is nested too deeply to be a hermes-lab file (at most {MAX_DEPTH} levels)")
    return data


def read_json(path: str | Path, error: type[HermesError], what: str, expect: type = object) -> Any:
    """Parse the file at ``path``; a missing or unreadable file, bad or hostile JSON, or a top level that is
    not ``expect`` raises ``error``.

    Args:
        what: how to name the file in messages, e.g. "policy spec".
    """
    path = check_regular_file(path, error, what)  # a FIFO would block, a device never end
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"{what} {path} cannot be read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})") from None
    data = loads_json(text, error, f"{what} {path}")
    if not isinstance(data, expect):
        raise error(f"{what} {path} must hold a JSON {expect.__name__}, got {type(data).__name__}")
    return data


__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "json_safe", "loads_json", "read_json"]
