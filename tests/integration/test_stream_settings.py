"""Stream settings for a cluster: replicas and retention applied when the streams are created,
reconciled at every start, and a change NATS refuses reported by name; several server URLs.

Each test uses its own subject prefix, hence its own streams, on the session's nats-server (a
single node: asking it for three replicas is the natural impossible request).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from baton.adapters.client import BatonClient
from baton.adapters.config import SettingError, Settings, parse_duration
from baton.adapters.natsserver import free_port
from baton.adapters.publication import (
    DUPLICATE_WINDOW_S,
    StreamPolicy,
    StreamSettingsError,
    ensure_streams,
    stream_names,
)
from tests.integration.nats_support import running_baton, settings_for
from tests.plans import seq


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[Any]:
    """JetStream without Baton's streams (the ``prefix`` fixture names them)."""
    nc = await nats.connect(nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


def test_settings_read_durations_replicas_and_several_urls() -> None:
    settings = Settings.from_env(
        {
            "BATON_NATS_URL": "nats://a:4222, nats://b:4222,",
            "BATON_STREAM_REPLICAS": "3",
            "BATON_PROGRESS_MAX_AGE": "12h",
            "BATON_TRIGGER_MAX_AGE": "90",
            "BATON_TRIGGER_RETENTION": "WorkQueue",
        }
    )
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.stream_replicas == 3
    assert settings.progress_max_age_s == 12 * 3600
    assert settings.trigger_max_age_s == 90
    assert settings.trigger_retention == "workqueue"
    defaults = Settings.from_env({})
    assert (defaults.stream_replicas, defaults.progress_max_age_s) == (1, 7 * 86400)
    assert [parse_duration(t) for t in ("0", "30m", "7d", "1.5s")] == [0, 1800, 604800, 1.5]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BATON_STREAM_REPLICAS", "0"),
        ("BATON_STREAM_REPLICAS", "three"),
        ("BATON_PROGRESS_MAX_AGE", "a week"),
        ("BATON_TRIGGER_MAX_AGE", "-5m"),
        ("BATON_TRIGGER_RETENTION", "interest"),
        ("BATON_TIMED_IDS", "yes"),
    ],
)
def test_an_unusable_setting_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingError, match=name):
        Settings.from_env({name: value})


async def test_streams_are_created_with_the_retention_and_replicas_asked(
    js: Any, prefix: str
) -> None:
    policy = StreamPolicy(progress_max_age_s=3 * 86400, trigger_max_age_s=600)
    await ensure_streams(js, prefix, policy)
    progress, triggers = stream_names(prefix)
    p, t = (await js.stream_info(progress)).config, (await js.stream_info(triggers)).config
    assert (p.max_age, t.max_age) == (3 * 86400, 600)
    assert (p.num_replicas, t.num_replicas) == (1, 1)
    assert p.duplicate_window == DUPLICATE_WINDOW_S
    assert t.duplicate_window == 600  # JetStream wants the window within the max age
    assert (p.retention, t.retention) == ("limits", "limits")


async def test_a_changed_max_age_is_updated_at_the_next_start(js: Any, prefix: str) -> None:
    await ensure_streams(js, prefix, StreamPolicy())
    progress, triggers = stream_names(prefix)
    p = (await js.stream_info(progress)).config
    assert p.max_age == 7 * 86400
    p.max_msgs = 1_000_000  # an operator's own limit
    await js.update_stream(config=p)

    await ensure_streams(js, prefix, StreamPolicy(progress_max_age_s=3600, trigger_max_age_s=0))
    p, t = (await js.stream_info(progress)).config, (await js.stream_info(triggers)).config
    assert p.max_age == 3600
    assert t.max_age == 0  # 0: kept until consumed or removed by hand
    assert p.max_msgs == 1_000_000  # a setting Baton does not own is kept


async def test_a_workqueue_trigger_stream_keeps_a_trigger_until_it_is_consumed(
    js: Any, prefix: str
) -> None:
    await ensure_streams(js, prefix, StreamPolicy(trigger_retention="workqueue"))
    triggers = stream_names(prefix)[1]
    await js.publish(f"{prefix}.trigger.s1", b"{}", headers={"Nats-Msg-Id": "t1"})
    assert (await js.stream_info(triggers)).state.messages == 1
    sub = await js.pull_subscribe(f"{prefix}.trigger.s1", durable="worker-s1", stream=triggers)
    [msg] = await sub.fetch(1, timeout=5)
    await msg.ack_sync()
    assert (await js.stream_info(triggers)).state.messages == 0


