# C types for queue.py (QueueFace; PQueue stays a Python class).
from blizzard.structures.ops cimport Encoder


cdef class QueueFace:
    cdef public object name, value_codec, _replicator, _core, _venc, _vdec, _submit, _barrier
    cdef public bytes _get_op, _clear_op
    cdef public bint _vraw
    cdef public Encoder _encoder
