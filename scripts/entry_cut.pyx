# cython: language_level=3, boundscheck=False, wraparound=False
"""The two ways a follower could hand received entries' data to the apply:
copied out of the log's records as ``bytes`` (what ``take_records`` does), or
as ``memoryview`` slices of the mapping (applying "in place"). See
``entry_cut_probe.py``."""

from cpython.bytes cimport PyBytes_FromStringAndSize


def cut_bytes(unsigned char[::1] region, Py_ssize_t count, Py_ssize_t size, Py_ssize_t stride):
    """``count`` entries of ``size`` bytes, ``stride`` apart, each copied into a ``bytes``."""
    cdef list out = []
    cdef Py_ssize_t i
    for i in range(count):
        out.append(PyBytes_FromStringAndSize(<char *>&region[i * stride], size))
    return out


def cut_views(object view, Py_ssize_t count, Py_ssize_t size, Py_ssize_t stride):
    """The same entries as views of the mapping: no copy, one object each."""
    cdef list out = []
    cdef Py_ssize_t i
    for i in range(count):
        out.append(view[i * stride:i * stride + size])
    return out