async def test_a_retention_change_nats_refuses_stops_the_start_naming_the_setting(
    js: Any, prefix: str
) -> None:
    await ensure_streams(js, prefix, StreamPolicy(trigger_retention="limits"))
    with pytest.raises(StreamSettingsError) as refused:
        await ensure_streams(js, prefix, StreamPolicy(trigger_retention="workqueue"))
    text = str(refused.value)
    assert "BATON_TRIGGER_RETENTION" in text
    assert stream_names(prefix)[1] in text
    assert "retention is limits" in text and "asks workqueue" in text
    config = (await js.stream_info(stream_names(prefix)[1])).config
    assert config.retention == "limits"  # nothing half-changed


async def test_replicas_a_single_server_cannot_hold_are_reported_by_name(
    js: Any, prefix: str
) -> None:
    with pytest.raises(StreamSettingsError, match="BATON_STREAM_REPLICAS"):
        await ensure_streams(js, prefix, StreamPolicy(replicas=3))
    await ensure_streams(js, prefix, StreamPolicy(replicas=1))
    with pytest.raises(
        StreamSettingsError, match="num_replicas is 1, BATON_STREAM_REPLICAS asks 3"
    ):
        await ensure_streams(js, prefix, StreamPolicy(replicas=3))


async def test_the_service_and_the_client_take_several_server_urls(
    nats_url: str, tmp_path: Path
) -> None:
    dead = f"nats://127.0.0.1:{free_port('127.0.0.1')}"
    urls = f"{dead},{nats_url}"
    async with running_baton(settings_for(urls, tmp_path / "data")) as baton:
        assert baton.client.nc.connected_url.netloc == nats_url.split("://")[1]
        async with await BatonClient.connect(urls, prefix=baton.prefix, timeout=10) as client:
            view = await client.create_task(task_name="t", task_instruction="do", plan=seq("a"))
            assert view["status"] == "running"


async def test_the_service_does_not_start_on_a_stream_it_cannot_reconcile(
    nats_url: str, tmp_path: Path, js: Any, prefix: str
) -> None:
    await ensure_streams(js, prefix, StreamPolicy(trigger_retention="workqueue"))
    settings = settings_for(nats_url, tmp_path / "data", subject_prefix=prefix)
    with pytest.raises(StreamSettingsError, match="BATON_TRIGGER_RETENTION"):
        async with running_baton(settings):
            pass


def test_every_setting_read_from_the_environment_is_in_the_readme_table() -> None:
    root = Path(__file__).resolve().parents[2]
    source = (root / "adapters" / "config.py").read_text(encoding="utf-8")
    readme = (root / "README.md").read_text(encoding="utf-8")
    read = set(re.findall(r'env(?:\.get)?\(\s*"(BATON_[A-Z_]+)"', source))
    read |= set(re.findall(r'_(?:duration|integer|choice)\(\s*env,\s*"(BATON_[A-Z_]+)"', source))
    assert {"BATON_STREAM_REPLICAS", "BATON_PROGRESS_MAX_AGE", "BATON_NATS_URL"} <= read
    tabled = set(re.findall(r"(?m)^\| `(BATON_[A-Z_]+)`", readme))
    tabled |= set(re.findall(r"(?m)^\| `BATON_[A-Z_]+`, `(BATON_[A-Z_]+)`", readme))
    assert read - tabled == set()


async def test_the_process_exits_2_with_the_setting_named_and_no_traceback(
    nats_url: str, tmp_path: Path, js: Any, prefix: str
) -> None:
    await ensure_streams(js, prefix, StreamPolicy(trigger_retention="workqueue"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update(
        BATON_NATS_URL=nats_url,
        BATON_DATA_DIR=str(tmp_path / "data"),
        BATON_SUBJECT_PREFIX=prefix,
        BATON_UI_ADDR="",
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "baton.adapters"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "BATON_TRIGGER_RETENTION" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_cli_refuses_an_unusable_setting_by_name_without_a_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env["BATON_PROGRESS_MAX_AGE"] = "a week"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "baton"), "ls"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "BATON_PROGRESS_MAX_AGE" in done.stderr and "Traceback" not in done.stderr
