# C types for _alloc.py.
cimport cython
from blizzard.pmem._tx cimport Transaction

cdef unsigned long long BIT


@cython.final
cdef class Run:
    cdef public object cls
    cdef public Py_ssize_t size, index, chunk, bitmap_word, data_off, used
    cdef public list free
    cdef public bint listed


@cython.final
cdef class Extent:
    cdef public Py_ssize_t chunk, count


cdef class Allocator:
    cdef unsigned long long[::1] _u64
    cdef object _buf
    cdef Py_ssize_t _table_word, _heap_off, _nchunks, _used_bytes
    cdef list _free, _partial, _owner

    cdef _list(self, Run run)
    @cython.locals(index=Py_ssize_t, runs=list, run=Run, free=list, slot=Py_ssize_t,
                   word=Py_ssize_t, off=Py_ssize_t)
    cpdef Py_ssize_t alloc(self, Transaction tx, Py_ssize_t size) except -1
    @cython.locals(rel=Py_ssize_t, chunk=Py_ssize_t, word=Py_ssize_t, slot=Py_ssize_t,
                   rem=Py_ssize_t)
    cpdef tuple locate(self, Py_ssize_t off)
    @cython.locals(word=Py_ssize_t, slot=Py_ssize_t)
    cpdef free(self, Transaction tx, Py_ssize_t off)
