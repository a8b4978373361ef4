"""Polling from the asyncio loop itself: a selector that also reads DPDK.

A poll-mode transport has no descriptor to put in epoll, so instead of a
poller task beside the loop (a turn of the loop per poll, a thread hop per
frame) the loop's own selector does the polling. Each time the loop is
about to wait it calls :meth:`PollingSelector.select`, which

1. pushes out the frames staged by the turn that just ran (one burst per
   link: every message sent in a turn shares it),
2. takes the frames that arrived and hands them to the receivers (their
   callbacks only schedule work on the loop),
3. returns at once if that, or any descriptor, gave the loop work; else
4. waits in C without the GIL (``bz_wait``): spins on the rings, then
   polls with ``sched_yield`` so other processes get the core, then sleeps
   in epoll on the loop's own descriptors -- a peer rings the doorbell
   descriptor when it sends to a sleeping node -- until a frame, an event
   or the loop's next timer.

A loop built by :func:`new_event_loop` does this for every poller attached
to its selector. With more than one poller (several nodes in one process:
tests) the C wait is not used: they are polled in turn, with short sleeps.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import weakref
from typing import Protocol

WAKE_RX = 1
MULTI_SLEEP_S = 0.0002
MULTI_SPIN_ROUNDS = 20


class Poller(Protocol):
    def flush(self) -> None:
        """Push out staged frames."""

    def receive(self) -> int:
        """Take arrived frames and deliver them; how many were taken."""

    def wait(self, epoll_fd: int, timeout_ns: int) -> int:
        """Block until a frame, an event on ``epoll_fd``, or the timeout (-1: none)."""



class PollingSelector(selectors.EpollSelector):
    """An epoll selector that polls the attached transports (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.pollers: list[Poller] = []

    def attach(self, poller: Poller) -> None:
        self.pollers.append(poller)

    def detach(self, poller: Poller) -> None:
        if poller in self.pollers:
            self.pollers.remove(poller)

    def select(self, timeout: float | None = None):
        pollers = self.pollers
        if not pollers:
            return super().select(timeout)
        got = 0
        for poller in pollers:
            poller.flush()
            got += poller.receive()
        if got or (timeout is not None and timeout <= 0):
            return super().select(0)
        if len(pollers) == 1:
            poller = pollers[0]
            timeout_ns = -1 if timeout is None else int(timeout * 1e9)
            if poller.wait(self.fileno(), timeout_ns) == WAKE_RX:
                poller.receive()
            return super().select(0)
        return self._select_several(pollers, timeout)

    def _select_several(self, pollers: list[Poller], timeout: float | None):
        events = super().select(0)
        if events:
            return events
        for _ in range(MULTI_SPIN_ROUNDS):
            if sum(p.receive() for p in pollers):
                return super().select(0)
            os.sched_yield()
        short = MULTI_SLEEP_S if timeout is None else min(timeout, MULTI_SLEEP_S)
        events = super().select(short)
        for poller in pollers:
            poller.receive()
        return events


_selectors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An asyncio loop whose selector polls the DPDK transports started on it."""
    selector = PollingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    _selectors[loop] = selector
    return loop


def selector_of(loop: asyncio.AbstractEventLoop) -> PollingSelector | None:
    """The loop's :class:`PollingSelector`; None if :func:`new_event_loop` did not build it."""
    return _selectors.get(loop)
