/* The burst gate: memif's teardown waits for the bursts in flight.
 *
 * When a memif peer hangs up (a graceful stop, or its process killed), memif
 * tears its side of the link down on EAL's interrupt thread
 * (memif_disconnect): it marks the device disconnected, then unmaps the
 * shared regions and frees their records. A receive or transmit burst on the
 * loop's thread checks "connected" once, at its start, then reads and writes
 * those regions: a burst that passed the check just before the mark (say,
 * preempted there, which a loaded two-core machine does often) then touched
 * unmapped memory, and the node died of SIGSEGV. DPDK 22.11's memif offers no
 * hook between the mark and the unmapping, and no lock the data path could
 * take.
 *
 * So the helper gives memif's unmapping one: bz_gate_install points the
 * memif driver's own reference to munmap (its GOT slot) at a wrapper that
 * first waits until every burst in flight when it was called has ended.
 * Bursts begun after that saw the device disconnected (the mark came before
 * the unmapping, and each side fences between its write and its read), so
 * they touch nothing. Each bz_ctx has a sequence number, odd while its
 * thread is inside a burst: two plain stores and a fence per burst.
 */

#ifndef BZ_GATE_H
#define BZ_GATE_H

#include <stdint.h>

/* Registers a context's burst sequence with the gate (bz_ctx_new): 0, or
 * -EMFILE when GATE_SEQS_MAX (64) contexts are registered already (an unguarded
 * context could die with a peer, so it is refused). bz_gate_unregister
 * forgets one (bz_ctx_free, outside any burst). */
int bz_gate_register(uint64_t *seq);
void bz_gate_unregister(uint64_t *seq);

/* Redirects the memif driver's munmap through the gate, once per process,
 * after the EAL loaded its drivers. Returns the number of references
 * redirected (1), 0 if the driver or its reference to munmap was not found,
 * or a negative errno. */
int bz_gate_install(void);

/* The function memif now calls as munmap (the gate's), or NULL (tests). */
void *bz_gate_memif_munmap(void);

static inline void bz_burst_enter(uint64_t *seq)
{
    __atomic_store_n(seq, *seq + 1, __ATOMIC_RELAXED);
    /* Pairs with the gate's fence: either the gate sees this burst in
     * flight, or the burst sees the device already marked disconnected. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static inline void bz_burst_exit(uint64_t *seq)
{
    __atomic_store_n(seq, *seq + 1, __ATOMIC_RELEASE);
}

#endif
