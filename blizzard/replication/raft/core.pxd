# C types for core.py: Raft's fields, and the entry path (propose, send,
# acknowledge, commit, follow) as C-callable methods.
cimport cython
from blizzard.replication.raft.progress cimport Progress
from blizzard.replication.raft.raftlog cimport RaftLog


# The entry types, as the ints entries hold.
cdef long _NORMAL, _CONF_CHANGE


@cython.locals(kind=cython.long)
cpdef bint _has_conf_change(tuple entries) except -1


cdef class Ready:
    cdef readonly object soft_state, hard_state, snapshot
    cdef readonly tuple entries, messages, committed_entries, read_states


cdef class Raft:
    cdef public object config, id, _rng, vote, lead, role, _lead_transferee
    cdef public RaftLog log
    cdef public long long term
    cdef public set voters, learners
    cdef public list _conf_history, msgs, read_states, _reads_waiting_commit
    cdef public dict prs, _votes
    cdef public object _read_only, _prev_hard_state, _prev_soft_state, _step, _tick
    cdef public long long _pending_conf_index, _uncommitted_bytes, _forwarded_upto
    cdef public long long _election_elapsed, _heartbeat_elapsed, _randomized_election_timeout
    cdef public bint _bcast_pending, _commit_unsent

    cpdef propose_batch(self, items)
    cpdef step(self, m)
    cpdef bint has_ready(self) except -1
    @cython.locals(log=RaftLog, committed=tuple)
    cpdef ready(self)
    @cython.locals(log=RaftLog, progress=Progress)
    cpdef advance(self, Ready ready)
    cpdef _hard_state(self)
    cpdef _check_accepting(self)
    @cython.locals(log=RaftLog, index=cython.longlong)
    cpdef _append_data(self, items, kind)
    @cython.locals(total=cython.longlong)
    cpdef bint _admit(self, long long size) except -1
    cpdef _flush_broadcast(self)
    @cython.locals(progress=Progress, log=RaftLog, sent=bint, next_index=cython.longlong,
                   last_index=cython.longlong, entries=list)
    cpdef bint _send_append(self, target, bint send_if_empty=*) except -1
    @cython.locals(log=RaftLog, index=cython.longlong, first_in_term=bint)
    cpdef bint _maybe_commit(self) except -1
    @cython.locals(was_paused=bint)
    cpdef _handle_append_response(self, m, Progress progress)
    @cython.locals(log=RaftLog)
    cpdef _handle_append(self, m)
    @cython.locals(progress=Progress)
    cpdef _step_leader(self, m)
    cpdef _step_follower(self, m)
