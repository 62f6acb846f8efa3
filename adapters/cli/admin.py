"""Commands that run or inspect Baton itself: ``serve``, ``ui``, ``harness``, ``schema`` and
``projections status|rebuild`` (the last two run locally, on the store of the settings)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

from baton.adapters import contract
from baton.adapters.cli.common import (
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
    CliError,
    Output,
    close_client,
    connect,
    run_async,
    settings_of,
)
from baton.adapters.config import Settings
from baton.domain import commands as c


def cmd_serve(args: argparse.Namespace) -> int:
    from baton.adapters import logs
    from baton.adapters.bootstrap import serve

    logs.configure("INFO")
    settings = settings_of(args)
    try:
        asyncio.run(serve(settings))
    except (RuntimeError, OSError) as error:
        raise CliError(f"error: cannot serve: {error}", EXIT_SERVER) from None
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    """Serves the web dashboard for the deployment at --nats (read-only)."""
    from baton.adapters.ui import DEFAULT_ADDR, Dashboard, parse_addr, run_dashboard

    logging.basicConfig(
        level=os.environ.get("BATON_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = settings_of(args)
    addr = args.addr or settings.ui_addr or DEFAULT_ADDR
    try:
        parse_addr(addr)
    except ValueError as error:
        raise CliError(f"error: --addr: {error}") from None

    def ready(dashboard: Dashboard) -> None:
        print(
            f"dashboard on {dashboard.url} for NATS at {dashboard.link.server} "
            f"(prefix {settings.subject_prefix}); Ctrl-C to stop",
            flush=True,
        )

    try:
        asyncio.run(run_dashboard(settings, addr, on_ready=ready))
    except OSError as error:
        raise CliError(
            f"error: cannot serve the dashboard on {addr}: {error.strerror or error}", EXIT_SERVER
        ) from None
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Every instance's counts and figures (lag, backlogs) from $SRV.INFO and $SRV.STATS."""
    from baton.adapters.client import BatonClient
    from baton.adapters.status import gather, table

    async def body(client: BatonClient, out: Output) -> int:
        prefix = None if args.all else client.prefix
        instances = await gather(client.nc, prefix, wait=args.wait)
        out.reply(instances, lambda value, _style: table(value))
        return EXIT_OK if instances else EXIT_SERVER

    return run_async(args, body)


def cmd_harness(args: argparse.Namespace) -> int:
    """Runs the property-based state machine over NATS; exit 1 on a contract break."""
    from baton.adapters.harness import run_harness

    settings = settings_of(args)
    report = run_harness(
        settings.nats_url,
        settings.subject_prefix,
        args.examples,
        steps=args.steps,
        timeout=args.timeout,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(report), ensure_ascii=False), flush=True)
    else:
        print(report.summary(), flush=True)
    return EXIT_OK if report.ok else EXIT_SERVER


def cmd_schema(args: argparse.Namespace) -> int:
    from baton.adapters import schema

    prefix = args.prefix or Settings.from_env().subject_prefix
    if args.out is None:
        print(schema.dumps(schema.asyncapi(prefix)), end="")
        return EXIT_OK
    written = schema.write_documents(Path(args.out), prefix)
    out = Output(args.json)
    if args.json:
        out.json([str(p) for p in written])
    else:
        out.line(f"wrote {len(written)} files under {args.out}: asyncapi.json, schemas/*.json")
    return EXIT_OK


def cmd_projections(args: argparse.Namespace) -> int:
    """Status and rebuild run locally against the store Settings name (BATON_DATA_DIR or
    BATON_POSTGRES_URL): the service exposes no admin subject."""
    settings = settings_of(args)
    out = Output(args.json)
    if args.action == "rebuild" and not args.force:
        from baton.adapters.natsserver import nats_answers

        if nats_answers(settings.nats_url, timeout=0.5) and _service_answers(args):
            raise CliError(
                "error: a Baton service answers on this prefix; stop it before a rebuild "
                "(or pass --force if it uses another store)",
                EXIT_USAGE,
            )
    if not settings.postgres_url:
        events = (settings.data_dir / "events.sqlite").resolve()
        if not events.exists():  # opening would create an empty store and report 0 of 0
            raise CliError(
                f"error: no Baton store here: looked for {events} and found nothing; run where "
                "`baton serve` keeps its data, or set BATON_DATA_DIR (or BATON_POSTGRES_URL)",
                EXIT_USAGE,
            )
    try:
        from baton.adapters.bootstrap import open_store

        app, projections = open_store(settings)
    except Exception as error:
        raise CliError(f"error: cannot open the store: {error}", EXIT_SERVER) from None
    try:
        if args.action == "status":
            reply = {**projections.lag(), "store": _store_name(settings)}
            out.reply(
                reply,
                lambda r, s: (
                    f"projections: applied {r['applied']} of {r['stored']} events, "
                    f"{r['behind']} behind (store {r['store']})"
                ),
            )
        else:
            started = time.monotonic()
            applied = projections.rebuild()
            reply = {
                "rebuilt": True,
                "applied": applied,
                "seconds": round(time.monotonic() - started, 3),
                "store": _store_name(settings),
            }
            out.reply(
                reply,
                lambda r, s: (
                    f"projections rebuilt: {r['applied']} events applied in "
                    f"{r['seconds']} s (store {r['store']})"
                ),
            )
    finally:
        for closeable in (projections, app):
            close = getattr(closeable, "close", None)
            if callable(close):
                close()
    return EXIT_OK


def _store_name(settings: Settings) -> str:
    if settings.postgres_url:
        return "postgres"
    return str((settings.data_dir / "events.sqlite").resolve())


def _service_answers(args: argparse.Namespace) -> bool:
    from baton.adapters.client import BatonRequestError

    async def probe() -> bool:
        try:
            client = await connect(args)
        except CliError:
            return False
        try:
            await client.request(contract.subject_of(c.TasksQuery), {"limit": 1}, timeout=1.0)
            return True
        except BatonRequestError as error:
            return error.reason not in ("no_responders", "timeout")
        finally:
            await close_client(client)

    return asyncio.run(probe())
