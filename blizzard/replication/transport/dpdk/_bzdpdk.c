/* Blizzard's DPDK helper: the per-frame work, so Python makes few calls.
 *
 * Python (cffi, API mode) calls in here once per message sent (bz_send, or
 * bz_send_parts for a message given as pieces -- a MsgApp's fixed part and
 * views of the Raft log's records -- gathered straight into the frames:
 * fragment, frame, checksum, hand to the driver in bursts of BZ_BURST),
 * once per loop turn to retry what the ring could not take (bz_flush),
 * once per turn to take what arrived (bz_poll: bursts of BZ_BURST per link,
 * validated, each payload reported where it lies in its mbuf, which is held
 * until bz_release; Python copies it once from there -- into bytes, or with
 * bz_rx_copy straight into the Raft log's free tail), and once to wait when
 * there is nothing to do (bz_wait: spin, then sched_yield, then sleep on the
 * asyncio loop's epoll descriptor, all without the GIL).
 *
 * Frame layout (little endian), after a 14-byte Ethernet header of type
 * BZ_ETHERTYPE (IEEE 802 local experimental):
 *
 *   offset size field
 *        0    2 magic "BZ" (0x5A42)
 *        2    1 version (1)
 *        3    1 flags (0)
 *        4    4 cluster: CRC32C of the cluster id's UTF-8 bytes
 *        8    4 source node id
 *       12    4 destination node id
 *       16    4 session: drawn at random by the sender at start
 *       20    4 message id, from 1 within a session
 *       24    2 fragment index
 *       26    2 fragment count (>= 1)
 *       28    2 payload bytes in this frame
 *       30    2 payload bytes of the message's last frame (0: not said;
 *                every frame but the last carries the same number of bytes,
 *                so a receiver knows the message's length from any frame
 *                before it has them all: where each fragment goes)
 *       32    4 checksum: CRC32C of bytes 0..31 then the payload
 *       36    . payload
 *
 * Invariants: a staged frame is owned by its link until tx_burst accepts it
 * (then by the driver); an mbuf taken from a receive ring is freed in the
 * same bz_poll that refuses it, held (its payload reported) until the next
 * bz_release or bz_poll, or kept in the link's pending array for the next
 * bz_poll. Nothing on the data path allocates.
 */

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <rte_alarm.h>
#include <rte_bus_vdev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_hash_crc.h>
#include <rte_interrupts.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>

#include "_bzdpdk.h"
#include "_bzgate.h"

#define BZ_LINKS_MAX 64
#define BZ_GAPS 32 /* recent idle gaps the polling budget is chosen from */
#define BZ_STAGED_MAX 2048
#define BZ_NAME_MAX 64
#define BZ_HELD_MAX 1024 /* received frames whose payloads a bz_poll reported */

struct bz_header {
    uint16_t magic;
    uint8_t version;
    uint8_t flags;
    uint32_t cluster;
    uint32_t source;
    uint32_t destination;
    uint32_t session;
    uint32_t message;
    uint16_t index;
    uint16_t count;
    uint16_t length;
    uint16_t last;
    uint32_t checksum;
} __attribute__((packed));

_Static_assert(sizeof(struct bz_header) == BZ_HEADER_BYTES, "header layout");
_Static_assert(sizeof(struct rte_ether_hdr) == BZ_ETH_BYTES, "ethernet header");

struct bz_link {
    uint16_t port;
    uint8_t added;
    uint8_t started;
    uint32_t peer;
    unsigned payload_max;
    char name[BZ_NAME_MAX];
    struct rte_ether_addr mac;
    struct rte_mbuf *staged[BZ_STAGED_MAX];
    unsigned n_staged;
    struct rte_mbuf *pending[BZ_BURST]; /* received, not yet reported */
    unsigned pending_at, n_pending;
    uint32_t *peer_flag;                /* the peer's "asleep" word, shared */
    struct sockaddr_un bell;            /* the peer's doorbell socket */
    socklen_t bell_len;
    struct bz_link_counters counters;
};

struct bz_ctx {
    struct rte_mempool *pool;
    uint32_t cluster, self, session;
    unsigned frame_bytes, fragments_max;
    struct bz_link *links[BZ_LINKS_MAX];
    unsigned n_links;
    unsigned rx_next;          /* round robin start of bz_poll */
    struct rte_mbuf *held[BZ_HELD_MAX]; /* reported by bz_poll, freed by bz_release */
    unsigned n_held;
    uint32_t *flag;            /* my "asleep" word, shared with the peers */
    int bell_fd;               /* unbound datagram socket ringing peers */
    int worked;                /* the loop had work since the last bz_wait */
    int64_t last_work_ns;      /* when the loop last ran out of work */
    int64_t budget_ns;         /* how long to poll before sleeping (adaptive) */
    int64_t cap_ns;            /* its ceiling, halved when the core is contended */
    int64_t gaps[BZ_GAPS];     /* how long the loop stayed idle before work came */
    unsigned n_gaps, gap_at;
    struct bz_wait_counters waits;
    uint64_t burst_seq;        /* odd while this context's thread is in a burst (_bzgate.h) */
};

