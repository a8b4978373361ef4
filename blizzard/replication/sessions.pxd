# C types for sessions.py: the session table's apply loop and its probes.
cimport cython
from blizzard.pmem._tx cimport Transaction

cpdef enum:
    ENVELOPE_SIZE = 17
    SLOT_SIZE = 48
    HEADER_SIZE = 64
    PROBE_MAX = 8
    INLINE_MAX = 24


cpdef tuple encode_result(value)
@cython.locals(raw=bytes)
cdef (unsigned long long, unsigned long long) _envelope_key(data)


cdef class SessionStateMachine:
    cdef readonly object _inner, _pool, _buf
    cdef object _transaction
    cdef dict _copies
    cdef unsigned long long[::1] _u64
    cdef public Py_ssize_t _applied
    cdef Py_ssize_t _capacity, _off, _slots
    cdef bint _in_place

    @cython.locals(tx=Transaction, results=list, fresh=list, fresh_at=list, owners=list,
                   latest=dict, last_applied=Py_ssize_t, copies=dict, in_place=bint,
                   position=Py_ssize_t, index=Py_ssize_t, version=int, client=cython.ulonglong,
                   seq=cython.ulonglong, done_seq=cython.ulonglong, seen=object,
                   last=Py_ssize_t, raw=bytes)
    cpdef list apply(self, batch)
    cpdef _inner_apply(self, list fresh)
    cpdef _stamp(self, Transaction tx, Py_ssize_t index)
    @cython.locals(capacity=Py_ssize_t, start=Py_ssize_t, i=Py_ssize_t, pos=Py_ssize_t)
    cpdef Py_ssize_t _slot_of(self, unsigned long long client) except -2
    @cython.locals(pos=Py_ssize_t)
    cpdef unsigned long long _last_seq(self, unsigned long long client) except? 0
    @cython.locals(pos=Py_ssize_t, u64="unsigned long long[::1]", word=cython.ulonglong,
                   length=Py_ssize_t, kind=cython.ulonglong, off=Py_ssize_t)
    cpdef tuple _lookup(self, unsigned long long client)
    @cython.locals(u64="unsigned long long[::1]", capacity=Py_ssize_t, start=Py_ssize_t,
                   i=Py_ssize_t, pos=Py_ssize_t, target=Py_ssize_t, oldest=Py_ssize_t,
                   oldest_seq=cython.ulonglong, slot_client=cython.ulonglong,
                   slot_seq=cython.ulonglong, kind=cython.ulonglong, n=Py_ssize_t,
                   old_length=cython.ulonglong,
                   block=Py_ssize_t)
    cpdef _record(self, Transaction tx, unsigned long long client, unsigned long long seq,
                  result)
