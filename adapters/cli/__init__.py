"""``baton``: the command line of Baton.

Every command speaks the contract over NATS (``--nats URL``, ``--prefix``) and prints a human
view, or the raw reply with ``--json``. An error reply prints the contract's message to stderr
(``error 409 invalid_transition: cannot complete step 'b': it is cancelled``) and exits 2 for a
4xx, 1 for a 5xx or when no server answers; a user's mistake never shows a traceback.

Modules: ``parser`` (the parser and ``main``), ``common`` (exit codes, output, connecting),
``inputs`` (plans, values, step references), ``tasks`` and ``steps`` (the contract's commands and
queries), ``watch``, ``demo``, and ``admin`` (serve, ui, harness, schema, projections).
"""

from baton.adapters.cli.common import (
    EXIT_OK,
    EXIT_SERVER,
    EXIT_TASK_FAILED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
)
from baton.adapters.cli.parser import build_parser, main

__all__ = [
    "EXIT_OK",
    "EXIT_SERVER",
    "EXIT_TASK_FAILED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CliError",
    "build_parser",
    "main",
]
