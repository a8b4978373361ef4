# C types for _bptreecore.py.
cimport cython
from libc.stdint cimport uint32_t, uint64_t
from blizzard.pmem._tx cimport Transaction
from blizzard.structures._corebase cimport MapCore

cpdef enum:
    KEY_BYTES_MAX = 256
    VALUE_INLINE_MAX = 128
    NODE_HEAD = 16
    LEAF = 1
    INTERNAL = 2
    NODE_SHIFT = 10
    WORD_BYTES = 6
    PREFIX_MAX = 255

cdef uint32_t EXT
ctypedef unsigned char *node_at


@cython.locals(mid=Py_ssize_t, e=node_at)
cdef void _ask(node_at base, node_at slots, Py_ssize_t lo, Py_ssize_t hi, int depth) noexcept


@cython.locals(w=uint64_t, n=Py_ssize_t, i=Py_ssize_t)
cpdef uint64_t key_word(bytes kb, Py_ssize_t p) noexcept
@cython.locals(i=Py_ssize_t, n=Py_ssize_t)
cpdef Py_ssize_t shared_prefix(bytes a, bytes b, Py_ssize_t most) noexcept
cpdef Py_ssize_t prefix_of(list keys, Py_ssize_t first=*) except -1


cdef class BPTreeCore(MapCore):
    cdef public Py_ssize_t count, root, height, fanout, node_bytes, heap, heap_bytes
    cdef public Py_ssize_t layout, stride, slots_end
    cdef public str _slot_format
    cdef Py_ssize_t _applied
    cdef public dict _nodes
    cdef unsigned short[::1] _tops

    cdef _sizes(self, Py_ssize_t fanout, Py_ssize_t node_bytes)
    cpdef tuple _load(self, Py_ssize_t node)
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, e=Py_ssize_t, k=Py_ssize_t, keys=list)
    cpdef tuple _decode(self, Py_ssize_t node)
    cdef inline Py_ssize_t _u16(self, Py_ssize_t off) except -1
    cdef inline Py_ssize_t _u32(self, Py_ssize_t off) except -1
    @cython.locals(value=uint64_t)
    cdef inline Py_ssize_t _u64(self, Py_ssize_t off) except? -1
    cpdef Py_ssize_t _entry(self, Py_ssize_t node, Py_ssize_t i) except -1
    @cython.locals(slot=uint64_t)
    cdef inline Py_ssize_t _word_at(self, Py_ssize_t node, Py_ssize_t i) except -1
    @cython.locals(v=uint32_t, ke=Py_ssize_t)
    cpdef bytes _value_at(self, Py_ssize_t e)
    cpdef Py_ssize_t _block_at(self, Py_ssize_t e) except -1
    @cython.locals(v=uint32_t)
    cpdef Py_ssize_t _size_at(self, Py_ssize_t e) except -1
    cpdef Py_ssize_t _next(self, Py_ssize_t leaf) except -1
    @cython.locals(e=Py_ssize_t, k=Py_ssize_t, n=Py_ssize_t, m=Py_ssize_t, c=int)
    cdef int _key_cmp(self, Py_ssize_t node, Py_ssize_t i, bytes kb) except? -1000
    @cython.locals(hi=Py_ssize_t, mid=Py_ssize_t, c=int, step=Py_ssize_t, slots=node_at,
                   base=node_at)
    cdef Py_ssize_t _bisect(self, Py_ssize_t node, Py_ssize_t lo, Py_ssize_t n, bytes kb,
                            bint right) except -1
    @cython.locals(first=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, p=Py_ssize_t,
                   kw=Py_ssize_t, w=Py_ssize_t, c=int, j=Py_ssize_t)
    cdef Py_ssize_t _bisect_words(self, Py_ssize_t node, Py_ssize_t lo, Py_ssize_t n,
                                  bytes kb, bint right) except -1
    @cython.locals(e=Py_ssize_t, n=Py_ssize_t, m=Py_ssize_t, c=int)
    cdef int _prefix_cmp(self, Py_ssize_t node, Py_ssize_t i, bytes kb, Py_ssize_t p) except? -1000
    @cython.locals(node=Py_ssize_t, _depth=Py_ssize_t, e=Py_ssize_t, n=Py_ssize_t, i=Py_ssize_t,
                   p=node_at, line=Py_ssize_t)
    cpdef (Py_ssize_t, Py_ssize_t, bint) locate(self, bytes kb)
    @cython.locals(leaf=Py_ssize_t, i=Py_ssize_t, found=bint, e=Py_ssize_t, v=uint32_t)
    cpdef get(self, bytes kb)
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, e=Py_ssize_t, k=Py_ssize_t, out=list)
    cpdef list _blobs(self, Py_ssize_t node)
    @cython.locals(raw=bytes, size=Py_ssize_t, last=Py_ssize_t, out=list, s=Py_ssize_t,
                   p=Py_ssize_t, v=uint32_t, k=Py_ssize_t, ks=Py_ssize_t, ke=Py_ssize_t)
    cpdef list _leaf_items(self, Py_ssize_t leaf, Py_ssize_t i, Py_ssize_t j, bint values,
                           bint reverse)
    cpdef apply(self, Transaction tx, Py_ssize_t index, int code, bytes record, Py_ssize_t start)
    @cython.locals(w=Py_ssize_t)
    cdef _store_hot(self, Py_ssize_t applied)
    @cython.locals(node=Py_ssize_t, n=Py_ssize_t, pos=Py_ssize_t, i=Py_ssize_t, slots=list,
                   keys=list, blob=bytes, wide=bint, first=Py_ssize_t, p=Py_ssize_t)
    cpdef Py_ssize_t _build(self, Transaction tx, Py_ssize_t kind, list entries,
                            Py_ssize_t nxt) except -1
    @cython.locals(total=Py_ssize_t, pair=tuple)
    cpdef bint _fits(self, list entries) except -1
    @cython.locals(fanout=Py_ssize_t, heap=Py_ssize_t, sizes=list, total=Py_ssize_t,
                   n=Py_ssize_t, best=Py_ssize_t, at=Py_ssize_t, left=Py_ssize_t, s=Py_ssize_t,
                   load=Py_ssize_t, at_left=Py_ssize_t)
    cpdef list _halves(self, list entries)
    @cython.locals(node=Py_ssize_t, keys=list, ptrs=list, n=Py_ssize_t, extra=list,
                   new_n=Py_ssize_t, need=Py_ssize_t, blob=bytes, top=Py_ssize_t, e=Py_ssize_t,
                   at=Py_ssize_t, fresh=Py_ssize_t, slots=Py_ssize_t, m=Py_ssize_t,
                   stride=Py_ssize_t)
    cpdef _parent_replace(self, Transaction tx, list path, Py_ssize_t d, Py_ssize_t i,
                          Py_ssize_t j, list children)
    @cython.locals(klen=Py_ssize_t)
    cdef _write_entry(self, Py_ssize_t at, bytes kb, bytes vb, Py_ssize_t block)
    @cython.locals(leaf=Py_ssize_t, i=Py_ssize_t, found=bint, n=Py_ssize_t, block=Py_ssize_t,
                   size=Py_ssize_t, top=Py_ssize_t, slot_at=Py_ssize_t, old=Py_ssize_t,
                   end=Py_ssize_t, cached=tuple, stride=Py_ssize_t)
    cpdef put(self, Transaction tx, bytes kb, bytes vb)
    @cython.locals(n=Py_ssize_t, first=Py_ssize_t, i=Py_ssize_t, at=Py_ssize_t,
                   off=Py_ssize_t, kb=bytes)
    cdef _reword(self, Py_ssize_t node, Py_ssize_t p, list keys=*)
    @cython.locals(p=Py_ssize_t, q=Py_ssize_t, e=Py_ssize_t, j=Py_ssize_t)
    cdef _word_in(self, Py_ssize_t leaf, Py_ssize_t i, Py_ssize_t n, bytes kb, Py_ssize_t off)
