"""Reading user-supplied JSON files with one clear error for every way they can be wrong."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hermes_policy.errors import HermesError


def json_safe(x: Any) -> Any:
    """``x`` with every NaN / inf float turned into None (and mapping keys into str), so it dumps as strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def read_json(path: str | Path, error: type[HermesError], what: str, expect: type = object) -> Any:
    """Parse ``path``; a missing file, bad JSON or a top level that is not ``expect`` raises ``error``.

    Args:
        what: how to name the file in messages, e.g. "policy spec".
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} is not valid JSON: {e}") from None
    if not isinstance(data, expect):
        raise error(f"{what} {path} must hold a JSON {expect.__name__}, got {type(data).__name__}")
    return data
