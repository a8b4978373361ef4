# C types for registry.py: the apply loop's fields; other attributes live in __dict__.
cimport cython
from blizzard.structures._corebase cimport CoreBase


cdef class Registry:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object pool, buf
    cdef object _transaction
    cdef public Py_ssize_t txgen, _applied, _off
    cdef public dict _cores
    cdef dict _copies
    cdef Py_ssize_t _arg_bytes

    @cython.locals(core=CoreBase, version=int, code=int, n=Py_ssize_t, a=Py_ssize_t, data=bytes)
    cpdef apply_one(self, Py_ssize_t index, record)
    cpdef list apply(self, batch)
    @cython.locals(applied=Py_ssize_t, index=Py_ssize_t)
    cpdef list apply_at(self, batch, Py_ssize_t start)
    @cython.locals(core=CoreBase, version=int, code=int, n=Py_ssize_t, a=Py_ssize_t,
                   size=Py_ssize_t, name_end=Py_ssize_t, data=bytes)
    cpdef _apply(self, tx, Py_ssize_t index, record, Py_ssize_t start=*)
    cdef void _count_arg_bytes(self)
