"""The containers handler's options: the ``containers:`` section of carte.yaml (also read by
the restart handler, for its backoff)."""

from typing import Annotated

import msgspec

from carte.api.containers import ContainerConfig, Resources
from carte.api.errors import InvalidArgument
from carte.engine.config import HandlerOptions, Positive, PositiveInt

_Ceiling = Annotated[int, msgspec.Meta(ge=1, le=2**62)]


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
    max_ports: _Ceiling = 1000
    """Ports one container publishes (`-p`, ranges counted port by port, and `-P`)."""
    max_ulimit: _Ceiling = 2**40
    """The largest soft or hard value of a `--ulimit` (-1, unlimited, is always allowed)."""

    def check_ports(self, config: ContainerConfig) -> None:
        """`InvalidArgument` when a container publishes more ports than `max_ports`."""
        if len(config.ports) > self.max_ports:
            raise InvalidArgument(
                f"-p publishes {len(config.ports)} ports, above the ceiling of "
                f"{self.max_ports} (containers.max_ports in carte.yaml); publish fewer or "
                "raise the ceiling"
            )

    def check_ulimits(self, resources: Resources) -> None:
        """`InvalidArgument` for a `--ulimit` value below -1 or above `max_ulimit`."""
        for ulimit in resources.ulimits:
            for value in (ulimit.soft, ulimit.hard):
                if value < -1 or value > self.max_ulimit:
                    raise InvalidArgument(
                        f"--ulimit {ulimit.name}={ulimit.soft}:{ulimit.hard}: {value} is "
                        f"outside -1..{self.max_ulimit} (containers.max_ulimit in carte.yaml); "
                        "use a smaller value, -1 for unlimited, or raise the ceiling"
                    )
