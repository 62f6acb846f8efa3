"""``python -m adapters``: serves Baton with the settings of the environment."""

from adapters.bootstrap import main

main()
