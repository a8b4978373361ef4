# C types for _corebase.py.
from blizzard.pmem._tx cimport Transaction


cdef class CoreBase:
    cdef public object registry, pool, buf, media, name, key_codec, value_codec
    cdef public unsigned char[::1] u8
    cdef public unsigned int[::1] u32
    cdef public unsigned long long[::1] u64
    cdef public Py_ssize_t header_off
    cdef public bint dead
    cdef readonly int group
    cdef Py_ssize_t _serial, _hot_bytes

    cdef _hot(self, Transaction tx)

    cpdef apply(self, Transaction tx, Py_ssize_t index, int code, bytes record, Py_ssize_t start)


cdef class MapCore(CoreBase):
    cpdef get(self, bytes kb)
