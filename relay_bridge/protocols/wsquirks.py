"""Known failures of the WebSocket library that are not failures of a call.

trio-websocket (0.12) answers a ping that arrives after its own close frame went out with a pong,
which wsproto refuses in that state (python-trio/trio-websocket#184): the library's reader task
raises ``LocalProtocolError`` out of the connection's nursery. It can only happen while a socket is
closing, when the call on it is over, so whoever owns that nursery may treat it as a closed socket.
"""

from __future__ import annotations

from wsproto.utilities import LocalProtocolError


def closing_pongs_only(exc: BaseException) -> bool:
    """Whether ``exc`` (an exception group, or one exception) is only that pong refusal."""
    if isinstance(exc, BaseExceptionGroup):
        return all(closing_pongs_only(e) for e in exc.exceptions)
    return isinstance(exc, LocalProtocolError) and "Pong" in str(exc)
