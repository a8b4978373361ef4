"""``blizzard.client.connect(...)``: a running cluster's structures, from any process.

See :mod:`blizzard.cluster.client`.
"""

from blizzard.cluster.client import Client, ClusterUnavailableError, connect
from blizzard.cluster.protocol import RemoteError
from blizzard.cluster.remote import RemoteBPlusTree, RemoteHashMap, RemoteQueue, RemoteSkipList

__all__ = ["Client", "ClusterUnavailableError", "RemoteBPlusTree", "RemoteError",
           "RemoteHashMap", "RemoteQueue", "RemoteSkipList", "connect"]
