# C types for ops.py; the opcodes as C constants (same values as OpCode).
cimport cython

ctypedef unsigned char *unsigned_char_ptr

cpdef enum:
    OP_VERSION = 1
    HEAD_SIZE = 8
    CREATE = 0x01
    DROP = 0x02
    MAP_PUT = 0x10
    MAP_DELETE = 0x11
    MAP_POP = 0x12
    MAP_CLEAR = 0x13
    QUEUE_PUT = 0x20
    QUEUE_GET = 0x21
    QUEUE_CLEAR = 0x22
    ORD_PUT = 0x30
    ORD_DELETE = 0x31
    ORD_POP = 0x32
    ORD_CLEAR = 0x33
    ORD_POPITEM = 0x34
    ORD_INIT = 0x3F


cdef class Encoder:
    cdef bytes _name
    cpdef bytes two(self, int code, first, rest)
    cpdef bytes one(self, int code, field)
    cpdef bytes zero(self, int code)


@cython.locals(n=Py_ssize_t, args=Py_ssize_t, out=bytes, p=unsigned_char_ptr, at=Py_ssize_t)
cpdef bytes record(int code, bytes name, first, rest)


cpdef tuple key_bounds(bytes record, Py_ssize_t start, str what, Py_ssize_t key_bytes_max)