/* Every burst goes through these two: memif's teardown waits for them (_bzgate.h). */
static inline uint16_t gated_rx_burst(bz_ctx *c, struct bz_link *l, struct rte_mbuf **pkts,
                                      uint16_t n)
{
    bz_burst_enter(&c->burst_seq);
    uint16_t got = rte_eth_rx_burst(l->port, 0, pkts, n);
    bz_burst_exit(&c->burst_seq);
    return got;
}

static inline uint16_t gated_tx_burst(bz_ctx *c, struct bz_link *l, struct rte_mbuf **pkts,
                                      uint16_t n)
{
    bz_burst_enter(&c->burst_seq);
    uint16_t sent = rte_eth_tx_burst(l->port, 0, pkts, n);
    bz_burst_exit(&c->burst_seq);
    return sent;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int bz_eal_init(int argc, char **argv)
{
    int ret = rte_eal_init(argc, argv);
    return ret < 0 ? -rte_errno : ret;
}

const char *bz_strerror(int error)
{
    return rte_strerror(error < 0 ? -error : error);
}

int bz_errno(void)
{
    return rte_errno;
}

uint32_t bz_crc(const uint8_t *data, uint32_t length, uint32_t init)
{
    return rte_hash_crc(data, length, init);
}

bz_ctx *bz_ctx_new(const char *name, uint32_t cluster, uint32_t self, uint32_t session,
                   unsigned mbufs, unsigned frame_bytes, unsigned fragments_max)
{
    bz_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->pool = rte_pktmbuf_pool_create(name, mbufs, 0, 0,
                                      frame_bytes + RTE_PKTMBUF_HEADROOM, SOCKET_ID_ANY);
    if (c->pool == NULL) {
        free(c);
        return NULL;
    }
    c->cluster = cluster;
    c->self = self;
    c->session = session;
    c->frame_bytes = frame_bytes;
    c->fragments_max = fragments_max;
    c->bell_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->last_work_ns = now_ns();
    c->budget_ns = c->cap_ns = -1; /* the policy's whole budget, at the first wait */
    int gated = bz_gate_register(&c->burst_seq);
    if (gated < 0) {
        if (c->bell_fd >= 0)
            close(c->bell_fd);
        rte_mempool_free(c->pool);
        free(c);
        rte_errno = -gated;
        return NULL;
    }
    return c;
}

void bz_set_session(bz_ctx *c, uint32_t session)
{
    c->session = session;
}

static void drop_pending(struct bz_link *l)
{
    while (l->pending_at < l->n_pending)
        rte_pktmbuf_free(l->pending[l->pending_at++]);
    l->pending_at = l->n_pending = 0;
}

static void drop_staged(struct bz_link *l)
{
    if (l->n_staged)
        rte_pktmbuf_free_bulk(l->staged, l->n_staged);
    l->counters.frames_dropped += l->n_staged;
    l->n_staged = 0;
}

void bz_ctx_free(bz_ctx *c)
{
    if (c == NULL)
        return;
    for (unsigned i = 0; i < c->n_links; i++) {
        bz_link_remove(c, (int)i);
        free(c->links[i]);
    }
    bz_gate_unregister(&c->burst_seq);
    if (c->bell_fd >= 0)
        close(c->bell_fd);
    bz_release(c);
    rte_mempool_free(c->pool);
    free(c);
}

/* -- the control path, on EAL's interrupt thread ---------------------------------------
 *
 * memif runs its side of a link's control path on EAL's interrupt thread:
 * the handshake, and the teardown when the peer hangs up (memif_disconnect:
 * it closes the queues' descriptors and frees and unmaps the shared regions).
 * Stopping the device from another thread runs that same teardown, and
 * nothing in memif keeps the two apart: the transport noticing a link down
 * (the interrupt thread has just marked it down, first thing) and stopping
 * it at once ran both together: descriptors closed twice (the second time,
 * whatever had been given that number meanwhile: a new control socket, a
 * region, a socket of the application) and regions freed twice into
 * rte_malloc's heap ("EAL: Error: Invalid memory"; or, if the block had
 * been handed out again meanwhile, someone else's). EAL knows its interrupt
 * sources by descriptor number and keeps their handles in that heap: a
 * reconnecting client could be left never hearing its server while the
 * interrupt thread logged "Unregistering with invalid input parameter"
 * over and over, which is how a restarted peer's link stayed down for good.
 *
 * So every call that adds, starts, stops or removes a device runs on the
 * interrupt thread itself, queued there as an alarm, one at a time with
 * memif's own handlers; the caller waits for it. */

#define BZ_CONTROL_WAIT_NS 30000000000LL /* 30 s: the interrupt thread is stuck */

enum { CONTROL_QUEUED, CONTROL_RUNNING, CONTROL_DONE, CONTROL_ABANDONED };

struct bz_control {
    int (*fn)(void *arg);
    void *arg;
    int result;
    int state;
};

static void control_run(void *arg)
{
    struct bz_control *k = arg;
    int expected = CONTROL_QUEUED;
    if (!__atomic_compare_exchange_n(&k->state, &expected, CONTROL_RUNNING, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        free(k); /* its caller gave up waiting before it ran */
        return;
    }
    k->result = k->fn(k->arg);
    __atomic_store_n(&k->state, CONTROL_DONE, __ATOMIC_RELEASE);
}

/* fn(arg) on the interrupt thread; its result, or -ETIMEDOUT if the thread
 * did not take it up within BZ_CONTROL_WAIT_NS (it is then never run). */
static int on_interrupt_thread(int (*fn)(void *arg), void *arg)
{
    if (rte_thread_is_intr())
        return fn(arg);
    struct bz_control *k = malloc(sizeof(*k));
    if (k == NULL)
        return -ENOMEM;
    k->fn = fn;
    k->arg = arg;
    k->result = 0;
    k->state = CONTROL_QUEUED;
    int ret = rte_eal_alarm_set(1, control_run, k);
    if (ret < 0) {
        free(k);
        return ret;
    }
    const struct timespec nap = {0, 20000};
    int64_t deadline = now_ns() + BZ_CONTROL_WAIT_NS;
    for (;;) {
        int state = __atomic_load_n(&k->state, __ATOMIC_ACQUIRE);
        if (state == CONTROL_DONE)
            break;
        if (state == CONTROL_QUEUED && now_ns() > deadline) {
            int expected = CONTROL_QUEUED;
            if (__atomic_compare_exchange_n(&k->state, &expected, CONTROL_ABANDONED, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                return -ETIMEDOUT; /* control_run frees it */
        }
        nanosleep(&nap, NULL);
    }
    ret = k->result;
    free(k);
    return ret;
}

struct link_call {
    bz_ctx *c;
    int link;
};

static int link_call(int (*fn)(void *arg), bz_ctx *c, int link)
{
    struct link_call call = {c, link};
    return on_interrupt_thread(fn, &call);
}

struct link_add_call {
    bz_ctx *c;
    uint32_t peer;
    const char *vdev_name, *vdev_args;
    unsigned frame_bytes, ring_size;
};

static int link_add(void *arg);

/* Creates the device (a vdev: net_memif or net_af_packet) and configures one
 * receive and one transmit queue; bz_link_start connects it. Returns the
 * link's index, or a negative errno. */
int bz_link_add(bz_ctx *c, uint32_t peer, const char *vdev_name, const char *vdev_args,
                unsigned frame_bytes, unsigned ring_size)
{
    struct link_add_call call = {c, peer, vdev_name, vdev_args, frame_bytes, ring_size};
    return on_interrupt_thread(link_add, &call);
}

static int link_add(void *arg)
{
    struct link_add_call *a = arg;
    bz_ctx *c = a->c;
    uint32_t peer = a->peer;
    const char *vdev_name = a->vdev_name, *vdev_args = a->vdev_args;
    unsigned frame_bytes = a->frame_bytes, ring_size = a->ring_size;
    if (c->n_links >= BZ_LINKS_MAX)
        return -ENOSPC;
    if (strlen(vdev_name) >= BZ_NAME_MAX)
        return -ENAMETOOLONG;
    if (frame_bytes > c->frame_bytes || frame_bytes < BZ_ETH_BYTES + BZ_HEADER_BYTES + 1)
        return -EINVAL;
    struct bz_link *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    int ret = rte_vdev_init(vdev_name, vdev_args);
    if (ret != 0) {
        free(l);
        return ret < 0 ? ret : -ret;
    }
    l->added = 1;
    strcpy(l->name, vdev_name);
    l->peer = peer;
    l->payload_max = frame_bytes - BZ_ETH_BYTES - BZ_HEADER_BYTES;
    ret = rte_eth_dev_get_port_by_name(vdev_name, &l->port);
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    if (ret == 0)
        ret = rte_eth_dev_configure(l->port, 1, 1, &conf);
    if (ret == 0)
        ret = rte_eth_rx_queue_setup(l->port, 0, ring_size, SOCKET_ID_ANY, NULL, c->pool);
    if (ret == 0)
        ret = rte_eth_tx_queue_setup(l->port, 0, ring_size, SOCKET_ID_ANY, NULL);
    if (ret == 0)
        ret = rte_eth_macaddr_get(l->port, &l->mac);
    if (ret != 0) {
        rte_vdev_uninit(vdev_name);
        free(l);
        return ret < 0 ? ret : -ret;
    }
    c->links[c->n_links] = l;
    return (int)c->n_links++;
}

int bz_link_payload_max(bz_ctx *c, int link)
{
    return (int)c->links[link]->payload_max;
}

static int link_start(void *arg)
{
    struct link_call *a = arg;
    struct bz_link *l = a->c->links[a->link];
    if (!l->added)
        return -ENODEV;
    if (l->started)
        return 0;
    int ret = rte_eth_dev_start(l->port);
    if (ret == 0) {
        l->started = 1;
        /* af_packet filters nothing itself, but a veth delivers frames not
         * addressed to it only in promiscuous mode; memif ignores this. */
        rte_eth_promiscuous_enable(l->port);
    }
    return ret;
}

int bz_link_start(bz_ctx *c, int link)
{
    return link_call(link_start, c, link);
}

static int link_stop(void *arg)
{
    struct link_call *a = arg;
    struct bz_link *l = a->c->links[a->link];
    if (!l->started)
        return 0;
    l->started = 0;
    return rte_eth_dev_stop(l->port);
}

/* Frames staged or taken but not reported are dropped here, on the caller's
 * thread (the loop's: they are its own). */
int bz_link_stop(bz_ctx *c, int link)
{
    struct bz_link *l = c->links[link];
    drop_pending(l);
    drop_staged(l);
    if (!l->started) /* only this caller's own calls change it */
        return 0;
    return link_call(link_stop, c, link);
}

int bz_link_up(bz_ctx *c, int link)
{
    struct bz_link *l = c->links[link];
    struct rte_eth_link state;
    if (!l->started)
        return 0;
    if (rte_eth_link_get_nowait(l->port, &state) != 0)
        return 0;
    return state.link_status == RTE_ETH_LINK_UP;
}

static int link_remove(void *arg)
{
    struct link_call *a = arg;
    struct bz_link *l = a->c->links[a->link];
    if (!l->added)
        return 0;
    link_stop(arg);
    rte_eth_dev_close(l->port);
    l->added = 0;
    return rte_vdev_uninit(l->name);
}

int bz_link_remove(bz_ctx *c, int link)
{
    struct bz_link *l = c->links[link];
    drop_pending(l);
    drop_staged(l);
    return link_call(link_remove, c, link);
}

int bz_link_doorbell(bz_ctx *c, int link, uint32_t *peer_flag, const char *bell_path)
{
    struct bz_link *l = c->links[link];
    if (strlen(bell_path) >= sizeof(l->bell.sun_path))
        return -ENAMETOOLONG;
    memset(&l->bell, 0, sizeof(l->bell));
    l->bell.sun_family = AF_UNIX;
    strcpy(l->bell.sun_path, bell_path);
    l->bell_len = sizeof(l->bell);
    l->peer_flag = peer_flag;
    return 0;
}

void bz_link_counters(bz_ctx *c, int link, struct bz_link_counters *out)
{
    *out = c->links[link]->counters;
}

void bz_set_flag(bz_ctx *c, uint32_t *flag)
{
    c->flag = flag;
    if (flag != NULL)
        __atomic_store_n(flag, 0, __ATOMIC_SEQ_CST);
}

/* -- sending ------------------------------------------------------------------------- */

static void ring_doorbell(bz_ctx *c, struct bz_link *l)
{
    if (l->peer_flag == NULL || c->bell_fd < 0)
        return;
    /* Pairs with the fence in bz_wait: either the peer sees our ring update
     * before it sleeps, or we see its flag and wake it. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(l->peer_flag, __ATOMIC_RELAXED) == 0)
        return;
    char byte = 1;
    if (sendto(c->bell_fd, &byte, 1, MSG_DONTWAIT, (struct sockaddr *)&l->bell, l->bell_len) == 1)
        l->counters.doorbells++;
}

/* Hands staged frames to the driver, BZ_BURST at a time; what the ring
 * cannot take stays staged, in order. Returns the frames sent. */
static unsigned flush_link(bz_ctx *c, struct bz_link *l)
{
    unsigned sent = 0;
    if (!l->started) {
        drop_staged(l);
        return 0;
    }
    while (sent < l->n_staged) {
        unsigned n = l->n_staged - sent;
        if (n > BZ_BURST)
            n = BZ_BURST;
        uint16_t done = gated_tx_burst(c, l, l->staged + sent, (uint16_t)n);
        l->counters.tx_bursts++;
        sent += done;
        if (done < n)
            break;
    }
    if (sent) {
        l->counters.frames_sent += sent;
        memmove(l->staged, l->staged + sent, (l->n_staged - sent) * sizeof(l->staged[0]));
        l->n_staged -= sent;
        ring_doorbell(c, l);
    }
    return sent;
}

int bz_flush(bz_ctx *c)
{
    unsigned sent = 0;
    for (unsigned i = 0; i < c->n_links; i++)
        if (c->links[i]->n_staged)
            sent += flush_link(c, c->links[i]);
    return (int)sent;
}

int bz_staged(bz_ctx *c)
{
    unsigned n = 0;
    for (unsigned i = 0; i < c->n_links; i++)
        n += c->links[i]->n_staged;
    return (int)n;
}

static void stage(bz_ctx *c, struct bz_link *l, struct rte_mbuf *m)
{
    l->staged[l->n_staged++] = m;
    l->counters.frames_staged++;
    l->counters.bytes_sent += m->pkt_len;
    if (l->n_staged >= BZ_BURST)
        flush_link(c, l);
}

/* Fragments one message -- the concatenation of parts[0..n_parts), length
 * bytes in all -- into frames and stages them, copying each piece straight
 * into the frames (no joined copy of the message first). Returns the number
 * of frames, or -E2BIG (too many fragments), -ENOBUFS (outbox full), -ENOMEM
 * (no mbufs), -ENOTCONN (link not started), -EINVAL (the parts do not add up
 * to length): the message is dropped whole. The parts are not referred to
 * once it returns. */
int bz_send_parts(bz_ctx *c, int link, uint32_t message, const struct bz_part *parts,
                  unsigned n_parts, uint32_t length)
{
    struct bz_link *l = c->links[link];
    unsigned per = l->payload_max;
    unsigned count = length ? (length + per - 1) / per : 1;
    struct rte_mbuf *frames[BZ_BURST];
    uint64_t total = 0;
    int error = 0;
    for (unsigned k = 0; k < n_parts; k++)
        total += parts[k].length;
    if (total != length)
        error = -EINVAL;
    else if (!l->started)
        error = -ENOTCONN;
    else if (count > c->fragments_max || count > UINT16_MAX)
        error = -E2BIG;
    else if (l->n_staged + count > BZ_STAGED_MAX)
        error = -ENOBUFS;
    if (error) {
        l->counters.frames_dropped += count;
        return error;
    }
    uint16_t last = (uint16_t)(length - (count - 1) * per);
    unsigned part = 0;    /* the piece being copied, */
    uint32_t part_at = 0; /* and how much of it is copied */
    unsigned done = 0;
    while (done < count) {
        unsigned n = count - done;
        if (n > BZ_BURST)
            n = BZ_BURST;
        if (rte_pktmbuf_alloc_bulk(c->pool, frames, n) != 0) {
            /* The fragments already staged go out, the rest never: the
             * receiver drops the incomplete message (Raft resends). */
            l->counters.frames_dropped += count - done;
            return -ENOMEM;
        }
        for (unsigned k = 0; k < n; k++, done++) {
            struct rte_mbuf *m = frames[k];
            uint32_t at = done * per;
            uint32_t chunk = length - at < per ? length - at : per;
            uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *);
            struct rte_ether_hdr *eth = (struct rte_ether_hdr *)p;
            memset(&eth->dst_addr, 0xff, sizeof(eth->dst_addr));
            eth->src_addr = l->mac;
            eth->ether_type = rte_cpu_to_be_16(BZ_ETHERTYPE);
            struct bz_header *h = (struct bz_header *)(p + BZ_ETH_BYTES);
            h->magic = BZ_MAGIC;
            h->version = BZ_VERSION;
            h->flags = 0;
            h->cluster = c->cluster;
            h->source = c->self;
            h->destination = l->peer;
            h->session = c->session;
            h->message = message;
            h->index = (uint16_t)done;
            h->count = (uint16_t)count;
            h->length = (uint16_t)chunk;
            h->last = last;
            uint8_t *body = p + BZ_ETH_BYTES + BZ_HEADER_BYTES;
            for (uint32_t filled = 0; filled < chunk;) { /* gather the pieces */
                while (parts[part].length == part_at) {
                    part++;
                    part_at = 0;
                }
                uint32_t take = parts[part].length - part_at;
                if (take > chunk - filled)
                    take = chunk - filled;
                memcpy(body + filled, parts[part].data + part_at, take);
                filled += take;
                part_at += take;
            }
            uint32_t crc = rte_hash_crc(h, BZ_HEADER_BYTES - 4, 0);
            h->checksum = rte_hash_crc(body, chunk, crc);
            m->data_len = (uint16_t)(BZ_ETH_BYTES + BZ_HEADER_BYTES + chunk);
            m->pkt_len = m->data_len;
            stage(c, l, m);
        }
    }
    c->worked = 1;
    /* Out now, not at the end of the loop turn: a Raft node sends, then
     * applies; the peer need not wait for the apply. (A turn sends about
     * one message per peer, so waiting would batch nothing.) */
    flush_link(c, l);
    return (int)count;
}

/* One message from one buffer (see bz_send_parts). */
int bz_send(bz_ctx *c, int link, uint32_t message, const uint8_t *payload, uint32_t length)
{
    struct bz_part part = {payload, length};
    return bz_send_parts(c, link, message, &part, 1, length);
}

/* Stages one frame exactly as given (tests and diagnostics: the frames a
 * broken or hostile peer would send). */
int bz_send_raw(bz_ctx *c, int link, const uint8_t *frame, uint32_t length)
{
    struct bz_link *l = c->links[link];
    if (!l->started)
        return -ENOTCONN;
    if (length > c->frame_bytes || l->n_staged >= BZ_STAGED_MAX)
        return -E2BIG;
    struct rte_mbuf *m = rte_pktmbuf_alloc(c->pool);
    if (m == NULL)
        return -ENOMEM;
    memcpy(rte_pktmbuf_mtod(m, uint8_t *), frame, length);
    m->data_len = (uint16_t)length;
    m->pkt_len = length;
    stage(c, l, m);
    return 1;
}

/* -- receiving ----------------------------------------------------------------------- */

/* Fills the link's pending array from its receive ring if it is empty;
 * returns how many frames are pending. */
static unsigned peek(bz_ctx *c, struct bz_link *l)
{
    if (l->pending_at < l->n_pending)
        return l->n_pending - l->pending_at;
    if (!l->started)
        return 0;
    l->pending_at = 0;
    l->n_pending = gated_rx_burst(c, l, l->pending, BZ_BURST);
    if (l->n_pending)
        l->counters.rx_bursts++;
    return l->n_pending;
}

static int peek_all(bz_ctx *c)
{
    int any = 0;
    for (unsigned i = 0; i < c->n_links; i++)
        if (peek(c, c->links[i]))
            any = 1;
    return any;
}

/* Checks one frame; on success points r->data at its payload (in the mbuf;
 * in buf only if the mbuf is a chain, which a frame no larger than the
 * link's frame size never is) and fills r. Returns 1 reported (good or
 * refused), 0 ignored (another protocol). */
static int take(bz_ctx *c, struct bz_link *l, unsigned link, struct rte_mbuf *m,
                struct bz_rx *r, uint8_t *buf)
{
    struct rte_ether_hdr eth_copy;
    struct bz_header h_copy;
    const struct rte_ether_hdr *eth;
    const struct bz_header *h;
    uint32_t frame = m->pkt_len;
    memset(r, 0, sizeof(*r));
    r->link = (uint16_t)link;
    r->length = frame;
    if (frame < BZ_ETH_BYTES)
        goto foreign;
    eth = rte_pktmbuf_read(m, 0, sizeof(eth_copy), &eth_copy);
    if (eth->ether_type != rte_cpu_to_be_16(BZ_ETHERTYPE))
        goto foreign;
    l->counters.frames_received++;
    l->counters.bytes_received += frame;
    if (frame < BZ_ETH_BYTES + BZ_HEADER_BYTES) {
        r->status = BZ_BAD_TRUNCATED;
        return 1;
    }
    if (frame > c->frame_bytes) {
        r->status = BZ_BAD_SIZE;
        return 1;
    }
    h = rte_pktmbuf_read(m, BZ_ETH_BYTES, sizeof(h_copy), &h_copy);
    r->source = h->source;
    r->session = h->session;
    r->message = h->message;
    r->index = h->index;
    r->count = h->count;
    r->last = h->last;
    if (h->magic != BZ_MAGIC || h->version != BZ_VERSION)
        r->status = BZ_BAD_VERSION;
    else if (h->cluster != c->cluster)
        r->status = BZ_BAD_CLUSTER;
    else if (h->destination != c->self)
        r->status = BZ_BAD_DESTINATION;
    else if (h->source != l->peer)
        r->status = BZ_BAD_SOURCE;
    else if (h->count == 0 || h->index >= h->count || h->count > c->fragments_max)
        r->status = BZ_BAD_FRAGMENT;
    else if (h->length > frame - BZ_ETH_BYTES - BZ_HEADER_BYTES)
        r->status = BZ_BAD_TRUNCATED;
    if (r->status)
        return 1;
    const uint8_t *body = rte_pktmbuf_read(m, BZ_ETH_BYTES + BZ_HEADER_BYTES, h->length, buf);
    uint32_t crc = rte_hash_crc(h, BZ_HEADER_BYTES - 4, 0);
    if (rte_hash_crc(body, h->length, crc) != h->checksum) {
        r->status = BZ_BAD_CHECKSUM;
        return 1;
    }
    r->length = h->length;
    r->data = body;
    return 1;
foreign:
    l->counters.foreign++;
    return 0;
}

/* Frees the mbufs of the frames the last bz_poll reported: their payloads
 * (bz_rx.data) are gone after this. */
void bz_release(bz_ctx *c)
{
    if (c->n_held)
        rte_pktmbuf_free_bulk(c->held, c->n_held);
    c->n_held = 0;
}

/* Copies n payload bytes of the frame r reports, from its byte skip, to dest:
 * the one copy of a received payload (into the Raft log's free tail, say).
 * Returns n, or -EINVAL if the payload has no such bytes. */
int bz_rx_copy(const struct bz_rx *r, uint32_t skip, uint8_t *dest, uint32_t n)
{
    if (r->status != 0 || r->data == NULL || skip > r->length || n > r->length - skip)
        return -EINVAL;
    memcpy(dest, r->data + skip, n);
    return (int)n;
}

/* Frees what the last call reported (bz_release), then takes up to out_max
 * frames from the links (round robin, a burst each) and reports each one of
 * ours in out[], its payload where it lies: its mbuf is held until the next
 * bz_release (or bz_poll). A chained mbuf's payload is gathered into buf.
 * Frames that do not fit stay pending for the next call. */
int bz_poll(bz_ctx *c, struct bz_rx *out, unsigned out_max, uint8_t *buf, uint32_t buf_bytes)
{
    unsigned n = 0;
    uint32_t used = 0;
    unsigned links = c->n_links;
    bz_release(c);
    if (out_max > BZ_HELD_MAX)
        out_max = BZ_HELD_MAX;
    for (unsigned step = 0; step < links && n < out_max; step++) {
        unsigned li = (c->rx_next + step) % links;
        struct bz_link *l = c->links[li];
        while (n < out_max && peek(c, l)) {
            struct rte_mbuf *m = l->pending[l->pending_at];
            if (m->pkt_len <= c->frame_bytes && used + m->pkt_len > buf_bytes)
                goto full;
            struct bz_rx *r = &out[n];
            int kept = 0;
            if (take(c, l, li, m, r, buf + used)) {
                if (r->status == 0) {
                    if (r->data == buf + used)
                        used += r->length;
                    c->held[c->n_held++] = m;
                    kept = 1;
                } else {
                    l->counters.refused++;
                }
                n++;
            }
            if (!kept)
                rte_pktmbuf_free(m);
            l->pending_at++;
        }
    }
full:
    c->rx_next = (c->rx_next + 1) % (links ? links : 1);
    if (n)
        c->worked = 1;
    return (int)n;
}

/* -- waiting ------------------------------------------------------------------------- */

static int loop_ready(int epoll_fd)
{
    struct epoll_event ev;
    return epoll_wait(epoll_fd, &ev, 1, 0) > 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Notes how long the loop was idle before work came, and chooses the next
 * polling budget: the 75th percentile of the recent gaps (a quarter of
 * one more), when that is within the policy's budget; else just spin_ns --
 * work comes later than polling pays for, so sleep and be woken. Never
 * above the contention cap. */
static void learn(bz_ctx *c, int64_t gap, const struct bz_policy *p)
{
    int64_t budget_max = p->spin_ns + p->yield_ns;
    int64_t sorted[BZ_GAPS];
    c->gaps[c->gap_at] = gap;
    c->gap_at = (c->gap_at + 1) % BZ_GAPS;
    if (c->n_gaps < BZ_GAPS)
        c->n_gaps++;
    memcpy(sorted, c->gaps, c->n_gaps * sizeof(sorted[0]));
    qsort(sorted, c->n_gaps, sizeof(sorted[0]), cmp_i64);
    int64_t typical = sorted[(c->n_gaps * 3) / 4];
    int64_t budget = typical + typical / 4;
    if (budget > budget_max)
        budget = p->spin_ns;
    if (c->cap_ns < budget_max) /* the cap recovers while the core is ours */
        c->cap_ns += budget_max / 16;
    if (c->cap_ns > budget_max)
        c->cap_ns = budget_max;
    c->budget_ns = budget < c->cap_ns ? budget : c->cap_ns;
}

/* Waits until a frame arrives, the asyncio loop's epoll set has an event
 * (a socket, a wake-up from another thread, the doorbell), or timeout_ns
 * passes (-1: no timeout). How, depends on how long nothing happened:
 *
 *   idle < spin_ns            poll the rings back to back (rte_pause);
 *   idle < budget             poll, sched_yield between polls: another
 *                             process wanting this core gets it;
 *   after that                raise our "asleep" flag, poll once more, and
 *                             sleep in epoll: a peer that sends while the
 *                             flag is up rings the doorbell. Without a
 *                             doorbell (no flag), sleep at most sleep_ns
 *                             and poll again: the short timer.
 *
 * The budget adapts (see learn): polling costs CPU, and pays only when work
 * comes before a sleeper would have been woken. A poll that finds it lost
 * the core for preempted_ns halves the ceiling of the budget and sleeps at
 * once: the machine has more work than cores, and a poller that stays
 * runnable queues behind that work when its frame comes, where a sleeper
 * woken by its doorbell is run first.
 *
 * The loop's epoll set is checked every check_ns while polling.
 */
int bz_wait(bz_ctx *c, int epoll_fd, int64_t timeout_ns, const struct bz_policy *p)
{
    int64_t now = now_ns();
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : now + timeout_ns;
    int64_t checked = now - p->check_ns; /* look at the loop's descriptors first */
    int64_t budget_max = p->spin_ns + p->yield_ns;
    if (c->budget_ns < 0 || c->budget_ns > budget_max)
        c->budget_ns = c->cap_ns = budget_max;
    c->waits.waits++;
    if (c->worked) { /* the idle clock starts when the loop runs out of work */
        c->worked = 0;
        c->last_work_ns = now;
    }
    int result = BZ_WAKE_TIMEOUT;
    for (;;) {
        if (peek_all(c)) {
            result = BZ_WAKE_RX;
            goto woken;
        }
        if (now - checked >= p->check_ns) {
            if (loop_ready(epoll_fd)) {
                result = BZ_WAKE_LOOP;
                goto woken;
            }
            checked = now;
        }
        if (now >= deadline)
            goto woken;
        int64_t idle = now - c->last_work_ns;
        if (idle >= c->budget_ns)
            break;
        if (idle < p->spin_ns) {
            c->waits.spins++;
            rte_pause();
        } else {
            c->waits.yields++;
            sched_yield();
        }
        int64_t before = now;
        now = now_ns();
        if (now - before > p->preempted_ns) {
            c->waits.preempted++;
            c->cap_ns /= 2;
            if (c->budget_ns > c->cap_ns)
                c->budget_ns = c->cap_ns;
            break;
        }
    }
    /* sleep (not past the loop's next timer; -1: it has none). A poll that
     * lost the core may come back after that timer: then only look, with a
     * zero timeout -- a negative one would be taken for "no timer" and the
     * loop would sleep until a frame or an event, missing its timers. */
    c->waits.sleeps++;
    int64_t sleep_ns = timeout_ns < 0 ? -1 : (deadline > now ? deadline - now : 0);
    int staged = bz_staged(c) > 0;
    if (c->flag != NULL && !staged) {
        __atomic_store_n(c->flag, 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    } else if (sleep_ns < 0 || sleep_ns > p->sleep_ns) {
        sleep_ns = p->sleep_ns;
    }
    if (peek_all(c)) {
        result = BZ_WAKE_RX;
    } else {
        struct epoll_event ev;
        struct timespec ts = {sleep_ns / 1000000000, sleep_ns % 1000000000};
        int ready = epoll_pwait2(epoll_fd, &ev, 1, sleep_ns < 0 ? NULL : &ts, NULL);
        if (peek_all(c))
            result = BZ_WAKE_RX;
        else if (ready > 0)
            result = BZ_WAKE_LOOP;
    }
    if (c->flag != NULL)
        __atomic_store_n(c->flag, 0, __ATOMIC_RELAXED);
woken:
    if (result == BZ_WAKE_TIMEOUT) {
        c->waits.wake_timeout++;
        return result;
    }
    c->worked = 1;
    learn(c, now_ns() - c->last_work_ns, p);
    if (result == BZ_WAKE_RX)
        c->waits.wake_rx++;
    else
        c->waits.wake_loop++;
    return result;
}

void bz_wait_counters(bz_ctx *c, struct bz_wait_counters *out)
{
    *out = c->waits;
    out->budget_ns = c->budget_ns;
}

/* -- the floor (benchmarks) ----------------------------------------------------------- */

/* The least a Python program can do to send a frame: copy it into an mbuf
 * and hand it to the driver. No header, no checksum, no fragments. */
int bz_floor_send(bz_ctx *c, int link, const uint8_t *frame, uint32_t length)
{
    struct bz_link *l = c->links[link];
    struct rte_mbuf *m = rte_pktmbuf_alloc(c->pool);
    if (m == NULL)
        return -ENOMEM;
    memcpy(rte_pktmbuf_mtod(m, uint8_t *), frame, length);
    m->data_len = (uint16_t)length;
    m->pkt_len = length;
    uint16_t sent = gated_tx_burst(c, l, &m, 1);
    if (sent == 1)
        return 1;
    rte_pktmbuf_free(m);
    return 0;
}

/* ... and to take one: a burst of one, copied out. Returns its length, or 0. */
int bz_floor_recv(bz_ctx *c, int link, uint8_t *buf, uint32_t buf_bytes)
{
    struct bz_link *l = c->links[link];
    struct rte_mbuf *m;
    uint16_t got = gated_rx_burst(c, l, &m, 1);
    if (got == 0)
        return 0;
    uint32_t n = m->pkt_len < buf_bytes ? m->pkt_len : buf_bytes;
    const uint8_t *data = rte_pktmbuf_read(m, 0, n, buf);
    if (data != buf)
        memcpy(buf, data, n);
    rte_pktmbuf_free(m);
    return (int)n;
}
