"""The shim: one small parent process per container (protocol in docs/shim.md).

The shim's own side is private to this package: `_main` picks the sub-mode, `_create` makes the
container and detaches, `_monitor` (with `_loop`, `_stdio`, `_connections`) serves `shim.sock`
and reaps, `_exec` and `_runtime_steps` run exec/delete with the full runtime, `_factory` is the
warm process that forks shims, `_options` parses the command line.

The daemon's side is public: `client` starts shims and talks to them; `protocol` is the line
protocol both sides speak. Importing this package imports nothing heavy (shim start-up speed).
"""

from carte.runtime.shim._main import main

__all__ = ["main"]
