"""stop_on_signals: a SIGTERM stops a main thread that is waiting on the event.

The waiting loop below spins on ``stop.wait(0)``, so the main thread holds the
event's lock most of the time. A handler calling ``stop.set()`` directly hangs
such a process in most runs (7 of 10 when this test was written); through
stop_on_signals every run must exit.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from blizzard._signals import stop_on_signals

WAITER = """
import sys, threading
from blizzard._signals import stop_on_signals
with stop_on_signals(threading.Event()) as stop:
    print("ready", flush=True)
    while not stop.wait(0):
        pass
print("stopped", flush=True)
"""


def test_sigterm_stops_a_main_thread_spinning_on_the_event():
    for _ in range(10):
        child = subprocess.Popen([sys.executable, "-c", WAITER], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout.readline() == "ready\n"
            time.sleep(0.02)
            child.send_signal(signal.SIGTERM)
            out, _ = child.communicate(timeout=10)
        finally:
            child.kill()
            child.wait()
        assert child.returncode == 0
        assert out == "stopped\n"


def test_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(threading.Event()):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_it_changes_nothing():
    before = signal.getsignal(signal.SIGINT)
    seen = []

    def embedded_server():
        with stop_on_signals(threading.Event()) as stop:
            seen.append((signal.getsignal(signal.SIGINT), stop.is_set()))

    thread = threading.Thread(target=embedded_server)
    thread.start()
    thread.join()
    assert seen == [(before, False)]
