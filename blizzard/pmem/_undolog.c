/*
 * The undo log's hot path in C: blizzard.pmem._undolog_c.UndoLog.
 *
 * Behaviour and on-media format are exactly those of the pure-Python
 * PyUndoLog in _undolog.py (the reference, and the fallback where no
 * compiler was available at install time); tests check that both produce
 * byte-identical pools. Flushing goes through libpmem's own functions,
 * whose addresses Python passes in (0 = do not flush, for DRAM).
 *
 * Entry: [crc32 u32 | len u32 | txid u64 | off u64 | old bytes], 8-aligned;
 * the CRC covers bytes [4, 24 + len).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef void (*range_fn)(uintptr_t addr, size_t len);
typedef void (*fence_fn)(void);

#define ENTRY_HEADER_SIZE 24
#define LINE 64

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_bytes(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

typedef struct { uint64_t off, n; } range_t;

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    unsigned char *base;
    uint64_t size, data_lo, log_start, area_end, txid_off;
    uint64_t pos, end, txid;
    range_fn flush, persist;
    fence_fn drain;
    range_t *ranges;
    Py_ssize_t nranges, cap;
} UndoLog;

static void do_flush(UndoLog *u, uint64_t off, uint64_t n) {
    if (u->flush) u->flush((uintptr_t)(u->base + off), n);
}
static void do_persist(UndoLog *u, uint64_t off, uint64_t n) {
    if (u->persist) u->persist((uintptr_t)(u->base + off), n);
}

static int push_range(UndoLog *u, uint64_t off, uint64_t n) {
    if (u->nranges == u->cap) {
        Py_ssize_t cap = u->cap ? u->cap * 2 : 64;
        range_t *r = PyMem_Realloc(u->ranges, cap * sizeof(range_t));
        if (!r) { PyErr_NoMemory(); return -1; }
        u->ranges = r;
        u->cap = cap;
    }
    u->ranges[u->nranges].off = off;
    u->ranges[u->nranges].n = n;
    u->nranges++;
    return 0;
}

static int UndoLog_init(UndoLog *u, PyObject *args, PyObject *kw) {
    static char *names[] = {"buf", "size", "data_lo", "log_start", "area_end", "txid_off",
                            "flush", "drain", "persist", NULL};
    PyObject *buf;
    unsigned long long size, data_lo, log_start, area_end, txid_off, flush, drain, persist;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OKKKKKKKK", names, &buf, &size, &data_lo,
                                     &log_start, &area_end, &txid_off, &flush, &drain, &persist))
        return -1;
    if (u->has_view) { PyBuffer_Release(&u->view); u->has_view = 0; }
    if (PyObject_GetBuffer(buf, &u->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    u->has_view = 1;
    if ((uint64_t)u->view.len < size || log_start >= area_end || area_end > size
        || txid_off + 8 > size) {
        PyErr_SetString(PyExc_ValueError, "undo log regions outside the buffer");
        return -1;
    }
    u->base = u->view.buf;
    u->size = size; u->data_lo = data_lo; u->log_start = log_start;
    u->area_end = area_end; u->txid_off = txid_off;
    u->flush = (range_fn)(uintptr_t)flush;
    u->drain = (fence_fn)(uintptr_t)drain;
    u->persist = (range_fn)(uintptr_t)persist;
    u->pos = log_start; u->end = area_end;
    memcpy(&u->txid, u->base + txid_off, 8);
    u->nranges = 0;
    return 0;
}

static void UndoLog_dealloc(UndoLog *u) {
    if (u->has_view) PyBuffer_Release(&u->view);
    PyMem_Free(u->ranges);
    Py_TYPE(u)->tp_free((PyObject *)u);
}

static int check_open(UndoLog *u) {
    if (!u->has_view) { PyErr_SetString(PyExc_ValueError, "undo log released"); return -1; }
    return 0;
}

/* add(off, n) -> 1 logged, 0 no room in the current area, -1 range outside the data area */
static PyObject *UndoLog_add(UndoLog *u, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "add(off, n)"); return NULL; }
    if (check_open(u) < 0) return NULL;
    long long off = PyLong_AsLongLong(args[0]);
    long long n = PyLong_AsLongLong(args[1]);
    if ((off == -1 || n == -1) && PyErr_Occurred()) return NULL;
    if (off < (long long)u->data_lo || n <= 0 || (uint64_t)off + (uint64_t)n > u->size)
        return PyLong_FromLong(-1);
    uint64_t pos = u->pos, end = pos + ENTRY_HEADER_SIZE + (uint64_t)n;
    if (end > u->end) return PyLong_FromLong(0);
    unsigned char *e = u->base + pos;
    uint32_t len32 = (uint32_t)n;
    uint64_t off64 = (uint64_t)off;
    memcpy(e + 4, &len32, 4);
    memcpy(e + 8, &u->txid, 8);
    memcpy(e + 16, &off64, 8);
    memcpy(e + ENTRY_HEADER_SIZE, u->base + off, (size_t)n);
    uint32_t crc = crc32_bytes(e + 4, (size_t)(end - pos - 4));
    memcpy(e, &crc, 4);
    do_persist(u, pos, end - pos);
    u->pos = (end + 7) & ~(uint64_t)7;
    if (push_range(u, off64, (uint64_t)n) < 0) return NULL;
    return PyLong_FromLong(1);
}

