"""Baton's domain: the Task aggregate, the lifecycles of tasks and steps, plans, commands
and the application service. Nothing here imports from ``adapters`` or ``projections``."""
