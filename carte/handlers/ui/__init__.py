"""The web dashboard (`carte daemon --ui`): server-rendered pages, a little script, live logs
over a WebSocket, served on a loopback listener behind a login token and on the API's
listeners (mutual TLS over TCP). See `_handler` for the listeners and `_auth` for the checks.
"""

from carte.handlers.ui._handler import UiHandler
from carte.handlers.ui._options import UiOptions

__all__ = ["UiHandler", "UiOptions"]
