# C types for _bptreecore.py.
cimport cython
from libc.stdint cimport uint32_t
from blizzard.pmem._tx cimport Transaction
from blizzard.structures._corebase cimport CoreBase

cpdef enum:
    KEY_BYTES_MAX = 256
    VALUE_INLINE_MAX = 128
    NODE_HEAD = 16
    LEAF = 1
    INTERNAL = 2

cdef uint32_t EXT


cdef class BPTreeCore(CoreBase):
    cdef public Py_ssize_t count, root, height, fanout, node_bytes, heap, heap_bytes
    cdef Py_ssize_t _applied
    cdef public dict _nodes, _tops

    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, e=Py_ssize_t, k=Py_ssize_t, keys=list)
    cpdef tuple _load(self, Py_ssize_t node)
    cpdef Py_ssize_t _entry(self, Py_ssize_t node, Py_ssize_t i) except -1
    @cython.locals(v=uint32_t, ke=Py_ssize_t)
    cpdef bytes _value_at(self, Py_ssize_t e)
    cpdef Py_ssize_t _block_at(self, Py_ssize_t e) except -1
    @cython.locals(v=uint32_t)
    cpdef Py_ssize_t _size_at(self, Py_ssize_t e) except -1
    cpdef Py_ssize_t _next(self, Py_ssize_t leaf) except -1
    @cython.locals(node=Py_ssize_t, _depth=Py_ssize_t, keys=list, i=Py_ssize_t, e=Py_ssize_t,
                   v=uint32_t)
    cpdef get(self, bytes kb)
    @cython.locals(raw=bytes, last=Py_ssize_t, vals=list, s=Py_ssize_t, p=Py_ssize_t, v=uint32_t,
                   ks=Py_ssize_t)
    cpdef list _values(self, Py_ssize_t leaf, Py_ssize_t i, Py_ssize_t j, list keys)
    cpdef apply(self, Transaction tx, Py_ssize_t index, int code, bytes record, Py_ssize_t start)
    @cython.locals(w=Py_ssize_t)
    cdef _store_hot(self, Py_ssize_t applied)
    @cython.locals(vlen=Py_ssize_t, block=Py_ssize_t)
    cpdef bytes _new_blob(self, Transaction tx, bytes kb, bytes vb)
    @cython.locals(leaf=Py_ssize_t, _depth=Py_ssize_t, keys=list, n=Py_ssize_t, i=Py_ssize_t,
                   found=bint, blob=bytes, size=Py_ssize_t, top=Py_ssize_t, slot_at=Py_ssize_t,
                   block=Py_ssize_t, end=Py_ssize_t)
    cpdef put(self, Transaction tx, bytes kb, bytes vb)
