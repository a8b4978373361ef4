# C types for messages.py: the decoder's cursor, and entries built untracked
# by the garbage collector.
cimport cython


cdef extern from "Python.h":
    void PyObject_GC_UnTrack(object op)


cpdef untracked_entry(term, index, kind, bytes data)
cdef inline void _put(object entry, Py_ssize_t position, object value) noexcept
@cython.locals(out=list)
cpdef list untracked_entries(term, first, kind, items)

@cython.locals(end=Py_ssize_t, pos=Py_ssize_t, body=Py_ssize_t, stop=Py_ssize_t,
               length=Py_ssize_t, _=Py_ssize_t, prev=cython.uint, term=cython.ulonglong,
               index=cython.ulonglong, kind=cython.ulonglong, expected=cython.ulonglong,
               entries=list, positions=list, crcs=list, data=bytes)
cpdef tuple take_records(unsigned char[::1] region, Py_ssize_t count, unsigned long long first,
                         unsigned long long term_before, unsigned int crc, Py_ssize_t start)

@cython.locals(count=Py_ssize_t, i=Py_ssize_t, length=Py_ssize_t, body=Py_ssize_t)
cpdef tuple write_records(unsigned char[::1] buf, entries, Py_ssize_t first, Py_ssize_t pos,
                          Py_ssize_t limit, unsigned int crc, list positions)


cdef class _Reader:
    cdef public bytes buf
    cdef public Py_ssize_t pos
    @cython.locals(end=Py_ssize_t)
    cpdef tuple unpack(self, fmt)
    @cython.locals(end=Py_ssize_t)
    cpdef bytes take(self, Py_ssize_t length)
    cpdef bytes blob(self)
    @cython.locals(end=Py_ssize_t, pos=Py_ssize_t, header=Py_ssize_t, _=Py_ssize_t,
                   term=cython.ulonglong, index=cython.ulonglong,
                   kind=cython.ulonglong, length=Py_ssize_t, stop=Py_ssize_t,
                   padded=Py_ssize_t, out=list)
    cpdef tuple entries(self, Py_ssize_t count)


# The records built on every round (see _Record): read-only fields; messages.py
# marks them no_gc (they hold ints, bytes and entries only).
cdef class _Record:
    pass


cdef class HardState(_Record):
    cdef readonly object term, vote, commit


cdef class MsgApp(_Record):
    cdef readonly object source, target, term, log_term, index, entries, commit


cdef class MsgAppResp(_Record):
    cdef readonly object source, target, term, index, reject, reject_hint, log_term


cdef class MsgHeartbeat(_Record):
    cdef readonly object source, target, term, commit, context


cdef class MsgHeartbeatResp(_Record):
    cdef readonly object source, target, term, context


cdef class MsgProp(_Record):
    cdef readonly object source, target, term, entries
