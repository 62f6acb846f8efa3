"""``python -m baton.adapters``: serves Baton with the settings of the environment."""

from baton.adapters.bootstrap import main

main()
