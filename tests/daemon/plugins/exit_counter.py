"""An example third-party plugin, written only against `carte.plugins.api` (the acceptance of
issue 10: a plugin subscribes to `ContainerExited` typed and is tested with
`carte.plugins.testing`, see test_plugins_kit.py)."""

from carte.plugins.api import (
    ContainerExited,
    DaemonStopping,
    Handler,
    HandlerContext,
    HandlerOptions,
    InspectContainer,
    NotFound,
    on,
)


class ExitCounterOptions(HandlerOptions, frozen=True, kw_only=True):
    only_failures: bool = False
    """Count only exits with a non-zero code."""


class ExitCounter(Handler):
    """Counts container exits by image and remembers whether the daemon said goodbye."""

    name = "exit-counter"
    Options = ExitCounterOptions

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.by_image: dict[str, int] = {}
        self.said_goodbye = False

    @on(ContainerExited)
    async def count(self, fact: ContainerExited) -> None:
        options: ExitCounterOptions = self.ctx.options
        if options.only_failures and fact.exit_code == 0:
            return
        try:
            image = (await self.ctx.bus.request(InspectContainer(ref=fact.id))).image
        except NotFound:
            image = "(removed)"
        self.by_image[image] = self.by_image.get(image, 0) + 1

    @on(DaemonStopping)
    async def goodbye(self, fact: DaemonStopping) -> None:
        self.said_goodbye = True
