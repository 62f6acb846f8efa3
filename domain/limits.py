"""Size limits of requests, shared by plans and commands."""

from __future__ import annotations

import math
from typing import Any, Final

#: Largest request body, in bytes; larger ones get 413 before being parsed. Half of
#: nats-server's default max_payload (1 MiB), so Baton itself answers oversized requests.
MAX_REQUEST_BYTES: Final = 512 * 1024
MAX_NAME: Final = 256
MAX_TEXT: Final = 64 * 1024
MAX_STEPS: Final = 1000
MAX_ID: Final = 256
#: Most attempts a retry policy may allow a step.
MAX_ATTEMPTS: Final = 100
#: Longest claim lease, in seconds (a day).
MAX_LEASE_S: Final = 86_400.0
#: Headroom kept under the server's ``max_payload`` for headers and a reply's envelope.
MESSAGE_HEADROOM: Final = 4096
#: Deepest nesting accepted in free-form JSON (results, context values, inputs).
MAX_JSON_DEPTH: Final = 32


def check_json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Raises ValueError when ``value`` nests deeper than ``limit`` lists or objects, or holds
    a NaN or an infinity (JSON has no such numbers; they would not read back the same)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (NaN and Infinity are not JSON)")
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            raise ValueError(f"nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)
