"""The event engine: bus, handlers, registry, supervisor, journal, state store, config, logs.

It knows nothing of containers; handlers bring that. See docs/architecture.md.
"""

from carte.engine.bus import Bus
from carte.engine.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    parse_config,
    reload,
    reloaded,
)
from carte.engine.handler import Handler, HandlerContext, on
from carte.engine.journal import Journal
from carte.engine.log import set_log_level, setup_logging
from carte.engine.roster import Plan, Roster, RosterError
from carte.engine.store import (
    Change,
    Delete,
    Entry,
    Put,
    SqliteStore,
    Store,
    Watch,
    WatchLagged,
    open_sqlite_store,
)
from carte.engine.supervisor import HandlerState, HandlerStatus, Supervisor

__all__ = [
    "Bus",
    "Change",
    "Config",
    "ConfigError",
    "Delete",
    "Entry",
    "Handler",
    "HandlerContext",
    "HandlerState",
    "HandlerStatus",
    "Journal",
    "Plan",
    "Put",
    "Roster",
    "RosterError",
    "SqliteStore",
    "Store",
    "Supervisor",
    "Watch",
    "WatchLagged",
    "apply_overrides",
    "load_config",
    "on",
    "open_sqlite_store",
    "parse_config",
    "reload",
    "reloaded",
    "set_log_level",
    "setup_logging",
]
