# C types for _skiplistcore.py.
cimport cython
from cpython cimport array
from libc.stdint cimport uint32_t
from blizzard.pmem._tx cimport Transaction
from blizzard.structures._corebase cimport MapCore
from blizzard.structures._keyindex cimport HINTS, KeyIndex, Run

cpdef enum:
    LEVEL_MAX = 32
    HEAD_OFF = 128
    KEY_BYTES_MAX = 1024
    VALUE_INLINE_MAX = 4096
    NODE_HEAD = 16
    TALL = 2
    RUN_MAX = 64
    SEGMENTS = 16

cdef uint32_t EXT


cdef class SkipListCore(MapCore):
    cdef public Py_ssize_t head, count, level
    cdef public object rng
    cdef public KeyIndex _tall
    cdef Py_ssize_t _applied
    cdef array.array _ends, _cursors

    cpdef bytes _key(self, Py_ssize_t node)
    @cython.locals(vlen=uint32_t, vs=Py_ssize_t)
    cpdef bytes _value(self, Py_ssize_t node)
    cpdef Py_ssize_t _block(self, Py_ssize_t node) except -1
    cpdef Py_ssize_t _next(self, Py_ssize_t node, Py_ssize_t level=*) except -1
    @cython.locals(x=Py_ssize_t, lvl=Py_ssize_t, nxt=Py_ssize_t, preds=list)
    cpdef list _preds(self, bytes kb)
    @cython.locals(tall=KeyIndex)
    cpdef Py_ssize_t _start(self, bytes kb) except -1
    @cython.locals(nxt=Py_ssize_t, k=bytes)
    cpdef Py_ssize_t _lower(self, bytes kb, bint strict) except -1
    @cython.locals(hints=cython.p_longlong, run=Run, base=cython.p_uchar, q=Py_ssize_t)
    cdef long long *_hinted(self, KeyIndex tall, Py_ssize_t x) noexcept
    @cython.locals(x=Py_ssize_t, nxt=Py_ssize_t, k=bytes, hints=cython.p_longlong,
                   seen=Py_ssize_t)
    cpdef tuple _find(self, bytes kb)
    @cython.locals(x=Py_ssize_t, nxt=Py_ssize_t, ks=Py_ssize_t, klen=Py_ssize_t, k=bytes,
                   vlen=uint32_t, tall=KeyIndex, hints=cython.p_longlong, seen=Py_ssize_t)
    cpdef get(self, bytes kb)
    @cython.locals(ks=Py_ssize_t, klen=Py_ssize_t, vlen=uint32_t, kb=bytes, items=list,
                   vs=Py_ssize_t)
    cpdef tuple _run(self, Py_ssize_t x, hi, bint hi_incl, bint values)
    @cython.locals(tall=KeyIndex, m=Py_ssize_t, s=Py_ssize_t, c=Py_ssize_t, nxt=Py_ssize_t,
                   steps=Py_ssize_t, active=Py_ssize_t, ends=cython.p_longlong,
                   cur=cython.p_longlong, p=cython.p_uchar)
    cdef _warm(self, Py_ssize_t x)
    cpdef apply(self, Transaction tx, Py_ssize_t index, int code, bytes record, Py_ssize_t start)
    @cython.locals(w=Py_ssize_t)
    cdef _store_hot(self, Py_ssize_t applied)
    @cython.locals(klen=Py_ssize_t, vlen=Py_ssize_t, inline=bint, ks=Py_ssize_t,
                   node=Py_ssize_t, block=Py_ssize_t)
    cpdef Py_ssize_t _new_node(self, Transaction tx, Py_ssize_t h, bytes kb, bytes vb) except -1
    @cython.locals(w=Py_ssize_t)
    cdef _link(self, Transaction tx, Py_ssize_t x, Py_ssize_t lvl, Py_ssize_t target)
    @cython.locals(pred0=Py_ssize_t, x=Py_ssize_t, h=Py_ssize_t, klen=Py_ssize_t,
                   vlen=uint32_t, vs=Py_ssize_t, node=Py_ssize_t, lvl=Py_ssize_t, block=Py_ssize_t)
    cpdef put(self, Transaction tx, bytes kb, bytes vb)
