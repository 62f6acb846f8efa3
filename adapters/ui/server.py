"""The dashboard's HTTP side: pages, a JSON API over the contract's queries, and a live feed.

Pages (``/``, ``/tasks/<id>``, ``/queue``, ``/instances``) are one HTML shell whose script draws
the page; the task page is answered with the task's view inside it (one round trip fewer), and
with a real 404 when no such task exists. ``/api/...`` answers JSON: the contract's query replies
as they are, errors as the contract's ``{"error": {...}}`` with its code as the HTTP status, 503
while NATS is unreachable. ``/api/live`` is a Server-Sent Events stream of progress events,
fired triggers and the state of the NATS connection. Read-only: only GET (and HEAD) exist.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from baton.adapters.client import BatonClient, BatonRequestError, BatonUnavailable
from baton.adapters.ui.link import LiveHub, NatsLink

log = logging.getLogger("baton.ui")

STATIC = Path(str(resources.files("baton.adapters.ui") / "static"))
#: How many live items one SSE message carries at most (a burst becomes a few big messages).
BATCH = 500
#: A comment line every so often keeps proxies from closing an idle event stream.
KEEPALIVE_S = 15.0
#: How long the browser waits before reconnecting a dropped event stream.
RETRY_MS = 2000

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

LINK: web.AppKey[NatsLink] = web.AppKey("link", NatsLink)
HUB: web.AppKey[LiveHub] = web.AppKey("hub", LiveHub)
LOOPBACK_ONLY: web.AppKey[bool] = web.AppKey("loopback_only", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotConnected(Exception):
    """NATS is unreachable right now."""


def _client(request: web.Request) -> BatonClient:
    link = request.app[LINK]
    if link.client is None or not link.connected:
        raise NotConnected
    return link.client


def _error(code: int, reason: str, message: str) -> web.Response:
    body = {"error": {"code": code, "reason": reason, "message": message}}
    return web.json_response(body, status=code)


def _json(body: Any) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


# -- pages --------------------------------------------------------------------------------------


def _shell() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


def page(
    name: str,
    *,
    title: str,
    status: int = 200,
    initial: Any = None,
    prefix: str = "baton",
) -> web.Response:
    """The HTML shell for page ``name``, with ``initial`` data for its script (JSON in an inert
    ``<script type="application/json">``, every ``<`` escaped so no text can end it)."""
    data = json.dumps(initial, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    text = (
        _shell()
        .replace("__TITLE__", html.escape(title))
        .replace("__PAGE__", html.escape(name))
        .replace("__PREFIX__", html.escape(prefix))
        .replace("__INITIAL__", data)
    )
    return web.Response(
        text=text, status=status, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def _prefix(request: web.Request) -> str:
    return request.app[LINK].prefix


async def tasks_page(request: web.Request) -> web.Response:
    return page("tasks", title="Tasks", prefix=_prefix(request))


async def queue_page(request: web.Request) -> web.Response:
    return page("queue", title="Queue", prefix=_prefix(request))


async def instances_page(request: web.Request) -> web.Response:
    return page("instances", title="Instances", prefix=_prefix(request))


async def task_page(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    prefix = _prefix(request)
    try:
        view = await _client(request).task(task_id=task_id)
    except NotConnected:
        # The page loads anyway, says NATS is unreachable, and fetches the task when it's back.
        return page("task", title=task_id, status=503, initial={"task_id": task_id}, prefix=prefix)
    except BatonUnavailable:
        return page("task", title=task_id, status=503, initial={"task_id": task_id}, prefix=prefix)
    except BatonRequestError as error:
        if error.code in (400, 404):  # a malformed id names no task either
            return not_found(f"No task {task_id!r} here.", prefix)
        raise
    return page(
        "task",
        title=f"{view.get('task_name') or task_id}",
        initial={"task_id": task_id, "view": view},
        prefix=prefix,
    )


def not_found(message: str, prefix: str) -> web.Response:
    return page(
        "notfound", title="Not found", status=404, initial={"message": message}, prefix=prefix
    )


# -- API ----------------------------------------------------------------------------------------


def _int_param(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps(
                {
                    "error": {
                        "code": 400,
                        "reason": "invalid_request",
                        "message": f"{name} must be an integer",
                    }
                }
            ),
            content_type="application/json",
        ) from None


def _str_param(request: web.Request, name: str) -> str | None:
    return request.query.get(name) or None


async def api_tasks(request: web.Request) -> web.Response:
    reply = await _client(request).tasks(
        status=_str_param(request, "status"),
        session_id=_str_param(request, "session_id"),
        limit=_int_param(request, "limit"),
        after=_str_param(request, "after"),
    )
    return _json(reply)


async def api_task(request: web.Request) -> web.Response:
    return _json(await _client(request).task(task_id=request.match_info["task_id"]))


async def api_history(request: web.Request) -> web.Response:
    reply = await _client(request).history(
        task_id=request.match_info["task_id"], version=_int_param(request, "version")
    )
    return _json(reply)


async def api_queue(request: web.Request) -> web.Response:
    reply = await _client(request).queue(
        session_id=_str_param(request, "session_id"), limit=_int_param(request, "limit")
    )
    return _json(reply)


async def api_instances(request: web.Request) -> web.Response:
    link = request.app[LINK]
    _client(request)
    return _json(
        {"prefix": link.prefix, "server": link.server, "instances": await link.instances()}
    )


async def api_status(request: web.Request) -> web.Response:
    link = request.app[LINK]
    return _json(
        {
            **request.app[HUB].status,
            "prefix": link.prefix,
            "server": link.server,
            "following": link.following,
        }
    )


async def api_live(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``status`` (the NATS connection), ``batch`` (progress events and
    fired triggers, of one task with ``?task=ID``, none with ``?quiet=1``), ``resync`` (refetch:
    something was missed)."""
    hub = request.app[HUB]
    only = request.query.get("task") or None
    quiet = request.query.get("quiet") == "1"
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue = hub.listen()
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        await _send(response, "status", hub.status)
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            items = [item]
            while not queue.empty() and len(items) < BATCH:
                items.append(queue.get_nowait())
            if any(i is None for i in items):
                break  # the dashboard is closing
            await _deliver(response, [i for i in items if i is not None], only, quiet)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.forget(queue)
    return response