static PyObject *UndoLog_touch(UndoLog *u, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "touch(off, n)"); return NULL; }
    unsigned long long off = PyLong_AsUnsignedLongLong(args[0]);
    unsigned long long n = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (off + n > u->size) { PyErr_SetString(PyExc_ValueError, "range outside the pool"); return NULL; }
    if (push_range(u, off, n) < 0) return NULL;
    Py_RETURN_NONE;
}

static int cmp_range(const void *a, const void *b) {
    uint64_t x = ((const range_t *)a)->off, y = ((const range_t *)b)->off;
    return x < y ? -1 : x > y;
}

/* commit() -> True if a transaction was retired: flush merged ranges, fence, txid += 1 */
static PyObject *UndoLog_commit(UndoLog *u, PyObject *unused) {
    if (check_open(u) < 0) return NULL;
    if (u->pos == u->log_start) {
        u->nranges = 0;
        Py_RETURN_FALSE;
    }
    range_t *r = u->ranges;
    Py_ssize_t k = u->nranges;
    uint64_t start = 0, end = 0;
    if (k > 0) {
        if (k > 1) qsort(r, (size_t)k, sizeof(range_t), cmp_range);
        start = r[0].off; end = r[0].off + r[0].n;
        for (Py_ssize_t i = 1; i < k; i++) {
            if (r[i].off <= ((end + LINE - 1) & ~(uint64_t)(LINE - 1))) {
                if (r[i].off + r[i].n > end) end = r[i].off + r[i].n;
            } else {
                do_flush(u, start, end - start);
                start = r[i].off; end = r[i].off + r[i].n;
            }
        }
        do_persist(u, start, end - start);
    } else if (u->drain) {
        u->drain();
    }
    u->txid++;
    memcpy(u->base + u->txid_off, &u->txid, 8);
    do_persist(u, u->txid_off, 8);
    u->nranges = 0;
    u->pos = u->log_start;
    u->end = u->area_end;
    Py_RETURN_TRUE;
}

/* reset(): forget the transaction (after an abort or at open); rereads txid. */
static PyObject *UndoLog_reset(UndoLog *u, PyObject *unused) {
    if (check_open(u) < 0) return NULL;
    u->nranges = 0;
    u->pos = u->log_start;
    u->end = u->area_end;
    memcpy(&u->txid, u->base + u->txid_off, 8);
    Py_RETURN_NONE;
}

static PyObject *UndoLog_move_to(UndoLog *u, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "move_to(pos, end)"); return NULL; }
    unsigned long long pos = PyLong_AsUnsignedLongLong(args[0]);
    unsigned long long end = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (pos > end || end > u->size) { PyErr_SetString(PyExc_ValueError, "area outside the pool"); return NULL; }
    u->pos = pos; u->end = end;
    Py_RETURN_NONE;
}

static PyObject *UndoLog_release(UndoLog *u, PyObject *unused) {
    if (u->has_view) { PyBuffer_Release(&u->view); u->has_view = 0; u->base = NULL; }
    Py_RETURN_NONE;
}

static PyObject *get_pos(UndoLog *u, void *c) { return PyLong_FromUnsignedLongLong(u->pos); }
static PyObject *get_txid(UndoLog *u, void *c) { return PyLong_FromUnsignedLongLong(u->txid); }
static PyObject *get_logged(UndoLog *u, void *c) { return PyBool_FromLong(u->pos != u->log_start); }

static PyMethodDef UndoLog_methods[] = {
    {"add", (PyCFunction)(void (*)(void))UndoLog_add, METH_FASTCALL, "log [off, off+n); 1 ok, 0 full, -1 bad range"},
    {"touch", (PyCFunction)(void (*)(void))UndoLog_touch, METH_FASTCALL, "flush [off, off+n) at commit"},
    {"commit", (PyCFunction)UndoLog_commit, METH_NOARGS, "flush, fence, retire"},
    {"reset", (PyCFunction)UndoLog_reset, METH_NOARGS, "forget the transaction"},
    {"move_to", (PyCFunction)(void (*)(void))UndoLog_move_to, METH_FASTCALL, "continue in another area"},
    {"release", (PyCFunction)UndoLog_release, METH_NOARGS, "let go of the buffer"},
    {NULL}
};

static PyGetSetDef UndoLog_getset[] = {
    {"pos", (getter)get_pos, NULL, "next entry position", NULL},
    {"txid", (getter)get_txid, NULL, "the live transaction id", NULL},
    {"logged", (getter)get_logged, NULL, "whether the transaction logged anything", NULL},
    {NULL}
};

static PyTypeObject UndoLogType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "blizzard.pmem._undolog_c.UndoLog",
    .tp_basicsize = sizeof(UndoLog),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The undo log's hot path (see _undolog.PyUndoLog).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)UndoLog_init,
    .tp_dealloc = (destructor)UndoLog_dealloc,
    .tp_methods = UndoLog_methods,
    .tp_getset = UndoLog_getset,
};

static PyObject *py_crc32(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t c = crc32_bytes(b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyMethodDef module_methods[] = {
    {"crc32", py_crc32, METH_O, "CRC-32 (same as zlib.crc32), for tests"},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_undolog_c", "The undo log's hot path in C.", -1, module_methods
};

PyMODINIT_FUNC PyInit__undolog_c(void) {
    crc_init();
    if (PyType_Ready(&UndoLogType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&UndoLogType);
    if (PyModule_AddObject(m, "UndoLog", (PyObject *)&UndoLogType) < 0) {
        Py_DECREF(&UndoLogType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
