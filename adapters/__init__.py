"""Adapters: NATS, storage, CLI and the other edges of Baton."""
