# C types for _mapping.py (MapFace; PersistentMap stays a Python class).
from blizzard.structures._corebase cimport MapCore
from blizzard.structures.ops cimport Encoder


cdef class MapFace:
    cdef public object name, key_codec, value_codec, _replicator, _core
    cdef public object _kenc, _kdec, _venc, _vdec, _put_op, _submit, _get, _barrier
    cdef public object _kraw, _vraw_type
    cdef public bint _vraw
    cdef public Encoder _encoder
    cdef public MapCore _reader
    cdef Py_ssize_t _key_bytes_max
    cdef int _put, _delete, _pop, _clear
