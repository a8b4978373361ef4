# C types for _keyindex.py (see its docstring).
cimport cython
from cpython cimport array

cpdef enum:
    HINTS = 4


@cython.locals(n=Py_ssize_t, i=Py_ssize_t, pa=cython.p_uchar, pb=cython.p_uchar)
cpdef Py_ssize_t common_prefix(bytes a, bytes b)
@cython.locals(p=cython.p_uchar, n=Py_ssize_t, i=int, w=cython.ulonglong)
cpdef unsigned long long word(bytes kb, Py_ssize_t skip)
cdef long long _at(array.array values, Py_ssize_t j)
cdef void _put(array.array values, Py_ssize_t j, long long value) noexcept


cdef class Run:
    cdef public list keys
    cdef public array.array values, words, hints
    cdef public Py_ssize_t skip

    @cython.locals(skip=Py_ssize_t)
    cpdef _reword(self)
    @cython.locals(skip=Py_ssize_t)
    cpdef bint _shares(self, bytes kb, bytes other)
    cpdef Py_ssize_t bisect(self, bytes kb) except -1
    @cython.locals(n=Py_ssize_t, skip=Py_ssize_t, first=bytes, m=Py_ssize_t, c=int,
                   w=cython.ulonglong, p=cython.p_ulonglong, lo=Py_ssize_t, hi=Py_ssize_t,
                   end=Py_ssize_t, mid=Py_ssize_t)
    cpdef Py_ssize_t bisect_words(self, bytes kb) except -1
    @cython.locals(n=Py_ssize_t)
    cpdef insert(self, Py_ssize_t j, bytes kb, long long value)
    @cython.locals(n=Py_ssize_t)
    cpdef replace(self, Py_ssize_t j, bytes kb, long long value)
    cpdef delete(self, Py_ssize_t j)
    cpdef Run split(self, Py_ssize_t at)


cdef class KeyIndex:
    cdef public Py_ssize_t load
    cdef public list chunks
    cdef public Run maxes
    cdef public Run found_run
    cdef public Py_ssize_t found_at

    @cython.locals(i=Py_ssize_t, j=Py_ssize_t, chunk=Run)
    cpdef long long before(self, bytes kb) except -1
    @cython.locals(i=Py_ssize_t, j=Py_ssize_t, cap=Py_ssize_t, count=Py_ssize_t,
                   size=Py_ssize_t, chunk=Run, chunks=list)
    cpdef Py_ssize_t nodes_after(self, bytes kb, array.array out) except -1
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, size=Py_ssize_t, chunk=Run,
                   upper=Run)
    cpdef set(self, bytes kb, long long node)
    @cython.locals(i=Py_ssize_t, j=Py_ssize_t, size=Py_ssize_t, chunk=Run)
    cpdef remove(self, bytes kb)
