"""``blizzard.client.connect(...)``: a running cluster's structures, from any process.

See :mod:`blizzard.cluster.client`.
"""

from blizzard.cluster.client import Client, ClusterUnavailableError, connect
from blizzard.cluster.remote import RemoteBPlusTree, RemoteHashMap, RemoteQueue, RemoteSkipList
from blizzard.exceptions import RemoteError

__all__ = ["Client", "ClusterUnavailableError", "RemoteBPlusTree", "RemoteError",
           "RemoteHashMap", "RemoteQueue", "RemoteSkipList", "connect"]
