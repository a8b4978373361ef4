# C types for _hashcore.py.
cimport cython
from libc.stdint cimport uint32_t, uint64_t
from blizzard.pmem._tx cimport Transaction
from blizzard.structures._corebase cimport MapCore

cpdef enum:
    TOP_OFF = 128
    TOP_MAX = 1024
    PAGE_BYTES = 4096
    PAGE_SHIFT = 12
    SLOTS = 32
    SLOTS_OFF = 16
    HEAP_START = 272
    INLINE_MAX = 1024
    LOAD_SPLIT = 24
    LOAD_MERGE = 8

cdef uint32_t EXT
ctypedef unsigned char *entry_at
ctypedef const unsigned long long *slot_words
cdef uint64_t POS_MASK


cdef class HashCore(MapCore):
    cdef public Py_ssize_t count, nbuckets, lo_mask, hi_mask, split
    cdef Py_ssize_t _applied
    cdef public uint64_t[::1] pages
    cdef public list segs
    cdef unsigned short[::1] _tops

    @cython.locals(klen=Py_ssize_t, b=Py_ssize_t, page=Py_ssize_t, slots=slot_words,
                   i=Py_ssize_t, s=uint64_t, e=Py_ssize_t, entry=entry_at, nxt=Py_ssize_t,
                   more=slot_words)
    cpdef (Py_ssize_t, Py_ssize_t, uint64_t) find(self, bytes kb, uint32_t h)
    @cython.locals(first=Py_ssize_t)
    cdef slot_words _slot_words(self, Py_ssize_t page) except NULL
    @cython.locals(n=Py_ssize_t, e=Py_ssize_t, s=uint64_t, page=Py_ssize_t, _i=Py_ssize_t,
                   start=Py_ssize_t)
    cpdef get(self, bytes kb)
    @cython.locals(v=uint32_t, ke=Py_ssize_t)
    cpdef bytes _value(self, Py_ssize_t e)
    @cython.locals(page=Py_ssize_t)
    cpdef list chain(self, Py_ssize_t b)
    @cython.locals(ks=Py_ssize_t, ke=Py_ssize_t, hot=Py_ssize_t)
    cpdef apply(self, Transaction tx, Py_ssize_t index, int code, bytes record, Py_ssize_t start)
    @cython.locals(end=Py_ssize_t, slots=Py_ssize_t, i=Py_ssize_t, s=uint64_t, top=Py_ssize_t)
    cpdef Py_ssize_t _top(self, Py_ssize_t page) except -1
    @cython.locals(klen=Py_ssize_t, vlen=Py_ssize_t, ke=Py_ssize_t)
    cdef _write_entry(self, Transaction tx, Py_ssize_t at, bytes kb, bytes value,
                      Py_ssize_t vstart, Py_ssize_t block)
    cdef _set_slot(self, Transaction tx, Py_ssize_t page, Py_ssize_t i, uint64_t value)
    @cython.locals(h=uint32_t, klen=Py_ssize_t, vlen=Py_ssize_t, n=Py_ssize_t,
                   block=Py_ssize_t, need=Py_ssize_t, tag=uint64_t, b=Py_ssize_t,
                   page=Py_ssize_t, i=Py_ssize_t, old=uint64_t,
                   old_block=Py_ssize_t, top=Py_ssize_t)
    cpdef put(self, Transaction tx, bytes kb, bytes value, Py_ssize_t vstart=*)
    @cython.locals(h=uint32_t, page=Py_ssize_t, i=Py_ssize_t, slot=uint64_t, e=Py_ssize_t,
                   block=Py_ssize_t, b=Py_ssize_t)
    cpdef delete(self, Transaction tx, bytes kb, bint want_value)
    @cython.locals(ke=Py_ssize_t)
    cpdef Py_ssize_t _block_of(self, Py_ssize_t e) except -1
    @cython.locals(prev=Py_ssize_t, page=Py_ssize_t, slots=Py_ssize_t, free=Py_ssize_t,
                   top=Py_ssize_t)
    cdef _insert(self, Transaction tx, Py_ssize_t b, uint64_t tag, bytes kb,
                 bytes value, Py_ssize_t vstart, Py_ssize_t block, Py_ssize_t need)
    @cython.locals(v=uint32_t, k=uint32_t)
    cpdef Py_ssize_t _size_at(self, Py_ssize_t e) except -1
    @cython.locals(slots=Py_ssize_t, i=Py_ssize_t, s=uint64_t, total=Py_ssize_t)
    cpdef Py_ssize_t _live_bytes(self, Py_ssize_t page) except -1
    @cython.locals(fresh=Py_ssize_t, old_slots=Py_ssize_t, new_slots=Py_ssize_t, top=Py_ssize_t,
                   i=Py_ssize_t, s=uint64_t, e=Py_ssize_t, n=Py_ssize_t)
    cpdef Py_ssize_t _compact(self, Transaction tx, Py_ssize_t b, Py_ssize_t prev,
                              Py_ssize_t page) except -1
    @cython.locals(fresh=Py_ssize_t, page=Py_ssize_t, top=Py_ssize_t, slot=Py_ssize_t,
                   source=Py_ssize_t, slots=Py_ssize_t, i=Py_ssize_t, s=uint64_t,
                   e=Py_ssize_t, n=Py_ssize_t, nxt=Py_ssize_t)
    cpdef Py_ssize_t _build(self, Transaction tx, Py_ssize_t first, Py_ssize_t second,
                            uint64_t mask, uint64_t want) except -1
    cdef _link(self, Transaction tx, Py_ssize_t b, Py_ssize_t prev, Py_ssize_t page)
    @cython.locals(word=Py_ssize_t, grown=uint64_t[::1])
    cdef _set_dir(self, Transaction tx, Py_ssize_t b, Py_ssize_t page)


cpdef Py_ssize_t new_page(Transaction tx, unsigned char[::1] u8) except -1
