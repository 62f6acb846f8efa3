"""The benchmarks cannot rot unnoticed: every bench module imports, and the plan-size
benchmark's drivers run a 10-step ladder to the end, in process and over NATS. (Figures are
``make bench``'s business; nothing here times anything.)"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from bench import plansize, taskqueue
from bench.__main__ import BENCHMARKS
from bench.data import open_app, settings_for
from bench.harness import Child, baton_env, connect_client


@pytest.mark.parametrize("module", sorted({module for _, module in BENCHMARKS.values()}))
def test_every_benchmark_module_imports_and_has_a_runner(module: str) -> None:
    assert callable(importlib.import_module(module).run)


def test_the_ladder_plan_makes_each_step_depend_on_the_two_before_it() -> None:
    steps = plansize.ladder(4)["steps"]
    assert [s["depends_on"] for s in steps] == [
        [],
        ["step-0"],
        ["step-1", "step-0"],
        ["step-2", "step-1"],
    ]


def test_a_10_step_ladder_runs_to_the_end_in_process(tmp_path: Path) -> None:
    app = open_app(settings_for(tmp_path))
    try:
        assert plansize.in_process(app, 10, claim_next=False)[1] == 10
        try:
            assert plansize.in_process(app, 10, claim_next=True)[1] == 10
        except plansize.NotSupported as why:
            assert str(why)  # this build refuses claim_next, and the bench says so
    finally:
        app.close()


async def test_a_10_step_ladder_runs_to_the_end_over_nats(nats_url: str, tmp_path: Path) -> None:
    with Child("baton", baton_env(settings_for(tmp_path / "data"), nats_url)):
        client = await connect_client(nats_url)
        try:
            assert (await plansize.over_nats(client, 10, claim_next=False))[1] == 10
            try:
                assert (await plansize.over_nats(client, 10, claim_next=True))[1] == 10
            except plansize.NotSupported as why:
                assert str(why)
        finally:
            await client.close()


def test_seed_004s_queue_gets_the_same_ladder() -> None:
    tasks = taskqueue.ladder_tasks(3)
    assert [(t["id"], t["dependencies"]) for t in tasks] == [
        ("0", []),
        ("1", ["0"]),
        ("2", ["1", "0"]),
    ]
