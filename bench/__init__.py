"""Baton's benchmarks: ``make bench`` (``python -m bench [NAME ...] [--quick]``).

Each prints min / median / max over several runs and a ratio against a baseline measured in
the same run; goals are printed as MET or MISSED, never asserted. See ``bench/__main__.py``
for the names, and each module's docstring for what it measures and against what:

- ``baselines``: raw eventsourcing writes on the same disk (context);
- ``commands`` (1): commands over NATS at 1, 16, 100 in flight vs a bare micro echo;
- ``transitions`` (2): durable step transitions vs LangGraph and DBOS on SQLite;
- ``rebuild`` (3): projection rebuild vs a raw read of the decoded log;
- ``scale`` (4): command and query cost, and service memory, from 1,000 to 100,000 tasks;
- ``longtask`` (5): a task with 10,000 events vs a fresh one;
- ``postgres`` (6): benchmark 1 on PostgreSQL;
- ``plansize`` (7): per-step cost at 100 and 1,000 steps, in process and over NATS, vs seed
  004's in-memory TaskQueue on the same ladder plan;
- ``profile``: py-spy on the service at 100 in flight, summarised by own and inclusive time.
"""
