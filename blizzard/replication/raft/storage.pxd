# C types for storage.py: the list-backed log reads and MemoryStorage.
cimport cython


cdef class EntryListReads:
    cdef public list _entries
    cpdef long long first_index(self) except? -1
    cpdef long long last_index(self) except? -1
    @cython.locals(offset=cython.longlong)
    cpdef term(self, long long index)
    @cython.locals(offset=cython.longlong)
    cpdef list entries(self, long long lo, long long hi, bytes_max=*)


cdef class MemoryStorage(EntryListReads):
    cdef public object _hard_state, _snapshot
    @cython.locals(offset=cython.longlong, first=cython.longlong, position=Py_ssize_t)
    cpdef append(self, new)


@cython.locals(total=Py_ssize_t)
cpdef Py_ssize_t data_bytes(entries) except -1
@cython.locals(count=Py_ssize_t, total=Py_ssize_t)
cpdef list limit_size(list entries, Py_ssize_t bytes_max)
