"""`carte daemon`: the composition root. Config, lock, store, handlers, one trio run.

Start-up: parse flags, load carte.yaml (flags win), take the root lock, build the handler
roster from `carte.handlers.BUILTIN` plus the `carte.plugins` entry points, plan it with the
enable/disable lists, then run the supervisor. Signals: SIGTERM/SIGINT stop gracefully (the
process exits 1 if cleanup overruns `daemon.shutdown_timeout`), SIGHUP reloads carte.yaml.

Every start-up problem (bad flag, bad config, root in use, a plugin that fails to load) is
one line on stderr and exit code 1 (2 for usage errors); never a traceback.
"""

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from pathlib import Path

import trio

from carte import __version__
from carte.api.errors import CarteError
from carte.api.events import (
    ConfigReloaded,
    DaemonStarted,
    DaemonStarting,
    DaemonStopping,
    HandlerDisabled,
)
from carte.daemon_lock import DaemonLock, RootInUse
from carte.engine import Bus, Handler, HandlerContext, Roster, Supervisor, open_sqlite_store
from carte.engine.config import (
    Config,
    ConfigError,
    OptionsSpec,
    StoreConfig,
    apply_overrides,
    handler_options,
    load_config,
    reload,
    reloaded,
)
from carte.engine.log import set_log_level, setup_logging
from carte.engine.store import Store
from carte.engine.timing import TimedStore

SYSTEM_CONFIG = Path("/etc/carte/carte.yaml")
PLUGIN_GROUP = "carte.plugins"
DAEMON_PID_FILE = "daemon.pid"

log = logging.getLogger("carte.daemon")


class StartupError(Exception):
    """The daemon cannot start; `str()` is the one line to show."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="carte daemon",
        description="Run the Carte daemon: the engine behind the API socket.",
        allow_abbrev=False,
    )
    parser.add_argument("--root", help="storage root (default /var/lib/carte)")
    parser.add_argument("--run-root", help="runtime state: sockets, pid files (default /run/carte)")
    parser.add_argument("--socket", help="API socket path (default RUN_ROOT/carte.sock)")
    parser.add_argument(
        "--docker-socket",
        metavar="PATH",
        help="also serve Docker's Engine API on this socket (off by default)",
    )
    parser.add_argument(
        "--config",
        help=f"carte.yaml to load (default {SYSTEM_CONFIG} when it exists, else built-in defaults)",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="log verbosity"
    )
    parser.add_argument(
        "--listen",
        metavar="tcp://ADDR:PORT",
        help="also serve the API over mutual TLS on this address (cluster CA certificates)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="plain HTTP on --listen; refused unless the address is loopback",
    )
    parser.add_argument(
        "--ui",
        action="store_true",
        help="serve the web dashboard: on --ui-listen with the login token in ROOT/ui-token, "
        "and on --listen (mutual TLS)",
    )
    parser.add_argument(
        "--ui-listen",
        metavar="HOST:PORT",
        help="loopback address of the dashboard's token login (default 127.0.0.1:7780; "
        "implies --ui)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="ADDR:PORT",
        help="also serve GET /metrics over plain HTTP here (loopback only unless "
        "--metrics-insecure)",
    )
    parser.add_argument(
        "--metrics-insecure",
        action="store_true",
        default=None,
        help="allow a --metrics-listen address that is not loopback (no authentication)",
    )
    parser.add_argument(
        "--audit-log",
        metavar="PATH",
        help="append the audit log of state-changing API calls here (default ROOT/audit/audit.log)",
    )
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace, roster: Roster | None = None) -> Config:
    """carte.yaml with the flags applied, each handler's options checked against the
    ``roster``'s ``Options``. Raises ConfigError (one line)."""
    path = args.config or (SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None)
    config = apply_overrides(
        load_config(path, options_specs(roster)),
        {
            "daemon.root": _absolute(args.root),
            "daemon.run_root": _absolute(args.run_root),
            "daemon.socket": _absolute(args.socket),
            "daemon.log_level": args.log_level,
            "cluster.listen": args.listen,
            "cluster.insecure": args.insecure,
        },
    )
    if args.docker_socket:
        docker = dict(config.handlers.options.get("docker", {}))
        docker["socket"] = _absolute(args.docker_socket)
        config = apply_overrides(config, {"handlers.options.docker": docker})
    if args.ui or args.ui_listen:
        config = apply_overrides(config, {"handlers.options.ui": _ui_options(config, args)})
    flagged = {
        "metrics": {"listen": args.metrics_listen, "insecure": args.metrics_insecure},
        "api": {"audit_log": _absolute(args.audit_log)},
    }
    for name, values in flagged.items():
        given = {key: value for key, value in values.items() if value is not None}
        if given:
            merged = {**config.handlers.options.get(name, {}), **given}
            config = apply_overrides(config, {f"handlers.options.{name}": merged})
            check_handler_options(config, roster, name)
    return config


