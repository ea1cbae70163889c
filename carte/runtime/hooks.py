"""Run the spec's lifecycle hooks (runtime-spec config.md "POSIX-platform Hooks").

Each hook is exec'd at its `path` with `args` as its argv (just the path when empty) and
exactly `env` as its environment, the container's state JSON on its stdin, its stdout and
stderr those of the runtime. A hook fails when it cannot be started, exits non-zero, is killed
by a signal, or outlives its `timeout` (it is then killed). Which failures are fatal is the
caller's choice: `run_hooks` raises on the first one (prestart, createRuntime,
createContainer, startContainer abort), `run_hooks_warning` reports each one on stderr and goes
on (poststart, poststop), as the spec's lifecycle says.

Everything here is imported before pivot_root, so createContainer and startContainer hooks can
run inside the container too.
"""

from __future__ import annotations

import subprocess
import sys

import msgspec

from carte.runtime.spec import Hook
from carte.runtime.state import OCIState

__all__ = ["HookFailed", "run_hooks", "run_hooks_warning"]

_encoder = msgspec.json.Encoder()


class HookFailed(Exception):
    """A hook failed; the message is one line naming the hook kind, its path and why."""


def _run_one(kind: str, index: int, hook: Hook, payload: bytes) -> None:
    name = f"{kind} hook {index} ({hook.path})"
    try:
        completed = subprocess.run(
            hook.args or [hook.path],
            executable=hook.path,
            input=payload,
            env=dict(item.partition("=")[::2] for item in hook.env),
            timeout=hook.timeout,
            close_fds=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HookFailed(f"{name} timed out after {hook.timeout} s and was killed") from None
    except OSError as error:
        raise HookFailed(f"{name} cannot be run: {error.strerror or error}") from None
    if completed.returncode < 0:
        raise HookFailed(f"{name} was killed by signal {-completed.returncode}")
    if completed.returncode != 0:
        raise HookFailed(f"{name} exited with status {completed.returncode}")


def run_hooks(kind: str, hooks: list[Hook], state: OCIState) -> None:
    """Run `hooks` in order with `state` on stdin; raise `HookFailed` at the first failure
    (the later ones are not run)."""
    payload = _encoder.encode(state)
    for index, hook in enumerate(hooks):
        _run_one(kind, index, hook, payload)


def run_hooks_warning(kind: str, hooks: list[Hook], state: OCIState) -> list[str]:
    """Run every hook of `hooks`; each failure is printed to stderr as a warning and the rest
    still run. Returns the warnings."""
    payload = _encoder.encode(state)
    warnings = []
    for index, hook in enumerate(hooks):
        try:
            _run_one(kind, index, hook, payload)
        except HookFailed as failure:
            warnings.append(str(failure))
            print(f"carte runtime: warning: {failure}", file=sys.stderr, flush=True)
    return warnings
