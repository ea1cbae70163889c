"""Pick the mode from argv[1]; nothing else.

Each mode imports only what it needs: the client must start close to a bare interpreter and
the per-container processes (shim, init) must stay small, so nothing heavy is imported here.
"""

import sys


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode in ("shim", "init", "runtime"):
        # msgspec uses `typing` when typing_extensions is missing; the latter imports
        # `inspect` (ast, dis, tokenize...): ~8 ms of CPU at every start of a runtime process
        # (a `carte runtime run`, each health probe's exec helper). Nothing else here needs it.
        sys.modules.setdefault("typing_extensions", None)  # type: ignore[arg-type]
    if mode == "daemon":
        from carte.daemon import main as run
    elif mode == "shim":
        from carte.runtime.shim import main as run
    elif mode == "init":
        from carte.runtime.init import main as run
    elif mode == "runtime":
        from carte.runtime.cli import main as run
    else:
        from carte.cli import main as run
    run()


if __name__ == "__main__":
    main()
