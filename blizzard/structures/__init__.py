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

#: Every kind of structure, by the name a Store's method and the client give it.
KINDS: dict[str, type[PHashMap] | type[PQueue] | type[PBPlusTree] | type[PSkipList]] = {
    "hashmap": PHashMap, "queue": PQueue, "bptree": PBPlusTree, "skiplist": PSkipList}
#: The kind name of a structure, from the tag of its root in the pool.
KIND_OF_TAG: dict[bytes, str] = {cls.tag: kind for kind, cls in KINDS.items()}

__all__ = ["KINDS", "KIND_OF_TAG", "Codec", "PBPlusTree", "PHashMap", "PQueue", "PSkipList",
           "Registry", "get_codec", "registry_for"]
