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
# What one entry costs besides its value: the dict slot, the key tuple and the result object.
ENTRY_OVERHEAD_BYTES = 200
# Strings longer than this are made every time: a recurring value is short (a company name),
# and a flood of long distinct values must not fill the memo with them.
MAX_MEMO_STRING = 128


class FieldValueMemo(Generic[V]):
    """Calls `make(field, value)` once per distinct pair and returns the same result after.

    A float is keyed by its float32 bytes, the precision the model and the log keep: equal
    values such as 0.0 and -0.0 differ there. The memo is bounded by bytes (an estimate of
    what its entries hold) and is emptied when full, so a flood of distinct values cannot
    grow it without bound; values longer than `MAX_MEMO_STRING` are never kept.
    """

    def __init__(self, make: Callable[[str, Any], V], max_bytes: int) -> None:
        self._make = make
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._results: dict[tuple[str, Hashable], V] = {}

    def __len__(self) -> int:
        return len(self._results)

    def __call__(self, field: str, value: Any) -> V:
        if isinstance(value, float):
            key: tuple[str, Hashable] = (field, _F32.pack(value))
        elif isinstance(value, (str, bytes)) and len(value) > MAX_MEMO_STRING:
            return self._make(field, value)
        else:
            key = (field, value)
        result = self._results.get(key)
        if result is None:
            result = self._make(field, value)
            cost = (
                ENTRY_OVERHEAD_BYTES
                + (len(value) if isinstance(value, (str, bytes)) else 8)
                + (len(result) if isinstance(result, bytes) else 0)
            )
            if self.size_bytes + cost > self.max_bytes:
                self._results.clear()
                self.size_bytes = 0
            self._results[key] = result
            self.size_bytes += cost
        return result
