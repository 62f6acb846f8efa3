"""Compact JSON for the hot paths (views, replies, published messages): orjson when installed.

orjson writes the same JSON values as ``json.dumps(..., separators=(",", ":"),
ensure_ascii=False)`` several times faster. Where it refuses a value the standard library
accepts (an integer beyond 64 bits, a non-string dict key), or is not installed, the standard
library answers. One difference: a non-finite float (NaN, Infinity, which a request body may
carry and pydantic accepts) is written as ``null``, valid JSON, where ``json.dumps`` writes
the non-JSON tokens ``NaN`` / ``Infinity`` that strict parsers (and orjson) refuse.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

try:  # pragma: no cover - which branch runs depends on the environment
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]

Default = Callable[[Any], Any]

_separators = (",", ":")


def _std_dumps(value: Any, default: Default | None) -> str:
    return json.dumps(value, separators=_separators, ensure_ascii=False, default=default)


if _orjson is not None:
    _dumps = _orjson.dumps
    _loads = _orjson.loads
    _EncodeError = _orjson.JSONEncodeError
    _DecodeError = _orjson.JSONDecodeError

    def dumps_bytes(value: Any, default: Default | None = None) -> bytes:
        """``value`` as compact UTF-8 JSON bytes."""
        try:
            out: bytes = _dumps(value, default=default)
        except _EncodeError:
            return _std_dumps(value, default).encode()
        return out

    def dumps(value: Any, default: Default | None = None) -> str:
        """``value`` as compact JSON text."""
        try:
            out: bytes = _dumps(value, default=default)
        except _EncodeError:
            return _std_dumps(value, default)
        return out.decode()

    def loads(data: str | bytes) -> Any:
        """The value of a JSON document."""
        try:
            return _loads(data)
        except _DecodeError:
            return json.loads(data)

else:  # pragma: no cover

    def dumps_bytes(value: Any, default: Default | None = None) -> bytes:
        return _std_dumps(value, default).encode()

    def dumps(value: Any, default: Default | None = None) -> str:
        return _std_dumps(value, default)

    def loads(data: str | bytes) -> Any:
        return json.loads(data)


__all__ = ["dumps", "dumps_bytes", "loads"]
