"""The dashboard in a real headless Chromium, against a real Baton process and nats-server,
everything driven over NATS as agents drive it: the list follows new tasks, a task's page draws
one node per step with its status and follows changes without a reload, the version slider
shows the past, an unknown task is a 404, and a lost NATS connection shows a banner and heals.

It also makes the README's screenshot (docs/dashboard-task.png, rewritten when
BATON_UPDATE_SCREENSHOTS=1) and measures the page load of a 1,000-step graph (printed, not
asserted: a timing on a shared machine is a figure to report, not a law)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from baton.adapters.client import BatonClient
from baton.adapters.natsserver import EmbeddedNatsServer, free_port
from baton.adapters.publication import stream_names
from tests.browser.conftest import Deployment, start_deployment
from tests.integration.nats_support import new_prefix
from tests.plans import seq
from tests.processes import ServiceProcess, delete_streams

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "dashboard-task.png"
#: How long a test waits for the page to show a change (a bound on waiting, not a timing claim).
WAIT_MS = 10_000
BATON = str(Path(sys.executable).parent / "baton")

DIAMOND = {
    "goal": "A short report on a data set",
    "steps": [
        {"step_name": "fetch", "description": "Fetch the data set", "depends_on": []},
        {"step_name": "summarise", "description": "Summarise the rows", "depends_on": ["fetch"]},
        {"step_name": "extract", "description": "Extract key figures", "depends_on": ["fetch"]},
        {"step_name": "chart", "description": "Chart the figures", "depends_on": ["extract"]},
        {
            "step_name": "report",
            "description": "Write the report",
            "depends_on": ["summarise", "chart"],
        },
    ],
}


def node(page: Any, name: str) -> Any:
    return page.locator(f'svg.graph g.node[data-step-name="{name}"]')


def step_id(view: dict[str, Any], name: str) -> str:
    return next(s["step_id"] for s in view["steps"] if s["step_name"] == name)


async def mark_no_reload(page: Any) -> None:
    """Leaves a mark in the page's window: a reload would wipe it."""
    await page.evaluate("window.__stillTheSamePage = true")


async def assert_not_reloaded(page: Any) -> None:
    assert await page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[dashboard] {text}", flush=True)


