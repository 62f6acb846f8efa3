"""How ``tests/data/store-0.1`` was written: by Baton 0.1 (commit 1586e91), whose packages were
installed at the top level (``domain``, ``projections``, ``adapters``), with
``python make_store.py OUT`` from a checkout of that commit. Kept for the record; it does not run
against today's layout (ruff leaves this folder alone), and ``expected.json`` is what 0.1 itself
answered for these tasks."""
import sys, shutil
from pathlib import Path
from adapters.config import Settings, event_store_env
from domain import commands as c
from domain.plans import Plan
from domain.services import BatonApp
from projections import Projections

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
app = BatonApp(event_store_env(Settings(data_dir=out)))
proj = Projections(app)
P = Plan.model_validate
seq = app.handle(c.CreateTask(task_name="sequential", session_id="s1", plan=P({"goal": "g", "context": {"k": 1}, "steps": [{"step_name": n, "description": n.upper()} for n in "abc"]})), command_id="cmd-create-1")
queued = app.handle(c.CreateTask(task_name="queued", session_id="s1", plan=P({"steps": [{"step_name": "only"}]})))
app.handle(c.StartTask(task_id=seq["task_id"], delay_s=3600, priority=2))
app.handle(c.NextStep(task_id=seq["task_id"]))
app.handle(c.AddContext(task_id=seq["task_id"], key="note", value={"x": [1, 2]}))
graph = app.handle(c.CreateTask(task_name="graph", session_id="s2", plan=P({"steps": [
    {"step_name": "fetch", "depends_on": []},
    {"step_name": "sum", "depends_on": ["fetch"]},
    {"step_name": "ext", "depends_on": ["fetch"]},
    {"step_name": "report", "depends_on": ["sum", "ext"]}]})))
gid = graph["task_id"]
claim = app.handle(c.ClaimStep(task_id=gid, worker="w1"))
app.handle(c.CompleteStep(task_id=gid, step_id=claim["step"]["step_id"], result={"rows": 3}))
claim = app.handle(c.ClaimStep(task_id=gid, worker="w2"))
app.handle(c.FailStep(task_id=gid, step_id=claim["step"]["step_id"], message="boom"))
app.handle(c.RetryStep(task_id=gid, step_id=claim["step"]["step_id"]))
app.handle(c.ReplanTask(task_id=gid, plan=P({"steps": [
    {"step_name": "sum", "depends_on": ["fetch"], "description": "changed"},
    {"step_name": "ext", "depends_on": ["fetch"]},
    {"step_name": "chart", "depends_on": ["ext"]},
    {"step_name": "report", "depends_on": ["sum", "chart"]}]})))
app.handle(c.CancelTask(task_id=seq["task_id"], reason="enough"))
# A long task: more than 100 events, so a snapshot is stored.
long = app.handle(c.CreateTask(task_name="long", session_id="s3", plan=P({"steps": [{"step_name": f"s{i}"} for i in range(60)]})))
reply = app.handle(c.StartTask(task_id=long["task_id"]))
while reply["status"] == "queued":
    reply = app.handle(c.NextStep(task_id=long["task_id"]))
proj.catch_up()
import json
expected = {t: app.task_view(t) for t in (seq["task_id"], queued["task_id"], gid, long["task_id"])}
hist = {t: app.history(t) for t in expected}
(out / "expected.json").write_text(json.dumps({"views": expected, "history": hist, "command_reply": seq}, sort_keys=True, indent=1, default=str))
print({t: v["version"] for t, v in expected.items()})
proj.close()
app.close()