def check_handler_options(config: Config, roster: Roster | None, name: str) -> None:
    """Raise ConfigError (one line) when a flag made handler ``name``'s options invalid."""
    handler = roster.get(name) if roster is not None else None
    if handler is not None:
        handler_options(config, handler.options_spec())


def _ui_options(config: Config, args: argparse.Namespace) -> dict[str, object]:
    """``handlers.options.ui`` with --ui/--ui-listen applied; ConfigError for a bad address."""
    import msgspec

    from carte.handlers.ui import UiOptions

    ui = dict(config.handlers.options.get("ui", {}), enabled=True)
    if args.ui_listen:
        ui["listen"] = args.ui_listen
    try:
        msgspec.convert(ui, UiOptions)
    except (msgspec.ValidationError, ValueError) as error:
        raise ConfigError(f"--ui-listen: {error}") from None
    return ui


def options_specs(roster: Roster | None) -> list[OptionsSpec] | None:
    """Where carte.yaml holds each installed handler's options (None: not checked)."""
    if roster is None:
        return None
    return [handler.options_spec() for name in roster.names if (handler := roster.get(name))]


def _absolute(path: str | None) -> str | None:
    return str(Path(path).absolute()) if path else None


def load_handlers() -> tuple[Roster, set[str]]:
    """The roster of built-ins and plugins, and the names that came from plugins.

    Raises StartupError naming the plugin when an entry point fails to import or is not a
    Handler; a duplicate name is a RosterError from the roster.
    """
    from carte.handlers import BUILTIN

    roster = Roster(BUILTIN)
    plugins: set[str] = set()
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            handler = entry.load()
        except Exception as error:
            raise StartupError(
                f'carte daemon: plugin "{entry.name}" ({entry.value}) failed to load: '
                f"{type(error).__name__}: {error}; fix or uninstall it, or disable it in carte.yaml"
            ) from None
        if not (isinstance(handler, type) and issubclass(handler, Handler)):
            raise StartupError(
                f'carte daemon: plugin "{entry.name}" ({entry.value}) is not a Handler subclass; '
                "its entry point must name the handler class"
            )
        roster.add(handler)
        plugins.add(handler.name)
    return roster, plugins


def _refuse_live_socket(path: Path) -> None:
    """Raise StartupError when another daemon already answers on `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return
    finally:
        probe.close()
    raise StartupError(
        f"carte daemon: socket {path} is served by another daemon; stop it or use another --socket"
    )


@asynccontextmanager
async def open_store(config: StoreConfig, root: Path) -> AsyncIterator[Store]:
    """The state store carte.yaml chooses: SQLite in ROOT/state.db (the default) or etcd.

    etcd is not contacted here: handlers get Unavailable while it is away and their
    supervisor restarts them with backoff; running containers are left alone.
    """
    if config.backend == "sqlite":
        async with open_sqlite_store(root / "state.db") as sqlite:
            yield sqlite
        return
    from carte.engine.store_etcd import open_etcd_store, tls_context

    tls = config.tls
    context = tls_context(tls.ca, tls.cert, tls.key) if tls.ca or tls.cert else None
    log.info("state store: etcd", extra={"endpoints": ",".join(config.endpoints)})
    async with open_etcd_store(config.endpoints, namespace=config.prefix, tls=context) as etcd:
        yield etcd


class Daemon:
    """One running daemon: its config, bus, supervisor and signal handling."""

    def __init__(self, config: Config, roster: Roster, config_path: str | None) -> None:
        self.config = config
        self.roster = roster
        self.config_path = config_path
        self.overrides: dict[str, object] = {}

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT; returns after a graceful stop.

        Raises CarteError (one line) when the handler plan is invalid.
        """
        config = self.config
        plan = self.roster.plan(enabled=config.handlers.enabled, disabled=config.handlers.disabled)
        for name in plan.unknown_disabled:
            log.warning("handlers.disabled names no installed handler", extra={"handler": name})
        root, run_root = Path(config.daemon.root), Path(config.daemon.run_root)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            bus = Bus(
                journal_size=config.bus.journal_size,
                subscriber_buffer=config.bus.subscriber_buffer,
                log=logging.getLogger("carte.engine.bus"),
            )
            async with open_store(config.store, root) as opened:
                store = TimedStore(opened)  # every operation's latency, for /metrics
                ctx = HandlerContext(
                    bus=bus, store=store, config=config, root=root, run_root=run_root
                )
                supervisor = Supervisor(plan, ctx)
                await bus.publish(
                    DaemonStarting(id="daemon", pid=os.getpid(), handlers=list(plan.names))
                )
                for name in plan.disabled:
                    await bus.publish(
                        HandlerDisabled(id=name, reason="disabled in carte.yaml (handlers)")
                    )
                async with trio.open_nursery() as nursery:
                    await nursery.start(supervisor.run)
                    await bus.publish(
                        DaemonStarted(id="daemon", pid=os.getpid(), version=__version__)
                    )
                    log.info(
                        "daemon ready",
                        extra={
                            "pid": os.getpid(),
                            "socket": str(config.daemon.socket_path),
                            "root": str(root),
                            "handlers": ",".join(plan.names),
                        },
                    )
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            await self._reload(bus, supervisor)
                            continue
                        reason = signal.Signals(signum).name
                        log.info("daemon stopping", extra={"signal": reason})
                        _exit_if_stuck(self.config.daemon.shutdown_timeout)
                        # every subscriber handles it (the webhook posts it) before the cancel
                        with trio.move_on_after(min(5.0, self.config.daemon.shutdown_timeout / 2)):
                            await supervisor.announce(DaemonStopping(id="daemon", reason=reason))
                        nursery.cancel_scope.cancel()
                        break

    async def _reload(self, bus: Bus, supervisor: Supervisor) -> None:
        """Re-read carte.yaml; apply what can change live, log what needs a restart."""
        try:
            specs = options_specs(self.roster)
            fresh = apply_overrides(load_config(self.config_path, specs), self.overrides)
        except ConfigError as error:
            log.error("config reload failed; keeping the running config", extra={"error": error})
            return
        applied, not_reloadable = reload(self.config, fresh)
        self.config = reloaded(self.config, fresh)
        set_log_level(self.config.daemon.log_level)
        bus.journal.resize(self.config.bus.journal_size)
        supervisor.reconfigure(self.config)
        for path in not_reloadable:
            log.warning("config change needs a restart", extra={"key": path})
        log.info("config reloaded", extra={"applied": ",".join(applied) or "nothing"})
        await bus.publish(
            ConfigReloaded(id="daemon", applied=applied, not_reloadable=not_reloadable)
        )


