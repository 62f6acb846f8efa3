"""Compact JSON for the hot paths: views, replies, published messages, and stored events.

orjson writes the same JSON values as ``json.dumps(..., separators=(",", ":"),
ensure_ascii=False)`` several times faster. Where it refuses a value the standard library
accepts (an integer beyond 64 bits, a non-string dict key), the standard library answers. One
difference: a non-finite float is written as ``null`` (valid JSON) where ``json.dumps`` writes the
non-JSON tokens ``NaN`` / ``Infinity``; requests never carry them (400).

``OrjsonTranscoder`` is eventsourcing's ``JSONTranscoder`` on orjson: the same stored JSON (custom
types as ``{"_type_": name, "_data_": ...}``), read back by either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder

Default = Callable[[Any], Any]

_separators = (",", ":")


def _std_dumps(value: Any, default: Default | None) -> str:
    return json.dumps(value, separators=_separators, ensure_ascii=False, default=default)


def dumps_bytes(value: Any, default: Default | None = None) -> bytes:
    """``value`` as compact UTF-8 JSON bytes."""
    try:
        return orjson.dumps(value, default=default)
    except orjson.JSONEncodeError:
        return _std_dumps(value, default).encode()


def dumps(value: Any, default: Default | None = None) -> str:
    """``value`` as compact JSON text."""
    return dumps_bytes(value, default).decode()


def loads(data: str | bytes) -> Any:
    """The value of a JSON document."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


_CONTAINERS = (dict, list)


class OrjsonTranscoder(JSONTranscoder):
    """Encodes and decodes stored events and snapshots with orjson.

    Datetimes go through the registered transcodings (``OPT_PASSTHROUGH_DATETIME``), as with the
    standard library; everything orjson refuses falls back to the standard library's encoder.
    """

    _OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=self._encode_obj, option=self._OPTIONS)
        except orjson.JSONEncodeError:
            return super().encode(obj)

    def decode(self, data: bytes) -> Any:
        return self._revive(orjson.loads(data))

    def _revive(self, value: Any) -> Any:
        """Turns ``{"_type_", "_data_"}`` objects back into their types, innermost first."""
        if type(value) is dict:
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                data = value["_data_"]
                if type(data) in _CONTAINERS:
                    data = self._revive(data)
                return self._decode_obj({"_type_": value["_type_"], "_data_": data})
            for key, item in value.items():
                if type(item) in _CONTAINERS:
                    value[key] = self._revive(item)
            return value
        if type(value) is list:
            for index, item in enumerate(value):
                if type(item) in _CONTAINERS:
                    value[index] = self._revive(item)
        return value


__all__ = ["OrjsonTranscoder", "dumps", "dumps_bytes", "loads"]
