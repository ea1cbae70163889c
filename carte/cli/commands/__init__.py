"""The client's commands, one module per area, and the framework they register with.

Each area module (`containers`, `images`, `network`, ...) exposes ``register(commands)`` and is
listed in `carte.cli.parser.COMMAND_MODULES`; only the invoked command's module is imported.
"""

from carte.cli.commands._framework import (
    Commands,
    Session,
    UsageError,
    add_inspect_format,
    add_log_window,
    add_template_format,
    each,
    fail,
    inspect_arguments,
    inspect_each,
    listed,
    remove_each,
    show_inspected,
    templated,
    warn,
)

__all__ = [
    "Commands",
    "Session",
    "UsageError",
    "add_inspect_format",
    "add_log_window",
    "add_template_format",
    "each",
    "fail",
    "inspect_arguments",
    "inspect_each",
    "listed",
    "remove_each",
    "show_inspected",
    "templated",
    "warn",
]
