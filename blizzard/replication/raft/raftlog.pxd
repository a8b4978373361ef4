# C types for raftlog.py: indexes are C integers; the unstable tail a list.
cimport cython


cdef class RaftLog:
    cdef public long long applied, committed, offset
    cdef public object pending_snapshot, storage
    cdef public list unstable

    cpdef long long first_index(self) except? -1
    cpdef long long last_index(self)
    cpdef long long stable_last_index(self)
    @cython.locals(position=Py_ssize_t)
    cpdef term(self, long long index)
    cpdef last_term(self)
    cpdef bint match_term(self, long long index, term) except -1
    cpdef bint is_up_to_date(self, long long index, term) except -1
    cpdef list entries(self, long long lo, long long hi, bytes_max=*)
    cpdef long long find_conflict_by_term(self, long long index, term) except? -1
    @cython.locals(first=cython.longlong, offset=cython.longlong)
    cpdef append(self, entries)
    @cython.locals(last_new=cython.longlong, start=cython.longlong)
    cpdef maybe_append(self, long long index, log_term, long long commit, entries)
    @cython.locals(last=cython.longlong)
    cpdef long long _find_conflict(self, entries) except? -1
    cpdef commit_to(self, long long index)
    @cython.locals(offset=cython.longlong, position=cython.longlong)
    cpdef stable_to(self, long long index, term)
    cpdef restore(self, snapshot)
    cpdef stable_snapshot_to(self, long long index)
