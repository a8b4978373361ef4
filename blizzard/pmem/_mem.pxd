# C types for _mem.py (see its docstring). A view is a typed memoryview:
# indexing it compiles to a load or store at base + index * itemsize.
cimport cython
from libc.stdint cimport uint32_t, uint64_t

ctypedef void (*range_fn)(size_t address, size_t n) noexcept nogil
ctypedef void (*fence_fn)() noexcept nogil
ctypedef const unsigned char *const_bytes

cdef extern from *:
    # a hint that the line at address is about to be read (never faults)
    void prefetch "__builtin_prefetch" (const void *address) noexcept nogil

cpdef enum:
    CRC_SLICED_MAX = 256


cpdef bytes read(unsigned char[::1] u8, Py_ssize_t off, Py_ssize_t n)
cpdef bytes piece(bytes data, Py_ssize_t pos, Py_ssize_t n)
cpdef void write(unsigned char[::1] u8, Py_ssize_t off, bytes data) noexcept
cpdef void write_view(unsigned char[::1] u8, Py_ssize_t off, const unsigned char[::1] data) noexcept
cpdef bint equal(unsigned char[::1] u8, Py_ssize_t off, bytes data) noexcept
@cython.locals(m=Py_ssize_t, c=int)
cpdef int compare(unsigned char[::1] u8, Py_ssize_t off, Py_ssize_t n, bytes data) noexcept
cpdef void move(unsigned char[::1] u8, Py_ssize_t target, Py_ssize_t source, Py_ssize_t n) noexcept
cpdef void fill_zero(unsigned char[::1] u8, Py_ssize_t off, Py_ssize_t n) noexcept
cpdef unsigned int crc32(unsigned char[::1] u8, Py_ssize_t off, Py_ssize_t n, unsigned int crc=*) noexcept
cpdef unsigned int crc32_bytes(bytes data) noexcept
cdef uint32_t CRC_TABLES[8][256]
@cython.locals(c=uint32_t, lo=uint32_t, hi=uint32_t)
cdef uint32_t _crc32_sliced(uint32_t crc, const_bytes p, Py_ssize_t n) noexcept
@cython.locals(i=int, k=int, _=int, c=uint32_t)
cdef void _fill_crc_tables() noexcept
cpdef size_t address(unsigned char[::1] u8) noexcept
cdef void call_range(size_t function, size_t address, size_t n) noexcept nogil
cdef void call_fence(size_t function) noexcept nogil
cpdef void write_from(unsigned char[::1] u8, Py_ssize_t off, bytes data, Py_ssize_t start, Py_ssize_t n) noexcept
@cython.locals(i=Py_ssize_t)
cpdef Py_ssize_t find_low32(unsigned long long[::1] u64, Py_ssize_t first, Py_ssize_t count, unsigned int value, Py_ssize_t start) noexcept
@cython.locals(p=const_bytes)
cpdef unsigned int u32_of(bytes data, Py_ssize_t pos) noexcept
@cython.locals(value=uint64_t)
cpdef unsigned long long u64_of(bytes data, Py_ssize_t pos) noexcept
@cython.locals(value=uint64_t)
cpdef unsigned long long get_u64(unsigned char[::1] u8, Py_ssize_t off) noexcept
cpdef void set_u64(unsigned char[::1] u8, Py_ssize_t off, unsigned long long value) noexcept
cdef void store_u32(unsigned char *p, uint32_t value) noexcept
cpdef void set_u32(unsigned char[::1] u8, Py_ssize_t off, unsigned int value) noexcept
@cython.locals(i=Py_ssize_t)
cpdef void set_u32s(unsigned char[::1] u8, list offsets, list values, Py_ssize_t count)
@cython.locals(value32=uint32_t)
# (these three raise on a bad offset, or a view let go of: None)
cpdef long long get_u32(unsigned char[::1] u8, Py_ssize_t off) except -1
cpdef long get_u16(unsigned char[::1] u8, Py_ssize_t off) except -1
cpdef int set_u16(unsigned char[::1] u8, Py_ssize_t off, unsigned int value) except -1
