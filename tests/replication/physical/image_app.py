"""A primary that runs the seeded workload of the mirror tests, for the image test
over a transport that needs one node per process (DPDK).

    python -m tests.replication.physical.image_app CONFIG SEED OPS RELEASE_FILE

Opens node 1 as primary over the config's ``[transport]``, runs
``conftest.workload`` (all four structures), waits until every backup
acknowledged every fence, checks the model, prints ``image <BLAKE2b hex>`` of
the whole pool, then waits for RELEASE_FILE to exist before closing (so the
test compares the backups' files with the pool as it was when printed).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from blizzard.cluster import config as configmod
from blizzard.cluster.physical import close_primary, close_transport, mirror_transport, open_primary
from tests.replication.physical.conftest import check_model, workload

RELEASE_TIMEOUT_S = 300.0


def main(argv: list[str]) -> int:
    config = configmod.load(argv[0])
    seed, ops, release = int(argv[1]), int(argv[2]), Path(argv[3])
    transport = mirror_transport(config, 1)
    try:
        rep = open_primary(config, 1, transport=transport, ready_timeout_s=120)
        try:
            model = workload(rep.pool, seed, ops)
            assert rep.mirror.sync(every=True), rep.mirror.backups()
            assert rep.mirror.stats.failures == 0
            check_model(rep.pool, model)
            print(f"image {hashlib.blake2b(rep.mirror.buf).hexdigest()}", flush=True)
            deadline = time.monotonic() + RELEASE_TIMEOUT_S
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            close_primary(rep)
    finally:
        close_transport(transport)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
