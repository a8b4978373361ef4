"""User-facing persistent structures: PHashMap, PQueue, PBPlusTree, PSkipList.

Each mutation is an Op (``ops``) applied by the pool's registry
(``registry``) through a replicator; keys and values pass through codecs
(``codecs``).
"""

from blizzard.structures.bptree import PBPlusTree
from blizzard.structures.codecs import Codec, get_codec
from blizzard.structures.hashmap import PHashMap
from blizzard.structures.queue import PQueue
from blizzard.structures.registry import Registry, registry_for
from blizzard.structures.skiplist import PSkipList

__all__ = ["Codec", "PBPlusTree", "PHashMap", "PQueue", "PSkipList",
           "Registry", "get_codec", "registry_for"]
