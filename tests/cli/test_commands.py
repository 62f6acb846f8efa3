"""Every ``baton`` command, end to end: the CLI as a subprocess against a live ``baton serve``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from baton.adapters.schema import render_documents
from tests.cli.conftest import Service

TWO = {"steps": [{"step_name": "a"}, {"step_name": "b"}]}

GRAPH_YAML = """\
goal: a report
steps:
  - step_name: fetch
    description: fetch the data
    depends_on: []
  - step_name: summarise
    description: summarise it
    depends_on: [fetch]
  - step_name: extract
    description: extract figures
    depends_on: [fetch]
  - step_name: report
    description: write it
    depends_on: [summarise, extract]
"""


def create(service: Service, *steps: str, session: str | None = None) -> dict[str, Any]:
    """A task with a sequential plan of ``"name: description"`` steps, set up in-process."""
    plan = [s.partition(":") for s in steps or ("a: first", "b: second")]
    view: dict[str, Any] = service.api(
        "create_task",
        task_name="cli test",
        session_id=session,
        plan={"steps": [{"step_name": n.strip(), "description": d.strip()} for n, _, d in plan]},
    )
    return view


def statuses(view: dict[str, Any]) -> dict[str, str]:
    return {s["step_name"]: s["status"] for s in view["steps"]}


def assert_error(done: Any, exit_code: int, line: str) -> None:
    assert done.returncode == exit_code, (done.stdout, done.stderr)
    assert line in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


# -- task create ----------------------------------------------------------------------------


def test_create_with_step_options_makes_a_sequential_plan_and_shows_a_tree(
    service: Service,
) -> None:
    done = service.run("task", "create", "tree", "--step", "a: first", "--step", "b: second")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("tree ") and "running" in lines[0]
    assert "steps 0/2 completed" in lines[0]
    assert any(line.startswith("├─ ▶ a") and "current" in line for line in lines)
    assert any(line.startswith("└─ ○ b") and "blocked" in line for line in lines)
    assert "after a" in done.stdout
    assert "\x1b[" not in done.stdout  # no colours when stdout is not a terminal


def test_create_json_replies_the_task_view(service: Service) -> None:
    view = service.json(
        "task", "create", "j", "--step", "a: x", "--step", "b", "--session", "cli-json"
    )
    assert view["session_id"] == "cli-json"
    assert statuses(view) == {"a": "current", "b": "pending"}
    assert view["steps"][1]["depends_on"] == ["a"]


def test_create_reads_a_yaml_or_json_plan_file(service: Service, tmp_path: Path) -> None:
    yaml_file = tmp_path / "plan.yaml"
    yaml_file.write_text(GRAPH_YAML)
    view = service.json("task", "create", "graph", "--plan", str(yaml_file))
    assert view["goal"] == "a report"
    assert [s["depends_on"] for s in view["steps"]] == [
        [],
        ["fetch"],
        ["fetch"],
        ["summarise", "extract"],
    ]
    json_file = tmp_path / "plan.json"
    json_file.write_text(json.dumps([{"step_name": "only"}]))
    assert statuses(service.json("task", "create", "j", "--plan", str(json_file))) == {
        "only": "current"
    }


def test_a_repeated_command_id_gets_the_first_reply(service: Service) -> None:
    first = service.json("task", "create", "once", "--step", "a", "--id", "cli-create-once")
    again = service.json("task", "create", "once", "--step", "a", "--id", "cli-create-once")
    assert again["task_id"] == first["task_id"]


def test_depends_options_make_a_dependency_graph(service: Service) -> None:
    view = service.json(
        "task", "create", "deps",
        "--step", "fetch", "--step", "left", "--step", "right", "--step", "join",
        "--depends", "left=fetch", "--depends", "right=fetch", "--depends", "join=left,right",
    )  # fmt: skip
    assert {s["step_name"]: s["depends_on"] for s in view["steps"]} == {
        "fetch": [],
        "left": ["fetch"],
        "right": ["fetch"],
        "join": ["left", "right"],
    }


# -- task start / next / replan -------------------------------------------------------------------


def test_start_schedules_a_trigger_and_next_advances(service: Service) -> None:
    view = create(service, "a: first", "b: second")
    task_id = view["task_id"]
    started = service.json("task", "start", task_id, "--delay", "30", "--priority", "2")
    assert started["status"] == "queued"
    assert started["step"]["step_name"] == "a"
    assert started["trigger"]["priority"] == 2

    human = service.run("task", "next", task_id).stdout
    assert "trigger scheduled for step b" in human and "status: queued" not in human
    last = service.json("task", "next", task_id)
    assert last["status"] == "completed"


def test_replan_from_step_options_prints_the_diff(service: Service) -> None:
    task_id = create(service, "a: first", "b: second")["task_id"]
    done = service.run("task", "replan", task_id, "--step", "a: first", "--step", "c: third")
    assert "plan revised: added: c; removed: b" in done.stdout
    view = service.json(
        "task", "replan", task_id, "--advance-next", "--step", "a: first", "--step", "c: third"
    )
    assert view["diff"] == {"added": [], "changed": [], "removed": []}
    assert statuses(view) == {"a": "completed", "b": "cancelled", "c": "current"}


def test_next_with_a_new_plan_revises_then_advances(service: Service, tmp_path: Path) -> None:
    task_id = create(service, "a: first", "b: second")["task_id"]
    reply = service.json("task", "next", task_id, "--step", "a: first", "--step", "z: last")
    assert reply["status"] == "queued"
    assert reply["step"]["step_name"] == "z"


# -- task complete / fail / cancel ------------------------------------------------------------


def test_complete_fail_and_cancel_end_tasks(service: Service) -> None:
    one = create(service)["task_id"]
    assert service.json("task", "complete", one, "--message", "done")["status"] == "completed"
    two = create(service)["task_id"]
    failed = service.json("task", "fail", two, "--message", "broken")
    assert failed["status"] == "error" and failed["message"] == "broken"
    three = create(service)["task_id"]
    human = service.run("task", "cancel", three, "--reason", "not needed").stdout
    assert "cancelled" in human and "not needed" in human


def test_ending_an_ended_task_prints_the_contract_error_and_exits_2(service: Service) -> None:
    task_id = create(service)["task_id"]
    service.api("cancel_task", task_id=task_id)
    done = service.run("task", "complete", task_id, check=False)
    assert_error(done, 2, "error 409 invalid_transition: ")
    as_json = service.run("task", "complete", task_id, "--json", check=False)
    assert json.loads(as_json.stdout)["error"]["code"] == 409


# -- steps ------------------------------------------------------------------------------------


def test_claim_complete_with_a_result_fail_retry_and_skip(service: Service, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(GRAPH_YAML)
    view = service.json("task", "create", "steps", "--plan", str(plan), "--session", "cli-steps")
    task_id = view["task_id"]

    claimed = service.json("step", "claim", "--session", "cli-steps", "--worker", "w1")
    assert claimed["queue_status"] == "in_progress"
    assert claimed["step"]["step_name"] == "fetch" and claimed["step"]["claimed_by"] == "w1"

    done = service.json("step", "complete", task_id, "fetch", "--result", '{"rows": 3}')
    assert done["status"] == "completed" and done["result"] == {"rows": 3}

    human = service.run("step", "claim", "--task", task_id, "--worker", "w2").stdout
    assert human.startswith("claimed ") and "summarise" in human

    failed = service.json("step", "fail", f"{task_id}.1", "--message", "model refused")
    assert failed["status"] == "failed" and failed["failure_message"] == "model refused"
    shown = service.run("show", task_id).stdout
    assert "failed: model refused" in shown and 'result: {"rows": 3}' in shown

    assert service.json("step", "retry", task_id, "summarise")["status"] == "pending"
    skipped = service.run("step", "skip", task_id, "1", "--message", "not needed").stdout
    assert "skipped" in skipped and "task is running" in skipped


def test_a_step_command_on_a_cancelled_step_is_a_409(service: Service) -> None:
    task_id = create(service)["task_id"]
    service.api("replan_task", task_id=task_id, plan={"steps": [{"step_name": "a"}]})  # cancels b
    done = service.run("step", "complete", task_id, "b", check=False)
    assert_error(done, 2, "error 409 invalid_transition: cannot complete step 'b': it is cancelled")


def test_claim_with_nothing_to_hand_out_says_why(service: Service) -> None:
    task_id = create(service, "only")["task_id"]
    service.api("complete_step", task_id=task_id, step_id=f"{task_id}.0")
    done = service.run("step", "claim", "--task", task_id)
    assert "nothing to claim: queue is done" in done.stdout


# -- context, show, history, queue, ls ------------------------------------------------------------


def test_context_values_are_json_when_they_parse(service: Service) -> None:
    task_id = create(service)["task_id"]
    assert service.json("context", task_id, "limits", '{"max": 3}')["context"]["limits"] == {
        "max": 3
    }
    view = service.json("context", task_id, "note", "just words")  # not JSON: a string
    assert view["context"]["note"] == "just words"
    assert "note" not in view["steps"][1]["context"]  # the task's context: once, at the top


def test_show_and_history_with_and_without_a_version(service: Service) -> None:
    task_id = create(service)["task_id"]
    service.api("start_task", task_id=task_id)
    service.api("next_step", task_id=task_id)
    assert service.json("show", task_id)["task_id"] == task_id
    timeline = service.run("history", task_id).stdout.splitlines()
    assert timeline[0].startswith(f"{task_id}: ")
    assert any("Created" in line and "created with 2 steps" in line for line in timeline)
    assert any("StepCompleted" in line for line in timeline)
    events = service.json("history", task_id)["events"]
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    then = service.json("history", task_id, "--at", "1")
    assert then["version"] == 1 and then["task"]["version"] == 1
    assert "as of version 1" in service.run("history", task_id, "--at", "1").stdout


def test_queue_lists_ready_steps_and_pending_triggers(service: Service) -> None:
    task_id = create(service, "q1: one", session="cli-queue")["task_id"]
    service.api("start_task", task_id=task_id, delay_s=60)
    reply = service.json("queue", "--session", "cli-queue")
    assert [s["step_name"] for s in reply["steps"]] == ["q1"]
    assert [t["task_id"] for t in reply["triggers"]] == [task_id]
    human = service.run("queue", "--session", "cli-queue").stdout
    assert "q1" in human and "pending triggers" in human


def test_ls_filters_and_follows_the_cursor(service: Service) -> None:
    ids = {create(service, session="cli-ls")["task_id"] for _ in range(3)}
    page = service.json("ls", "--session", "cli-ls", "--limit", "2")
    assert len(page["tasks"]) == 2 and page["cursor"]
    every = service.json("ls", "--session", "cli-ls", "--limit", "2", "--all")
    assert {t["task_id"] for t in every["tasks"]} == ids and every["cursor"] is None
    queued = service.json("ls", "--session", "cli-ls", "--status", "queued")
    assert len(queued["tasks"]) == 2
    table = service.run("ls", "--session", "cli-ls", "--all").stdout.splitlines()
    assert table[0].split() == ["TASK", "STATUS", "SESSION", "STEPS", "CURRENT", "UPDATED"]
    assert len(table) == 4


# -- errors -----------------------------------------------------------------------------------


def test_an_unknown_task_is_a_404_without_a_traceback(service: Service) -> None:
    assert_error(service.run("show", "nope", check=False), 2, "error 404 not_found: no task 'nope'")


def test_an_invalid_plan_is_a_400(service: Service) -> None:
    done = service.run(
        "task", "create", "cyclic", "--step", "a", "--step", "b",
        "--depends", "a=b", "--depends", "b=a", check=False,
    )  # fmt: skip
    assert_error(done, 2, "error 400 invalid_plan: the plan has a dependency cycle")


def test_mistakes_on_the_command_line_exit_2_with_a_message(service: Service) -> None:
    missing = service.run("task", "create", "x", "--plan", "/nonexistent.yaml", check=False)
    assert_error(missing, 2, "cannot read plan file /nonexistent.yaml")
    assert_error(
        service.run("task", "create", "x", "--depends", "a=b", check=False), 2, "--depends needs"
    )
    assert_error(service.run("step", "complete", "justaname", check=False), 2, "step id like")
    task_id = create(service)["task_id"]
    assert_error(
        service.run("step", "skip", task_id, "nosuch", check=False), 2, "has no step 'nosuch'"
    )


def test_no_server_exits_1_with_a_message(service: Service) -> None:
    done = service.run("ls", "--nats", "nats://127.0.0.1:1", check=False)
    assert_error(done, 1, "error: no NATS server at nats://127.0.0.1:1 (connection refused)")
    unserved = service.run("show", "x", "--prefix", "nobodyhere", check=False)
    assert_error(unserved, 1, "error 503 no_responders")


def test_serve_without_a_reachable_server_exits_1(service: Service) -> None:
    done = service.run("serve", "--nats", "nats://nonexistent.invalid:4222", check=False)
    assert_error(done, 1, "error: cannot serve: no NATS server answers at")


# -- schema, projections, demo -------------------------------------------------------------------


def test_schema_writes_the_committed_documents(service: Service, tmp_path: Path) -> None:
    service.run("schema", "--out", str(tmp_path), "--prefix", "baton")
    for name, text in render_documents().items():
        assert (tmp_path / name).read_text() == text
    printed = json.loads(service.run("schema").stdout)
    assert printed["asyncapi"] == "3.0.0"
    prefix = service.env["BATON_SUBJECT_PREFIX"]
    assert printed["channels"]["taskCreate"]["address"] == f"{prefix}.task.create"


def test_projections_status_reports_the_lag(service: Service) -> None:
    create(service)
    lag = service.json("projections", "status")
    assert set(lag) >= {"applied", "stored", "behind"}
    assert lag["stored"] >= lag["applied"] > 0
    assert "events, " in service.run("projections", "status").stdout


def test_projections_rebuild_refuses_while_the_service_answers(service: Service) -> None:
    done = service.run("projections", "rebuild", check=False)
    assert_error(done, 2, "stop it before a rebuild")


def test_projections_rebuild_replays_every_event(service: Service, tmp_path: Path) -> None:
    import shutil

    # A copy of the live store: a stopped service's data directory.
    copy = tmp_path / "data"
    shutil.copytree(service.data_dir, copy, ignore=shutil.ignore_patterns("nats", "*.log"))
    env = {**service.env, "BATON_DATA_DIR": str(copy)}
    stored = service.json("projections", "status")["stored"]
    done = service.run("projections", "rebuild", "--json", "--force", env=env)
    rebuilt = json.loads(done.stdout)
    assert rebuilt["rebuilt"] is True and rebuilt["applied"] >= stored
    after = json.loads(service.run("projections", "status", "--json", env=env).stdout)
    assert after["behind"] == 0


def test_demo_cancels_an_unfinished_demo_in_its_session(service: Service) -> None:
    stale = service.api("create_task", task_name="demo report", session_id="cli-demo-2", plan=TWO)[
        "task_id"
    ]
    done = service.run("demo", "--pause", "0", "--session", "cli-demo-2")
    assert f"cancelled the unfinished demo task {stale}" in done.stdout
    busy = service.api("create_task", task_name="mine", session_id="cli-demo-3", plan=TWO)
    refused = service.run("demo", "--session", "cli-demo-3", check=False)
    assert_error(refused, 2, f"session 'cli-demo-3' is busy with task {busy['task_id']}")


def test_demo_runs_a_dependency_plan_to_completion(service: Service) -> None:
    done = service.run("demo", "--pause", "0", "--session", "cli-demo")
    out = done.stdout
    for name in ("fetch", "summarise", "extract", "report"):
        assert f"✔ {name} completed" in out
    assert "completed  steps 4/4 completed" in out
    final = json.loads(service.run("demo", "--pause", "0", "--json").stdout)
    assert final["status"] == "completed" and final["session_id"] == "demo"
    assert final["steps"][3]["context"]["summarise"].startswith("Sales grew")


def test_help_lists_the_commands_and_exit_codes(service: Service) -> None:
    text = service.run("--help").stdout
    commands = ("serve", "task", "step", "show", "watch", "history", "queue", "ls", "demo")
    for command in (*commands, "harness"):
        assert f"    {command} " in text
    assert "124 on --timeout" in " ".join(text.split())


def test_harness_checks_the_live_service_and_reports_no_contract_break(service: Service) -> None:
    done = service.run("harness", "--examples", "5", "--steps", "8")
    assert "no contract break" in done.stdout
    report = json.loads(service.run("harness", "--examples", "3", "--steps", "6", "--json").stdout)
    assert report["failure"] is None and report["commands"] > 0 and report["checks"] > 0
