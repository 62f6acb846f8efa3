"""The read side: views of tasks kept from the event log, in the same store as the events."""

from baton.projections.projector import Projections

__all__ = ["Projections"]
