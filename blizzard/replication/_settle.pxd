# C types for _settle.py.
cimport cython


cpdef list batch_of(committed, normal)
@cython.locals(key=tuple, waiter=tuple)
cpdef settle(list batch, results, dict waiting, dict forwarded, set led)
