# C types for _queuecore.py.
cimport cython
from blizzard.pmem._tx cimport Transaction
from blizzard.structures._corebase cimport CoreBase

cpdef enum:
    CHUNK_BYTES = 4096
    CHUNK_HEAD = 16
    INLINE_MAX = 1024
    FLAG_EXT = 1


cdef class QueueCore(CoreBase):
    cdef public Py_ssize_t count, head, head_pos, tail, tail_pos, removed
    cdef Py_ssize_t _applied, _empty_serial

    @cython.locals(w=Py_ssize_t)
    cpdef bytes _value(self, Py_ssize_t e)
    cpdef Py_ssize_t _size(self, Py_ssize_t e) except -1
    cpdef apply(self, Transaction tx, Py_ssize_t index, int code, bytes record, Py_ssize_t start)
    @cython.locals(w=Py_ssize_t)
    cdef _store_hot(self, Py_ssize_t applied)
    @cython.locals(vlen=Py_ssize_t, block=Py_ssize_t, need=Py_ssize_t, tail=Py_ssize_t,
                   pos=Py_ssize_t, fresh=Py_ssize_t, e=Py_ssize_t)
    cpdef put(self, Transaction tx, bytes data, Py_ssize_t start=*)
    @cython.locals(head=Py_ssize_t, e=Py_ssize_t)
    cpdef get(self, Transaction tx)


cpdef Py_ssize_t _new_chunk(Transaction tx) except -1
