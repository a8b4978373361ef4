# C types for node.py: the node's fields, read from the object on every frame
# and every turn rather than from its __dict__, and the turn's path (receive,
# persist, send, apply) as C-callable methods that call the Raft core directly.
# RaftNode stays a Python subclass (asyncio, and tests replace its methods).
cimport cython
from blizzard.replication.raft.core cimport Raft, Ready
from blizzard.replication.raft.messages cimport MsgApp


cdef object _LEADER, _FOLLOWER


cdef class Node:
    cdef public object node_id, storage, state_machine, transport, wake, clock, tick_s
    cdef public object images, on_conf_change, copies, ops_per_s, cpu_percent
    cdef public Raft raft
    cdef public long long applied
    cdef public Py_ssize_t snapshot_entries, snapshot_tail_entries
    cdef public Py_ssize_t bad_frames, received_in_place, reproposed, resubmits_held
    cdef public Py_ssize_t forwards_held, snapshots_sent, snapshots_installed
    cdef public object _image_job  # RaftNode.stop closes it
    cdef object _apply_lock, _proposals, _leader, _read_ids, _receiver, _rate_mark, _cpu_mark
    cdef long long _leader_term, _forwarded_term
    cdef dict _waiting, _reads, _conf_waiting, _forwarded
    cdef list _reads_at
    cdef set _led

    cpdef tick(self)
    @cython.locals(raft=Raft)
    cpdef receive(self, source, frame)
    @cython.locals(raft=Raft)
    cpdef bint wants_regions(self, source) except -1
    @cython.locals(raft=Raft)
    cpdef reserve_region(self, source, head, length)
    @cython.locals(msg=MsgApp)
    cpdef region_received(self, source, head, region)
    @cython.locals(raft=Raft, waiting=dict, led=set, size=Py_ssize_t)
    cpdef _note_led(self, MsgApp msg)
    @cython.locals(raft=Raft, forwarded=dict, fresh=list, keys=dict,
                   before=cython.longlong)
    cpdef _step_forwarded(self, msg)
    @cython.locals(waiting=dict, held=bint, raft=Raft)
    cpdef submit(self, data, callback, key=*)
    @cython.locals(raft=Raft, rd=Ready, batch=list)
    cpdef turn(self)
    @cython.locals(counts=dict)
    cpdef _send(self, tuple msgs)
    cpdef _leader_changed(self, leader)
    cpdef _persist(self, Ready rd)
    cpdef _apply(self, Ready rd)
    @cython.locals(committed=tuple, batch=list, applied=cython.longlong)
    cpdef _apply_locked(self, Ready rd)
    @cython.locals(first=cython.longlong, index=cython.longlong)
    cpdef _maybe_compact(self)