async def test_the_list_shows_a_task_created_over_nats_without_a_reload(
    deployment: Deployment,
    client: BatonClient,
    page: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await page.goto(f"{deployment.url}/")
    await expect(page.locator("#live-dot.on")).to_be_visible()
    await mark_no_reload(page)
    began = time.perf_counter()
    view = await client.create_task(task_name="appears live", plan=seq("a", "b"))
    row = page.locator(f'#tasks tr[data-task-id="{view["task_id"]}"]')
    await expect(row).to_be_visible(timeout=WAIT_MS)
    shown_after = time.perf_counter() - began
    await expect(row.locator("td.status")).to_have_text("running")
    await assert_not_reloaded(page)
    report(capsys, f"a task created over NATS showed in the list {shown_after * 1000:.0f} ms later")

    # and its status follows, still without a reload
    await client.cancel_task(task_id=view["task_id"], reason="done looking")
    await expect(row.locator("td.status")).to_have_text("cancelled", timeout=WAIT_MS)
    await assert_not_reloaded(page)


async def test_the_task_page_draws_one_node_per_step_with_its_status(
    deployment: Deployment, client: BatonClient, page: Any
) -> None:
    view = await client.create_task(task_name="diamond", plan=DIAMOND)
    task_id = view["task_id"]
    await client.claim_step(task_id=task_id, worker="w1")  # fetch
    await client.complete_step(task_id=task_id, step_id=step_id(view, "fetch"), result={"n": 3})
    await client.claim_step(task_id=task_id, worker="w2")  # summarise or extract becomes current
    view = await client.task(task_id=task_id)

    response = await page.goto(f"{deployment.url}/tasks/{task_id}")
    assert response.status == 200
    await expect(page.locator("svg.graph g.node")).to_have_count(len(view["steps"]))
    for step in view["steps"]:
        shown = node(page, step["step_name"])
        await expect(shown).to_have_attribute("data-status", step["status"])
        await expect(shown).to_have_attribute("data-ready", "true" if step["ready"] else "false")
    claimed = next(s for s in view["steps"] if s.get("claimed_by") == "w2")
    await expect(node(page, "report")).to_have_class("node s-pending blocked")

    # a click shows the step's details: who claims it, its attempts
    await node(page, claimed["step_name"]).click()
    await expect(page.locator("#details-name")).to_have_text(claimed["step_name"])
    await expect(page.locator('#details dd[data-field="claimed by"]')).to_have_text("w2")
    await expect(page.locator('#details dd[data-field="attempts"]')).to_have_text("1")
    await node(page, "fetch").click()
    await expect(page.locator('#details dd[data-field="result"]')).to_contain_text('"n": 3')


async def test_completing_a_step_over_nats_turns_its_node_completed_without_a_reload(
    deployment: Deployment, client: BatonClient, page: Any
) -> None:
    view = await client.create_task(task_name="live node", plan=seq("first", "second"))
    task_id = view["task_id"]
    await page.goto(f"{deployment.url}/tasks/{task_id}")
    await expect(node(page, "first")).to_have_attribute("data-status", "current")
    await expect(page.locator("#live-dot.on")).to_be_visible()
    await mark_no_reload(page)

    await client.complete_step(task_id=task_id, step_id=step_id(view, "first"), result="ok")
    await expect(node(page, "first")).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    await expect(node(page, "second")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#timeline li", has_text="StepCompleted")).to_have_count(1)
    await assert_not_reloaded(page)


async def test_the_version_slider_shows_the_task_as_it_was(
    deployment: Deployment, client: BatonClient, page: Any
) -> None:
    view = await client.create_task(task_name="time travel", plan=seq("first", "second"))
    task_id = view["task_id"]
    await client.complete_step(task_id=task_id, step_id=step_id(view, "first"))
    await client.next_step(task_id=task_id)  # second becomes current
    latest = (await client.task(task_id=task_id))["version"]
    await page.goto(f"{deployment.url}/tasks/{task_id}")
    await expect(node(page, "first")).to_have_attribute("data-status", "completed")

    slider = page.locator("#version")
    await slider.focus()
    await page.keyboard.press("Home")  # version 1: the task as created
    await expect(page.locator("#version-label")).to_have_text(f"1 of {latest}")
    await expect(page.locator("#past")).to_be_visible()
    await expect(node(page, "first")).to_have_attribute("data-status", "pending")
    await expect(node(page, "second")).to_have_attribute("data-status", "pending")

    await page.keyboard.press("ArrowRight")  # version 2: the first step started
    await expect(node(page, "first")).to_have_attribute("data-status", "current")

    await page.locator("#timeline li[data-version='1']").click()
    await expect(node(page, "first")).to_have_attribute("data-status", "pending")

    await page.locator("#go-live").click()
    await expect(page.locator("#past")).to_be_hidden()
    await expect(node(page, "first")).to_have_attribute("data-status", "completed")
    await expect(node(page, "second")).to_have_attribute("data-status", "current")


async def test_an_unknown_task_id_is_a_404_page(deployment: Deployment, page: Any) -> None:
    response = await page.goto(f"{deployment.url}/tasks/no-such-task")
    assert response.status == 404
    await expect(page.locator("#not-found")).to_have_text("Not found")
    await expect(page.locator("main")).to_contain_text("no-such-task")


async def test_the_queue_and_instances_pages_show_the_deployment(
    deployment: Deployment, client: BatonClient, page: Any
) -> None:
    view = await client.create_task(task_name="queued work", plan=seq("only"))
    started = await client.start_task(task_id=view["task_id"], delay_s=600)
    await page.goto(f"{deployment.url}/queue")
    await expect(page.locator(f'#ready tr[data-step-id="{step_id(view, "only")}"]')).to_be_visible()
    trigger = page.locator(f'#triggers tr[data-trigger-id="{started["trigger"]["trigger_id"]}"]')
    await expect(trigger).to_contain_text("in 10 min")

    await page.goto(f"{deployment.url}/instances")
    await expect(page.locator("section.instance")).to_have_count(1)
    await expect(page.locator("section.instance")).to_contain_text(
        f"{deployment.prefix}.task.create"
    )


async def test_a_lost_nats_connection_shows_a_banner_and_recovers(
    tmp_path: Path, browser: Any, page: Any
) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats")
    await asyncio.to_thread(server.start)
    deployment = await asyncio.to_thread(start_deployment, server.url, tmp_path / "data")
    try:
        await page.goto(f"{deployment.url}/")
        await expect(page.locator("#live-dot.on")).to_be_visible()
        await expect(page.locator("#banner")).to_be_hidden()

        await asyncio.to_thread(server.stop)
        await expect(page.locator("#banner")).to_contain_text(
            "No connection to NATS", timeout=WAIT_MS
        )
        await asyncio.to_thread(server.start)
        await expect(page.locator("#banner")).to_be_hidden(timeout=30_000)

        await asyncio.to_thread(deployment.wait_until_following)
        async with await BatonClient.connect(server.url, prefix=deployment.prefix) as client:
            view = await client.create_task(task_name="after the outage", plan=seq("a"))
        row = page.locator(f'#tasks tr[data-task-id="{view["task_id"]}"]')
        await expect(row).to_be_visible(timeout=WAIT_MS)
    finally:
        deployment.service.kill()
        await asyncio.to_thread(server.stop)


async def test_the_list_reads_again_by_itself_until_a_service_answers(
    nats_url: str, tmp_path: Path, browser: Any, page: Any
) -> None:
    """No event announces a service that comes (or reconnects to NATS) after the dashboard:
    the page that said "no Baton service answers; retrying" has to retry. (After a NATS restart
    the dashboard's connection can come back before the service's: a fresh-clone CI run kept
    that banner for 30 s.)"""
    prefix = new_prefix()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    ui = subprocess.Popen(
        [BATON, "ui", "--nats", nats_url, "--prefix", prefix, "--addr", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    service = ServiceProcess(nats_url, tmp_path / "data", prefix, env={"BATON_UI_ADDR": ""})
    try:
        assert ui.stdout is not None
        assert (await asyncio.to_thread(ui.stdout.readline)).startswith("dashboard on ")
        await page.goto(f"http://127.0.0.1:{port}/")
        await expect(page.locator("#banner")).to_contain_text(
            "no Baton service answers", timeout=WAIT_MS
        )
        await asyncio.to_thread(service.start)
        await expect(page.locator("#banner")).to_be_hidden(timeout=WAIT_MS)
        await expect(page.locator("#tasks")).to_be_visible()
    finally:
        ui.send_signal(signal.SIGTERM)
        await asyncio.to_thread(ui.wait, 10)
        if ui.stdout is not None:
            ui.stdout.close()
        if service.alive:
            service.terminate()
        delete_streams(nats_url, stream_names(prefix))


REPORT_PLAN = {
    "goal": "The quarterly sales report, reviewed",
    "steps": [
        {"step_name": "fetch", "description": "Fetch the sales rows", "depends_on": []},
        {"step_name": "clean", "description": "Drop duplicates", "depends_on": ["fetch"]},
        {"step_name": "summarise", "description": "Summarise by region", "depends_on": ["clean"]},
        {"step_name": "extract", "description": "Extract key figures", "depends_on": ["clean"]},
        {"step_name": "chart", "description": "Chart the figures", "depends_on": ["extract"]},
        {"step_name": "translate", "description": "Translate the notes", "depends_on": ["fetch"]},
        {"step_name": "appendix", "description": "Raw data appendix", "depends_on": ["fetch"]},
        {"step_name": "review", "description": "Review", "depends_on": ["summarise", "translate"]},
        {"step_name": "report", "description": "Write it up", "depends_on": ["review", "chart"]},
    ],
}


async def test_a_screenshot_of_a_task_graph_for_the_readme(
    deployment: Deployment,
    client: BatonClient,
    page: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    view = await client.create_task(
        task_name="quarterly report",
        task_instruction="Write the quarterly sales report for the board",
        session_id="analyst-7",
        plan=REPORT_PLAN,
    )
    task_id = view["task_id"]
    await client.complete_step(
        task_id=task_id, step_id=step_id(view, "fetch"), result={"rows": 1200}
    )
    await client.complete_step(task_id=task_id, step_id=step_id(view, "clean"), result="12 dropped")
    await client.skip_step(task_id=task_id, step_id=step_id(view, "appendix"), message="not needed")
    await client.claim_step(task_id=task_id, worker="writer-1")
    failing = (await client.claim_step(task_id=task_id, worker="analyst"))["step"]
    await client.fail_step(
        task_id=task_id, step_id=failing["step_id"], message="source timed out after 30 s"
    )
    await client.add_context(task_id=task_id, key="audience", value="board")
    view = await client.task(task_id=task_id)
    statuses = {s["status"] for s in view["steps"]}
    assert {"completed", "current", "failed", "skipped", "pending"} <= statuses

    await page.goto(f"{deployment.url}/tasks/{task_id}")
    await expect(page.locator("svg.graph g.node")).to_have_count(len(REPORT_PLAN["steps"]))
    await node(page, failing["step_name"]).click()
    await expect(page.locator('#details dd[data-field="failure"]')).to_have_text(
        "source timed out after 30 s"
    )
    shot = tmp_path / "dashboard-task.png"
    await page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("BATON_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.write_bytes(shot.read_bytes())
        report(capsys, f"wrote {SCREENSHOT.relative_to(ROOT)}")


def big_plan(steps: int = 1000, width: int = 10) -> dict[str, Any]:
    """A dependency graph of ``steps`` steps in layers of ``width``: each step past the first
    layer depends on the step above it and on that step's left neighbour."""
    names = [f"s{i:04d}" for i in range(steps)]

    def needs(i: int) -> list[str]:
        if i < width:
            return []
        return [names[i - width]] + ([names[i - width - 1]] if i % width else [])

    return {
        "steps": [
            {"step_name": name, "description": f"step {i}", "depends_on": needs(i)}
            for i, name in enumerate(names)
        ]
    }


async def load_times(page: Any, url: str, loads: int = 3) -> list[float]:
    """Milliseconds from navigation to the graph on screen (the page's own mark), per load."""
    times = []
    for _ in range(loads):
        await page.goto(url)
        await page.locator("body[data-graph-rendered='true']").wait_for(timeout=30_000)
        times.append(
            await page.evaluate("performance.getEntriesByName('graph-rendered')[0].startTime")
        )
    return times


async def test_the_page_load_of_a_1000_step_graph_is_measured(
    deployment: Deployment,
    client: BatonClient,
    page: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    graph = big_plan()
    request = {"task_name": "a thousand steps", "plan": graph}
    assert len(json.dumps(request).encode()) < 512 * 1024  # under the request limit
    view = await client.create_task(**request)
    line = await client.create_task(
        task_name="a thousand in a line", plan=seq(*(f"s{i:04d}" for i in range(1000)))
    )
    figures = {}
    for label, task in (("graph", view), ("sequential", line)):
        url = f"{deployment.url}/tasks/{task['task_id']}"
        times = await load_times(page, url)
        await expect(page.locator("svg.graph g.node")).to_have_count(1000)
        figures[label] = times
    await expect(node(page, "s0000")).to_have_attribute("data-status", "current")
    for label, times in figures.items():
        report(
            capsys,
            f"1,000-step {label} page load: median {statistics.median(times):.0f} ms "
            f"(loads: {', '.join(f'{t:.0f}' for t in times)} ms)",
        )


LAYOUT_LAWS = """
async ({ seed, count }) => {
  const { layout, NODE_W, NODE_H } = await import("/static/graph.js");
  let state = seed;
  const random = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
  const broken = [];
  for (let round = 0; round < count; round++) {
    const n = 1 + Math.floor(random() * 60);
    const steps = [];
    for (let i = 0; i < n; i++) {
      const deps = [];
      for (let j = 0; j < i; j++) if (random() < 3 / (i + 1)) deps.push(`s${j}`);
      steps.push({ step_name: `s${i}`, depends_on: deps });
    }
    const shape = layout(steps, 900);
    const where = (name) => shape.nodes[Number(name.slice(1))];
    steps.forEach((step, i) => {
      const a = shape.nodes[i];
      if (!(a.x >= 0 && a.y >= 0 && a.x + NODE_W <= shape.width && a.y + NODE_H <= shape.height))
        broken.push(`round ${round}: ${step.step_name} outside the drawing`);
      for (let j = 0; j < i; j++) {
        const b = shape.nodes[j];
        if (Math.abs(a.x - b.x) < NODE_W && Math.abs(a.y - b.y) < NODE_H)
          broken.push(`round ${round}: s${i} overlaps s${j}`);
      }
      if (!shape.line) for (const dep of step.depends_on)
        if (!(where(dep).x + NODE_W <= a.x))
          broken.push(`round ${round}: ${dep} not left of ${step.step_name}`);
    });
    if (shape.edges.length !== steps.reduce((k, s) => k + s.depends_on.length, 0))
      broken.push(`round ${round}: ${shape.edges.length} edges drawn`);
  }
  return broken;
}
"""


async def test_the_graph_layout_keeps_steps_apart_and_dependencies_to_the_left(
    deployment: Deployment, page: Any
) -> None:
    """Laws of the layout on generated plans: every step inside the drawing, no two steps
    overlap, one edge per dependency, and (a graph, not a line) every step right of all it
    depends on."""
    await page.goto(f"{deployment.url}/")
    broken = await page.evaluate(LAYOUT_LAWS, {"seed": 20261201, "count": 200})
    assert broken == []