def _exit_if_stuck(timeout: float) -> None:
    """Arm a watchdog: if cleanup overruns `timeout`, log one line and exit 1 at once."""

    def give_up() -> None:
        log.error("shutdown overran daemon.shutdown_timeout; exiting", extra={"timeout": timeout})
        os._exit(1)

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()


def main() -> None:
    """Entry point of `carte daemon` (argv[2:] are its flags)."""
    run_daemon(sys.argv[2:])


def _remove_interrupted_writes(root: Path) -> None:
    """Half-unpacked layers and temp blobs a killed daemon left (never waits for a writer)."""
    from carte.image.gc import remove_interrupted_unpacks
    from carte.image.store import ImageStore

    removed = remove_interrupted_unpacks(ImageStore(root))
    if removed:
        log.info("removed half-unpacked layers", extra={"count": len(removed)})


def run_daemon(argv: list[str]) -> None:
    """Run the daemon with `argv` flags; exits 0 after a graceful stop, 1 on a start-up error."""
    args = parse_args(argv)
    try:
        roster, _ = load_handlers()
        config = config_from_args(args, roster)
        setup_logging(config.daemon.log_level)
        lock = DaemonLock(Path(config.daemon.root), Path(config.daemon.run_root))
        lock.acquire()
        _remove_interrupted_writes(Path(config.daemon.root))
        pid_file = write_pid_file(Path(config.daemon.run_root))
    except (ConfigError, StartupError, RootInUse, CarteError) as error:
        print(_one_line(error), file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        print(f"carte daemon: cannot prepare {error.filename}: {error.strerror}", file=sys.stderr)
        sys.exit(1)
    try:
        _refuse_live_socket(config.daemon.socket_path)
        daemon = Daemon(config, roster, args.config or _system_config_if_present())
        daemon.overrides = {
            "daemon.root": config.daemon.root,
            "daemon.run_root": config.daemon.run_root,
            "daemon.socket": config.daemon.socket,
            "daemon.log_level": args.log_level,
            "cluster.listen": args.listen,
            "cluster.insecure": args.insecure,
            "handlers.options.ui": config.handlers.options.get("ui")
            if args.ui or args.ui_listen
            else None,
            "handlers.options.metrics": config.handlers.options.get("metrics")
            if args.metrics_listen or args.metrics_insecure
            else None,
            "handlers.options.api": config.handlers.options.get("api") if args.audit_log else None,
        }
        trio.run(daemon.run)
    except (StartupError, CarteError) as error:
        print(_one_line(error), file=sys.stderr)
        sys.exit(1)
    finally:
        remove_pid_file(pid_file)
        lock.release()
    log.info("daemon stopped")


def write_pid_file(run_root: Path) -> Path:
    """Write this process's pid to RUN_ROOT/daemon.pid, so `kill $(cat daemon.pid)` reaches the
    daemon itself; a supervisor (install.sh's restart loop) keeps its own in supervisor.pid."""
    path = run_root / DAEMON_PID_FILE
    temporary = path.with_name(DAEMON_PID_FILE + ".tmp")
    temporary.write_text(f"{os.getpid()}\n")
    temporary.replace(path)
    return path


def remove_pid_file(path: Path) -> None:
    """Remove the pid file if it still names this process (a successor may have replaced it)."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def _system_config_if_present() -> str | None:
    return str(SYSTEM_CONFIG) if SYSTEM_CONFIG.exists() else None


def _one_line(error: BaseException) -> str:
    text = str(error)
    return text if text.startswith("carte daemon:") else f"carte daemon: {text}"
