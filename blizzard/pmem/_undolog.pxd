# C types for _undolog.py.
cimport cython
from libc.stdint cimport uint64_t


cpdef enum:
    ENTRY_HEADER_SIZE = 24
    LINE_MASK = 63


@cython.final
cdef class UndoLog:
    cdef unsigned char[::1] _u8
    cdef unsigned int[::1] _u32
    cdef unsigned long long[::1] _u64
    cdef Py_ssize_t _size, _data_lo, _log_start, _area_end, _txid_word, _end
    cdef readonly Py_ssize_t pos
    cdef readonly unsigned long long txid
    cdef readonly bint native, unfenced
    cdef size_t _c_flush, _c_drain, _c_persist, _base
    cdef object _media_flush, _media_drain, _media_persist
    cdef list _ranges
    cdef uint64_t[::1] _rv
    cdef Py_ssize_t _nr

    cpdef flush(self, Py_ssize_t off, Py_ssize_t n)
    cpdef persist(self, Py_ssize_t off, Py_ssize_t n)
    cpdef drain(self)
    @cython.locals(pos=Py_ssize_t, body=Py_ssize_t, end=Py_ssize_t)
    cpdef int add(self, Py_ssize_t off, Py_ssize_t n, bint fence=*) except -2
    cpdef ready(self)
    cpdef touch(self, Py_ssize_t off, Py_ssize_t n)
    @cython.locals(i=Py_ssize_t)
    cdef int _note(self, Py_ssize_t off, Py_ssize_t n) except -1
    @cython.locals(i=Py_ssize_t, grown=uint64_t[::1])
    cdef _grow_ranges(self)
    @cython.locals(nr=Py_ssize_t, gap=Py_ssize_t, i=Py_ssize_t,
                   j=Py_ssize_t, off=uint64_t, n=uint64_t)
    cdef void _sort_ranges(self) noexcept
    @cython.locals(start=Py_ssize_t, end=Py_ssize_t, off=Py_ssize_t, n=Py_ssize_t, i=Py_ssize_t)
    cpdef bint commit(self) except -1
    cpdef reset(self)
    cpdef move_to(self, Py_ssize_t pos, Py_ssize_t end)
