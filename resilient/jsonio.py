"""One JSON encoder for every JSON file and document Resilient writes, with one NaN policy.

NaN and the infinities are written as ``null``, as JSON requires (RFC 8259 has no NaN): report.json, the
SBC report (``sbc.json``), ``manifest.json`` of :func:`resilient.sample_many` and :func:`resilient.sbc`, and
the CLI's ``--json`` output all go through :func:`dumps`, so every one is strict JSON that any parser reads
(``json.loads(text, parse_constant=...)`` never sees ``NaN``). Where a non-finite value is itself the news
(a NaN gradient in a preflight finding), the finding's message says it in words; its value is ``null``.

The conversion (:func:`to_jsonable`): mappings become objects with string keys, tuples, lists and sets
become arrays, NumPy scalars and arrays become numbers and (nested) arrays, non-finite floats ``null``,
and anything else JSON has no type for goes through ``default`` (``str`` unless told otherwise).

Dependency rule: numpy and the standard library only.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["to_jsonable", "dumps", "write", "loads"]


def to_jsonable(value: Any, default: Callable[[Any], Any] | None = str) -> Any:
    """``value`` with every non-finite float replaced by None and every container made a JSON one.

    ``default`` converts what JSON has no type for (a Path, a dataclass); None leaves it for
    :func:`json.dumps` to refuse."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, float):  # np.float64 too
        return float(value) if math.isfinite(value) else None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, np.generic):
        return to_jsonable(value.item(), default)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), default)
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item, default) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, default) for item in value]
    if isinstance(value, (set, frozenset)):
        return [to_jsonable(item, default) for item in sorted(value, key=repr)]
    if default is None:
        return value
    converted = default(value)
    return converted if converted is value else to_jsonable(converted, default)


def dumps(value: Any, *, indent: int | None = None, sort_keys: bool = False,
          default: Callable[[Any], Any] | None = str) -> str:
    """``value`` as strict JSON text: NaN and infinities ``null`` (see the module's policy)."""
    return json.dumps(to_jsonable(value, default), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write(path: str | os.PathLike, value: Any, *, indent: int | None = 2, sort_keys: bool = False,
          default: Callable[[Any], Any] | None = str) -> Path:
    """Write ``value`` to ``path`` as strict JSON (UTF-8, a final newline); returns the path."""
    path = Path(path)
    path.write_text(dumps(value, indent=indent, sort_keys=sort_keys, default=default) + "\n", encoding="utf-8")
    return path


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"`{name}` is not JSON (RFC 8259 has no NaN or Infinity); Resilient writes null for them.")


def loads(text: str | bytes) -> Any:
    """Parse strict JSON: ``NaN``, ``Infinity`` and ``-Infinity`` are refused with a ValueError."""
    return json.loads(text, parse_constant=_refuse_constant)
