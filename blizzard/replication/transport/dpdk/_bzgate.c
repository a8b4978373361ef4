/* The burst gate (see _bzgate.h): memif's munmap waits for bursts in flight. */

#define _GNU_SOURCE
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "_bzgate.h"

#define GATE_SEQS_MAX 64
#define GATE_WAIT_NS 2000000000LL /* a burst never takes this long: give up waiting */

#if __WORDSIZE == 64
#define BZ_R_SYM(info) ELF64_R_SYM(info)
#else
#define BZ_R_SYM(info) ELF32_R_SYM(info)
#endif

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t *seqs[GATE_SEQS_MAX];
static int installed;
static void **memif_slot; /* memif's reference to munmap, once redirected */

int bz_gate_register(uint64_t *seq)
{
    int done = -EMFILE;
    pthread_mutex_lock(&gate_lock);
    for (int i = 0; i < GATE_SEQS_MAX; i++)
        if (seqs[i] == NULL) {
            seqs[i] = seq;
            done = 0;
            break;
        }
    pthread_mutex_unlock(&gate_lock);
    return done;
}

void bz_gate_unregister(uint64_t *seq)
{
    pthread_mutex_lock(&gate_lock);
    for (int i = 0; i < GATE_SEQS_MAX; i++)
        if (seqs[i] == seq)
            seqs[i] = NULL;
    pthread_mutex_unlock(&gate_lock);
}

static int64_t gate_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Until every burst in flight now has ended. The lock is held throughout:
 * a context is not freed under us, and no thread inside a burst takes it. */
static void gate_wait(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    pthread_mutex_lock(&gate_lock);
    int64_t deadline = gate_now_ns() + GATE_WAIT_NS;
    for (int i = 0; i < GATE_SEQS_MAX; i++) {
        if (seqs[i] == NULL)
            continue;
        uint64_t at = __atomic_load_n(seqs[i], __ATOMIC_ACQUIRE);
        if (!(at & 1))
            continue;
        /* Its thread may be preempted mid-burst: yield to it, then nap. */
        for (unsigned k = 0; __atomic_load_n(seqs[i], __ATOMIC_ACQUIRE) == at; k++) {
            if (gate_now_ns() > deadline)
                break;
            if (k < 64) {
                sched_yield();
            } else {
                const struct timespec nap = {0, 20000};
                nanosleep(&nap, NULL);
            }
        }
    }
    pthread_mutex_unlock(&gate_lock);
}

static int gated_munmap(void *addr, size_t length)
{
    gate_wait();
    return munmap(addr, length);
}

struct found {
    uintptr_t slot;      /* the GOT entry through which memif calls munmap */
    uintptr_t relro_lo;  /* the pages the loader made read-only after relocating */
    uintptr_t relro_hi;
    int object;          /* the driver is loaded */
};

static uintptr_t dyn_ptr(const ElfW(Dyn) *d, ElfW(Addr) base)
{
    /* glibc relocates these entries in place on most targets; not on all. */
    uintptr_t p = (uintptr_t)d->d_un.d_ptr;
    return p < (uintptr_t)base ? p + (uintptr_t)base : p;
}

static uintptr_t find_slot(const ElfW(Rela) *table, size_t bytes, const ElfW(Sym) *symtab,
                           const char *strtab, ElfW(Addr) base)
{
    if (table == NULL || symtab == NULL || strtab == NULL)
        return 0;
    for (size_t i = 0; i < bytes / sizeof(*table); i++) {
        size_t sym = BZ_R_SYM(table[i].r_info);
        if (sym != 0 && strcmp(strtab + symtab[sym].st_name, "munmap") == 0)
            return (uintptr_t)base + table[i].r_offset;
    }
    return 0;
}

static int find_memif(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct found *f = arg;
    if (info->dlpi_name == NULL || strstr(info->dlpi_name, "librte_net_memif") == NULL)
        return 0;
    f->object = 1;
    ElfW(Addr) base = info->dlpi_addr;
    const ElfW(Dyn) *dyn = NULL;
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_DYNAMIC)
            dyn = (const ElfW(Dyn) *)(base + ph->p_vaddr);
        if (ph->p_type == PT_GNU_RELRO) {
            f->relro_lo = (base + ph->p_vaddr) & ~(uintptr_t)(page - 1);
            f->relro_hi = (base + ph->p_vaddr + ph->p_memsz) & ~(uintptr_t)(page - 1);
        }
    }
    if (dyn == NULL)
        return 1;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *jmprel = NULL, *rela = NULL;
    size_t jmprel_bytes = 0, rela_bytes = 0;
    long pltrel = DT_RELA;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *)dyn_ptr(d, base); break;
        case DT_STRTAB: strtab = (const char *)dyn_ptr(d, base); break;
        case DT_JMPREL: jmprel = (const ElfW(Rela) *)dyn_ptr(d, base); break;
        case DT_PLTRELSZ: jmprel_bytes = d->d_un.d_val; break;
        case DT_PLTREL: pltrel = (long)d->d_un.d_val; break;
        case DT_RELA: rela = (const ElfW(Rela) *)dyn_ptr(d, base); break;
        case DT_RELASZ: rela_bytes = d->d_un.d_val; break;
        }
    }
    if (pltrel == DT_RELA)
        f->slot = find_slot(jmprel, jmprel_bytes, symtab, strtab, base);
    if (f->slot == 0) /* built with -fno-plt: a GLOB_DAT entry */
        f->slot = find_slot(rela, rela_bytes, symtab, strtab, base);
    return 1;
}

int bz_gate_install(void)
{
    if (installed)
        return installed;
    struct found f = {0};
    dl_iterate_phdr(find_memif, &f);
    if (f.slot == 0)
        return 0;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t lo = f.slot & ~(uintptr_t)(page - 1);
    if (mprotect((void *)lo, (size_t)page, PROT_READ | PROT_WRITE) != 0)
        return -errno;
    __atomic_store_n((void **)f.slot, (void *)gated_munmap, __ATOMIC_SEQ_CST);
    /* Read-only again only if the loader had made the whole page so. */
    if (lo >= f.relro_lo && lo + (uintptr_t)page <= f.relro_hi)
        mprotect((void *)lo, (size_t)page, PROT_READ);
    memif_slot = (void **)f.slot;
    installed = 1;
    return installed;
}

void *bz_gate_memif_munmap(void)
{
    return memif_slot != NULL ? __atomic_load_n(memif_slot, __ATOMIC_ACQUIRE) : NULL;
}
