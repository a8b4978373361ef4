# C types for _tx.py.
cimport cython
from blizzard.pmem._alloc cimport Allocator
from blizzard.pmem._undolog cimport UndoLog


@cython.final
cdef class Transaction:
    cdef object _pool
    cdef readonly object _buf
    cdef unsigned long long[::1] _u64
    cdef readonly Allocator _alloc
    cdef readonly UndoLog _log
    cdef Py_ssize_t _depth, _next_word
    cdef readonly Py_ssize_t serial
    cdef set _words
    cdef readonly list _frees, _segments
    cdef list _on_commit
    cdef readonly object _observer  # Pool.track_writes's callback, or None

    @cython.locals(done=int)
    cpdef add(self, Py_ssize_t off, Py_ssize_t n, bint fence=*)
    cpdef ready(self)
    cpdef write(self, Py_ssize_t off, data)
    cpdef flush(self, Py_ssize_t off, Py_ssize_t n)
    cpdef _add_word(self, Py_ssize_t word)
    cpdef _touch(self, Py_ssize_t off, Py_ssize_t n)
    cpdef Py_ssize_t alloc(self, Py_ssize_t size, bint zero=*) except -1
    cpdef free(self, Py_ssize_t off)
    cpdef _commit(self)
