"""The Session aggregate (a session's running task and its queue) and CommandRecord (the first
reply to a command that carried an id)."""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as BaseSnapshot
from eventsourcing.utils import register_topic

from baton.domain import ids


class Session(Aggregate):
    """The agent or conversation tasks belong to: at most one running task, the rest queued."""

    TOPIC: ClassVar[str] = "baton:Session"

    class Event(Aggregate.Event):
        pass

    class Created(Aggregate.Created):
        TOPIC = "baton:Session.Created"
        session_id: str

    class TaskQueued(Event):
        TOPIC = "baton:Session.TaskQueued"
        task_id: str

        def apply(self, session: Session) -> None:
            session.queue.append(self.task_id)

    class TaskActivated(Event):
        TOPIC = "baton:Session.TaskActivated"
        task_id: str

        def apply(self, session: Session) -> None:
            session.running = self.task_id
            if self.task_id in session.queue:
                session.queue.remove(self.task_id)

    class TaskReleased(Event):
        TOPIC = "baton:Session.TaskReleased"
        task_id: str

        def apply(self, session: Session) -> None:
            if session.running == self.task_id:
                session.running = None
            if self.task_id in session.queue:
                session.queue.remove(self.task_id)

    class Snapshot(BaseSnapshot):
        TOPIC = "baton:Session.Snapshot"

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.running: str | None = None
        self.queue: list[str] = []

    @classmethod
    def create(cls, session_id: str) -> Session:
        return cls._create(cls.Created, id=ids.session_uuid(session_id), session_id=session_id)

    def admit(self, task_id: str) -> bool:
        """Admits a new task: running when the session is free (True), else queued (False)."""
        if self.running is None:
            self.trigger_event(self.TaskActivated, task_id=task_id)
            return True
        self.trigger_event(self.TaskQueued, task_id=task_id)
        return False

    def release(self, task_id: str) -> str | None:
        """Releases an ended task; activates and returns the next queued task, if any."""
        was_running = self.running == task_id
        self.trigger_event(self.TaskReleased, task_id=task_id)
        if was_running and self.queue:
            next_id = self.queue[0]
            self.trigger_event(self.TaskActivated, task_id=next_id)
            return next_id
        return None


class CommandRecord(Aggregate):
    """The first reply to a command that carried an id; a repeat gets it again."""

    TOPIC: ClassVar[str] = "baton:CommandRecord"

    class Created(Aggregate.Created):
        TOPIC = "baton:CommandRecord.Created"
        command_id: str
        subject: str
        reply: Any

    def __init__(self, command_id: str, subject: str, reply: Any) -> None:
        self.command_id = command_id
        self.subject = subject
        self.reply = reply

    @classmethod
    def create(cls, command_id: str, subject: str, reply: Any) -> CommandRecord:
        return cls._create(
            cls.Created,
            id=ids.command_uuid(command_id),
            command_id=command_id,
            subject=subject,
            reply=reply,
        )


register_topic(Session.Snapshot.TOPIC, Session.Snapshot)
