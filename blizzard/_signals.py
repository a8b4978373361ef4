"""Stop a serving loop on SIGTERM or SIGINT without deadlocking it.

A Python signal handler runs in the main thread between two bytecodes, and that
thread may be inside ``threading.Event.wait`` holding the event's own lock. A
handler that calls ``event.set()`` then waits for a lock its own thread holds, and
the process hangs until SIGKILL. The handler here hands ``set`` to a short-lived
thread instead: that thread takes the lock as soon as the main thread's wait lets
it go, which is as soon as the handler returns.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event,
                    signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[threading.Event]:
    """Set ``stop`` when one of ``signals`` arrives, for the duration of the block.

    Outside the main thread (a server run by a test, say) signals cannot be
    caught, and this does nothing. The previous handlers are restored on exit,
    so a program that embeds a server keeps its own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        threading.Thread(target=stop.set, name="stop-on-signal", daemon=True).start()

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
