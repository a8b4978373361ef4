/* Blizzard's DPDK helper: the declarations Python sees (through cffi).
 *
 * Kept to what cffi's cdef parser reads, so _build.py feeds this very file
 * to both the C compiler and cdef: one definition of every struct.
 */

#define BZ_BURST 32
#define BZ_ETHERTYPE 0x88B5
#define BZ_MAGIC 0x5A42
#define BZ_VERSION 1
#define BZ_ETH_BYTES 14
#define BZ_HEADER_BYTES 36

/* Why a frame of our ethertype was refused (bz_rx.status). */
#define BZ_BAD_TRUNCATED 1
#define BZ_BAD_VERSION 2
#define BZ_BAD_CLUSTER 3
#define BZ_BAD_DESTINATION 4
#define BZ_BAD_SOURCE 5
#define BZ_BAD_FRAGMENT 6
#define BZ_BAD_CHECKSUM 7
#define BZ_BAD_SIZE 8
#define BZ_BAD_REASONS 9

/* What ended a bz_wait. */
#define BZ_WAKE_TIMEOUT 0
#define BZ_WAKE_RX 1
#define BZ_WAKE_LOOP 2

typedef struct bz_ctx bz_ctx;

/* One received frame: a fragment to reassemble (status 0), or a refusal. */
struct bz_rx {
    int32_t status;
    uint16_t link;
    uint16_t index;
    uint16_t count;
    uint16_t last;     /* payload bytes of the message's last frame (0: not said) */
    uint32_t source;
    uint32_t session;
    uint32_t message;
    uint32_t length;   /* payload bytes; for a refusal, the frame's bytes */
    const uint8_t *data; /* the payload, where it lies (in its mbuf) until bz_release */
};

/* One piece of a message to send (bz_send_parts). */
struct bz_part {
    const uint8_t *data;
    uint32_t length;
};

/* Counters of one link since it was added. */
struct bz_link_counters {
    uint64_t frames_sent;
    uint64_t bytes_sent;
    uint64_t tx_bursts;
    uint64_t frames_dropped;
    uint64_t frames_staged;
    uint64_t doorbells;
    uint64_t frames_received;
    uint64_t bytes_received;
    uint64_t rx_bursts;
    uint64_t refused;
    uint64_t foreign;
};

/* How to wait once idle: spin, then yield, then sleep (see bz_wait). */
struct bz_policy {
    int64_t spin_ns;
    int64_t yield_ns;
    int64_t sleep_ns;
    int64_t check_ns;
    int64_t preempted_ns;
};

/* Counters of the waiting itself. */
struct bz_wait_counters {
    uint64_t waits;
    uint64_t spins;
    uint64_t yields;
    uint64_t sleeps;
    uint64_t wake_rx;
    uint64_t wake_loop;
    uint64_t wake_timeout;
    uint64_t preempted;
    int64_t budget_ns;
};

int bz_eal_init(int argc, char **argv);
/* memif unmaps a link's regions only once no burst in flight uses them (_bzgate.h):
 * 1 arranged, 0 memif's reference to munmap not found, or a negative errno. */
int bz_gate_install(void);
void *bz_gate_memif_munmap(void); /* what memif calls as munmap now (tests) */
int bz_gate_register(uint64_t *seq); /* a burst sequence the gate waits on (tests) */
void bz_gate_unregister(uint64_t *seq);
const char *bz_strerror(int error);
int bz_errno(void);

bz_ctx *bz_ctx_new(const char *name, uint32_t cluster, uint32_t self, uint32_t session,
                   unsigned mbufs, unsigned frame_bytes, unsigned fragments_max);
void bz_ctx_free(bz_ctx *c);
void bz_set_session(bz_ctx *c, uint32_t session);

int bz_link_add(bz_ctx *c, uint32_t peer, const char *vdev_name, const char *vdev_args,
                unsigned frame_bytes, unsigned ring_size);
int bz_link_start(bz_ctx *c, int link);
int bz_link_stop(bz_ctx *c, int link);
int bz_link_up(bz_ctx *c, int link);
int bz_link_remove(bz_ctx *c, int link);
int bz_link_payload_max(bz_ctx *c, int link);
int bz_link_doorbell(bz_ctx *c, int link, uint32_t *peer_flag, const char *bell_path);
void bz_link_counters(bz_ctx *c, int link, struct bz_link_counters *out);

void bz_set_flag(bz_ctx *c, uint32_t *flag);
int bz_send(bz_ctx *c, int link, uint32_t message, const uint8_t *payload, uint32_t length);
int bz_send_parts(bz_ctx *c, int link, uint32_t message, const struct bz_part *parts,
                  unsigned n_parts, uint32_t length);
int bz_send_raw(bz_ctx *c, int link, const uint8_t *frame, uint32_t length);
int bz_flush(bz_ctx *c);
int bz_staged(bz_ctx *c);
int bz_poll(bz_ctx *c, struct bz_rx *out, unsigned out_max, uint8_t *buf, uint32_t buf_bytes);
int bz_rx_copy(const struct bz_rx *r, uint32_t skip, uint8_t *dest, uint32_t n);
void bz_release(bz_ctx *c);
int bz_wait(bz_ctx *c, int epoll_fd, int64_t timeout_ns, const struct bz_policy *policy);
void bz_wait_counters(bz_ctx *c, struct bz_wait_counters *out);
uint32_t bz_crc(const uint8_t *data, uint32_t length, uint32_t init);
int bz_floor_send(bz_ctx *c, int link, const uint8_t *frame, uint32_t length);
int bz_floor_recv(bz_ctx *c, int link, uint8_t *buf, uint32_t buf_bytes);
