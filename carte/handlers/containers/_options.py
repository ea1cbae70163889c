"""The containers handler's options: the ``containers:`` section of carte.yaml (also read by
the restart handler, for its backoff)."""

from carte.engine.config import HandlerOptions, Positive, PositiveInt


class RestartBackoffOptions(HandlerOptions, frozen=True, kw_only=True):
    """Restart policy backoff (seconds): ``base`` doubling to ``cap``; ``reset`` after running
    this long."""

    base: Positive = 10.0
    cap: Positive = 300.0
    reset: Positive = 600.0


class ContainerLogOptions(HandlerOptions, frozen=True, kw_only=True):
    """Container log files: rotate at ``max_size`` bytes, keep ``max_file`` files."""

    max_size: PositiveInt = 10 * 1024 * 1024
    max_file: PositiveInt = 3


class ContainersOptions(HandlerOptions, frozen=True, kw_only=True):
    restart: RestartBackoffOptions = RestartBackoffOptions()
    log: ContainerLogOptions = ContainerLogOptions()
    stop_timeout: PositiveInt = 10
    """Seconds `carte stop` waits after the stop signal before SIGKILL, by default."""
