# C types for progress.py: a follower's replication state, touched on every
# acknowledgement the leader handles.


cdef class Inflights:
    cdef public Py_ssize_t inflight_max
    cdef object _queue
    cpdef add(self, long long last_index)
    cpdef free_le(self, long long index)
    cpdef free_first_one(self)
    cpdef bint full(self)
    cpdef reset(self)


cdef class Progress:
    cdef public Inflights inflights
    cdef public bint is_learner, probe_sent, recent_active
    cdef public long long match, next, pending_snapshot
    cdef public object state
    cdef _reset_state(self, state)
    cpdef become_probe(self)
    cpdef become_replicate(self)
    cpdef become_snapshot(self, long long snapshot_index)
    cpdef bint maybe_update(self, long long index)
    cpdef sent_entries(self, long long last_index)
    cpdef bint maybe_decrease_to(self, long long rejected, long long match_hint)
    cpdef bint is_paused(self)
