# C types for _settle.py.
cimport cython


cpdef list batch_of(committed, normal)
@cython.locals(key=tuple, waiter=tuple, size=Py_ssize_t)
cpdef settle(list batch, results, dict waiting, dict forwarded, set led)
