"""``baton status``: every running instance's ``$SRV.INFO`` and ``$SRV.STATS``, in one table.

Each instance of the micro service ``baton`` answers ``$SRV.INFO.baton`` and ``$SRV.STATS.baton``
(the NATS service protocol, the same replies ``nats micro info|stats baton`` shows). The
requests go out once, with one reply inbox; the replies of every instance are collected until
none came for a short while. An instance's stats ``data`` carries its figures
(``metrics.FIGURES``: projection lag, relay backlog, due triggers, lapsing leases).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client

from baton.adapters.metrics import FIGURES

SERVICE = "baton"


async def _collect(nc: Client, subject: str, wait: float, quiet: float) -> list[dict[str, Any]]:
    """Every reply to one request on ``subject``: until ``wait`` seconds passed, or ``quiet``
    seconds passed without a reply after the first one."""
    inbox = nc.new_inbox()
    replies: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def take(msg: Any) -> None:
        try:
            replies.append(json.loads(msg.data))
        except ValueError:
            return
        arrived.set()

    sub = await nc.subscribe(inbox, cb=take)
    try:
        await nc.publish(subject, b"", reply=inbox)
        await nc.flush()
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), min(left, quiet) if replies else left)
            except TimeoutError:
                if replies:
                    break
    finally:
        await sub.unsubscribe()
    return replies


async def gather(
    nc: Client, prefix: str | None = "baton", *, wait: float = 2.0, quiet: float = 0.3
) -> list[dict[str, Any]]:
    """One entry per instance serving ``prefix`` (every prefix with None): its id, version,
    prefix, endpoints with their counts, totals, and figures; sorted by id."""
    infos, stats = await asyncio.gather(
        _collect(nc, f"$SRV.INFO.{SERVICE}", wait, quiet),
        _collect(nc, f"$SRV.STATS.{SERVICE}", wait, quiet),
    )
    by_id: dict[str, dict[str, Any]] = {}
    for info in infos:
        by_id.setdefault(info["id"], {})["info"] = info
    for stat in stats:
        by_id.setdefault(stat["id"], {})["stats"] = stat
    instances = []
    for instance_id, parts in sorted(by_id.items()):
        info, stat = parts.get("info", {}), parts.get("stats", {})
        metadata = info.get("metadata") or stat.get("metadata") or {}
        if prefix is not None and metadata.get("prefix") != prefix:
            continue
        endpoints = stat.get("endpoints") or []
        requests = sum(int(e.get("num_requests") or 0) for e in endpoints)
        processing = sum(int(e.get("processing_time") or 0) for e in endpoints)
        data = stat.get("data") or {}
        instances.append(
            {
                "id": instance_id,
                "version": info.get("version") or stat.get("version"),
                "prefix": metadata.get("prefix"),
                "started": stat.get("started"),
                "requests": requests,
                "errors": sum(int(e.get("num_errors") or 0) for e in endpoints),
                "average_ms": round(processing / requests / 1e6, 3) if requests else None,
                "figures": {
                    name: data.get(name)
                    for name in (*FIGURES, "in_flight", "nats_server", "sampled_at")
                },
                "endpoints": [
                    {
                        "name": e.get("name"),
                        "subject": e.get("subject"),
                        "num_requests": e.get("num_requests"),
                        "num_errors": e.get("num_errors"),
                        "last_error": e.get("last_error") or "",
                        "average_ms": round(int(e.get("average_processing_time") or 0) / 1e6, 3),
                    }
                    for e in endpoints
                ],
                "answered": sorted(parts),
            }
        )
    return instances


def _uptime(started: str | None, now: datetime | None = None) -> str:
    if not started:
        return "?"
    try:
        when = datetime.strptime(started, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return "?"
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


COLUMNS = (
    "INSTANCE",
    "PREFIX",
    "NATS",
    "UP",
    "REQUESTS",
    "ERRORS",
    "AVG MS",
    "IN FLIGHT",
    "LAG",
    "RELAY BACKLOG",
    "DUE TRIGGERS",
    "LAPSING LEASES",
)


def table(instances: list[dict[str, Any]]) -> str:
    """The instances as a text table, one row each, then the busiest endpoints' errors."""
    if not instances:
        return "no Baton instance answered $SRV.INFO/$SRV.STATS"
    rows = [list(COLUMNS)]
    for i in instances:
        f = i["figures"]
        rows.append(
            [
                i["id"],
                _cell(i["prefix"]),
                _cell(f.get("nats_server")),
                _uptime(i.get("started")),
                str(i["requests"]),
                str(i["errors"]),
                _cell(i["average_ms"]),
                _cell(f.get("in_flight")),
                _cell(f.get("projection_lag")),
                _cell(f.get("relay_backlog")),
                _cell(f.get("due_triggers")),
                _cell(f.get("lapsing_leases")),
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    errors = [
        f"  {i['id']} {e['subject']}: {e['num_errors']} of {e['num_requests']},"
        f" last {e['last_error']}"
        for i in instances
        for e in i["endpoints"]
        if e.get("num_errors")
    ]
    if errors:
        lines += ["", "errors by endpoint:", *errors]
    return "\n".join(lines)


__all__ = ["COLUMNS", "gather", "table"]
