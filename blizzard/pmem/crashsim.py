"""CrashSimMedia: a Media that can tell what a crash at this instant leaves.

Every 64-byte cache line of the buffer is, at any moment, in one of three
states, tracked per line (an 8-byte word never tears, and a line is written
back whole, so words of one line share its fate):

* **durable** -- its contents equal what the medium holds;
* **pending** -- flushed since the last fence: the medium holds either the
  old durable contents or the contents at flush time;
* **dirty** -- stored to since it was last flushed: the CPU may have evicted
  it (whole) at any time, so the medium may hold the durable contents, the
  flushed contents, or the current ones.

``drain()`` makes every pending line durable. Before it does, it calls
``fence_hook(media)`` if one is set, which is how a test stops an operation
"at fence k": the hook takes a ``crash_image`` and raises.

``crash_image(choose)`` asks ``choose(line, n_options)`` which of a line's
possible contents survive (0 = the durable contents, then the flushed
snapshot if any, then the current contents) and returns the whole image.
Tests drive ``choose`` with hypothesis; :func:`random_chooser` and
:func:`all_or_nothing` cover the common cases.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from blizzard.exceptions import InvalidSizeError
from blizzard.pmem.media import LINE_SIZE, Media

_COMPARE_BLOCK = 4096  # compare in pages first: most of a pool is clean
assert _COMPARE_BLOCK % LINE_SIZE == 0

Chooser = Callable[[int, int], int]


class CrashSimMedia(Media):
    """Volatile buffer + durable image + pending (flushed, unfenced) lines."""

    durability = "simulated: crash_image() gives any state a crash could leave"

    def __init__(self, size: int, *, image: bytes | None = None) -> None:
        if size <= 0 or size % _COMPARE_BLOCK:
            raise InvalidSizeError(
                f"CrashSimMedia size must be a positive multiple of {_COMPARE_BLOCK}"
            )
        self.size = size
        self._live = bytearray(image if image is not None else size)
        if len(self._live) != size:
            raise InvalidSizeError(f"image is {len(self._live)} bytes, expected {size}")
        self._durable = bytearray(self._live)
        self._pending: dict[int, bytes] = {}
        self.buf = memoryview(self._live)
        self.fences = 0
        self.flushes = 0
        self.fence_hook: Callable[[CrashSimMedia], None] | None = None

    @classmethod
    def from_image(cls, image: bytes) -> CrashSimMedia:
        """A media whose durable and current contents are ``image``."""
        return cls(len(image), image=image)

    # -- Media protocol --------------------------------------------------------

    def flush(self, off: int, n: int) -> None:
        if n <= 0:
            return
        assert off >= 0 and off + n <= self.size, (off, n)
        self.flushes += 1
        live = self._live
        pending = self._pending
        first = off // LINE_SIZE
        last = (off + n - 1) // LINE_SIZE
        for line in range(first, last + 1):
            start = line * LINE_SIZE
            pending[line] = bytes(live[start : start + LINE_SIZE])

    def drain(self) -> None:
        self.fences += 1
        if self.fence_hook is not None:
            self.fence_hook(self)
        durable = self._durable
        for line, contents in self._pending.items():
            start = line * LINE_SIZE
            durable[start : start + LINE_SIZE] = contents
        self._pending.clear()

    def close(self) -> None:
        self.buf.release()
        self.buf = None  # type: ignore[assignment]

    # -- crash images ------------------------------------------------------------

    def unsettled_lines(self) -> list[int]:
        """Lines whose fate at a crash is open: pending, or dirty (live != durable)."""
        live, durable = self._live, self._durable
        lines = set(self._pending)
        for block in range(0, self.size, _COMPARE_BLOCK):
            end = block + _COMPARE_BLOCK
            if live[block:end] == durable[block:end]:
                continue
            for start in range(block, end, LINE_SIZE):
                if live[start : start + LINE_SIZE] != durable[start : start + LINE_SIZE]:
                    lines.add(start // LINE_SIZE)
        return sorted(lines)

    def crash_image(self, choose: Chooser) -> bytes:
        """The medium's contents after a crash now, lines chosen by ``choose``."""
        image = bytearray(self._durable)
        live, pending = self._live, self._pending
        for line in self.unsettled_lines():
            start = line * LINE_SIZE
            options = [bytes(image[start : start + LINE_SIZE])]
            if line in pending:
                options.append(pending[line])
            options.append(bytes(live[start : start + LINE_SIZE]))
            pick = choose(line, len(options))
            if not 0 <= pick < len(options):
                raise ValueError(f"chooser picked option {pick} of {len(options)} for line {line}")
            image[start : start + LINE_SIZE] = options[pick]
        return bytes(image)

    def durable_image(self) -> bytes:
        """What survives if no unfenced line was written back."""
        return bytes(self._durable)


def random_chooser(seed: int) -> Chooser:
    """Each unsettled line independently takes a uniformly random option."""
    rng = random.Random(seed)
    return lambda line, n: rng.randrange(n)


def all_or_nothing(take_newest: bool) -> Chooser:
    """Every unsettled line keeps its durable contents, or takes its newest."""
    return (lambda line, n: n - 1) if take_newest else (lambda line, n: 0)
