# C types for quorum.py (pure functions over Python collections).
cimport cython

cpdef Py_ssize_t majority(Py_ssize_t voter_count)
@cython.locals(count=Py_ssize_t)
cpdef majority_committed_index(voters, acked)
