# C types for pmem_storage.py: the log and its receive regions as extension
# types, so the driver's persist step (save) and receiving in place read their
# fields from the object and call each other in C. Pool offsets and list
# positions are C integers; indexes, terms and CRCs stay Python ints.
cimport cython
from blizzard.replication.raft.storage cimport EntryListReads


cdef class _Reservation:
    cdef public object first, prev, term_before, view
    cdef public Py_ssize_t seg, start, end
    cdef public bint fresh
    cdef public list entries, positions, crcs


cdef class PmemStorage(EntryListReads):
    cdef public object _pool, _buf, _media, _segment_bytes, _copies
    cdef public object _hard_state, _snapshot, _slot_seq
    cdef public Py_ssize_t _root, _next_slot
    cdef public _Reservation _reserved
    cdef public list _pending, _positions, _segments, _seg_first

    @cython.locals(log=list, positions=list, seg_first=list, views=list,
                   offset=cython.longlong, first=cython.longlong, last=cython.longlong,
                   index=cython.longlong, stop=cython.longlong, at=Py_ssize_t, k=Py_ssize_t,
                   end=Py_ssize_t)
    cpdef record_views(self, entries)
    @cython.locals(pending=list, last=_Reservation, seg=Py_ssize_t, pos=Py_ssize_t,
                   fresh=bint)
    cpdef tail_region(self, first_index, log_term, nbytes)
    @cython.locals(res=_Reservation)
    cpdef list received_entries(self, region, count)
    cpdef _take_records(self, _Reservation res, region, count)
    @cython.locals(res=_Reservation)
    cpdef _drop_unparsed(self)
    @cython.locals(pending=list, res=_Reservation)
    cpdef _drop_reservations(self)
    @cython.locals(pending=list, res=_Reservation, received=list, count=Py_ssize_t,
                   whole=Py_ssize_t, i=Py_ssize_t)
    cpdef Py_ssize_t _take_received(self, new) except -1
    @cython.locals(positions=list, last=Py_ssize_t, end=Py_ssize_t)
    cpdef _accept(self, _Reservation res, Py_ssize_t count)
    cpdef save(self, hard_state=*, entries=*)
    @cython.locals(entries=list, offset=cython.longlong, first=cython.longlong,
                   keep=Py_ssize_t, skip=Py_ssize_t, taken=Py_ssize_t, seg=Py_ssize_t,
                   limit=Py_ssize_t, pos=Py_ssize_t, run_start=Py_ssize_t, done=Py_ssize_t,
                   written=Py_ssize_t, need=Py_ssize_t)
    cpdef bint _append(self, new) except -1
    @cython.locals(pos=Py_ssize_t)
    cpdef tuple _end_position(self)
    @cython.locals(off=Py_ssize_t)
    cpdef _store_last_index(self, index)
    @cython.locals(pos=Py_ssize_t)
    cpdef _write_hard_state(self, hs)