async def _deliver(
    response: web.StreamResponse, items: list[dict[str, Any]], only: str | None, quiet: bool
) -> None:
    events: list[dict[str, Any]] = []
    triggers: list[dict[str, Any]] = []
    for item in items:
        kind = item["kind"]
        if kind == "status":
            await _send(response, "status", item["status"])
        elif kind == "resync":
            await _send(response, "resync", {})
        elif kind == "event" and (only is None or item["event"].get("task_id") == only):
            events.append(item["event"])
        elif kind == "trigger" and (only is None or item["trigger"].get("task_id") == only):
            triggers.append(item["trigger"])
    if (events or triggers) and not quiet:
        await _send(response, "batch", {"events": events, "triggers": triggers})


async def _send(response: web.StreamResponse, name: str, data: Any) -> None:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    await response.write(f"event: {name}\ndata: {text}\n\n".encode())


# -- middleware ---------------------------------------------------------------------------------


def _host_allowed(request: web.Request) -> bool:
    """Bound to loopback, the dashboard answers only requests addressed to a loopback name:
    a web page elsewhere cannot read it through a name it rebinds to 127.0.0.1."""
    if not request.app[LOOPBACK_ONLY]:
        return True
    host = request.host
    if host.startswith("["):
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The Host check; contract errors as JSON for the API, as pages elsewhere."""
    api = request.path.startswith("/api/")
    prefix = request.app[LINK].prefix
    if not _host_allowed(request):
        response: web.StreamResponse = web.Response(
            status=403, text=f"Host {request.host!r} not allowed: open the dashboard on 127.0.0.1"
        )
    else:
        try:
            response = await handler(request)
        except NotConnected:
            message = f"no connection to NATS at {request.app[LINK].server}"
            response = _error(503, "nats_unreachable", message)
        except BatonRequestError as error:
            response = _error(error.code, error.reason, error.message)
        except web.HTTPNotFound:
            if api:
                response = _error(404, "not_found", f"no such path: {request.path}")
            else:
                response = not_found(f"Nothing at {request.path}.", prefix)
        except web.HTTPMethodNotAllowed:
            response = _error(405, "read_only", "the dashboard is read-only: only GET")
    return response


def make_app(link: NatsLink, hub: LiveHub, *, loopback_only: bool = True) -> web.Application:
    """The dashboard's aiohttp application over a NATS link."""
    app = web.Application(middlewares=[guard])
    app[LINK] = link
    app[HUB] = hub
    app[LOOPBACK_ONLY] = loopback_only
    app.router.add_get("/", tasks_page)
    app.router.add_get("/tasks/{task_id}", task_page)
    app.router.add_get("/queue", queue_page)
    app.router.add_get("/instances", instances_page)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/tasks", api_tasks)
    app.router.add_get("/api/tasks/{task_id}", api_task)
    app.router.add_get("/api/tasks/{task_id}/history", api_history)
    app.router.add_get("/api/queue", api_queue)
    app.router.add_get("/api/instances", api_instances)
    app.router.add_get("/api/live", api_live)
    app.router.add_static("/static/", STATIC, append_version=False)
    app.on_response_prepare.append(_headers)
    return app


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every response; static files are revalidated on each load (an
    upgraded Baton serves its new scripts at once)."""
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"
