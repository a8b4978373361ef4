# zlib's CRC-32, the function Python's zlib.crc32 calls (linked with -lz).
cdef extern from "zlib.h":
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int n) nogil
