"""A bounded memo of what the request path makes from one (field, value) pair.

Most values of a trip recur (hours, days, areas, payment types, companies, the coarse
coordinates), so the request path makes what it needs from a pair once, a tensor or an
encoded log entry, and looks it up after that.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

V = TypeVar("V")

_F32 = struct.Struct("<f")


class FieldValueMemo(Generic[V]):
    """Calls `make(field, value)` once per distinct pair and returns the same result after.

    A float is keyed by its float32 bytes, the precision the model and the log keep: equal
    values such as 0.0 and -0.0 differ there. The memo is emptied when it holds `max_size`
    results, so a flood of distinct values cannot grow it without bound.
    """

    def __init__(self, make: Callable[[str, Any], V], max_size: int) -> None:
        self._make = make
        self._max_size = max_size
        self._results: dict[tuple[str, Hashable], V] = {}

    def __call__(self, field: str, value: Any) -> V:
        key = (field, _F32.pack(value) if isinstance(value, float) else value)
        result = self._results.get(key)
        if result is None:
            if len(self._results) >= self._max_size:
                self._results.clear()
            result = self._results[key] = self._make(field, value)
        return result
