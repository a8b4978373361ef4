"""``blizzard.client.connect(...)``: a running cluster's structures, from any process.

See :mod:`blizzard.cluster.client`.
"""

from blizzard.cluster.client import (
    Client,
    ClusterUnavailableError,
    RemoteError,
    RemoteHashMap,
    RemoteQueue,
    connect,
)

__all__ = ["Client", "ClusterUnavailableError", "RemoteError", "RemoteHashMap", "RemoteQueue",
           "connect"]
