# C types for local.py.
cdef class LocalApply:
    cdef readonly object _sm
    cdef object _apply_one, _lock
    cdef public bint _stopped
    cdef public Py_ssize_t submitted
    cpdef submit(self, op)
