/* Can net_memif receive into an mbuf pool over external memory here?
 *
 * The question behind the DPDK transport's docstring ("Why that copy
 * remains"): DPDK 22.11 as Debian 12 ships it, EAL started as the transport
 * starts it (--no-huge --no-pci --no-shconf), no hugepages. Two processes
 * over one memif link: the server maps a file (as a pool file is mapped),
 * registers it (rte_extmem_register, page size 4 KiB, no IOVA table), makes
 * an mbuf pool over it (rte_pktmbuf_pool_create_extbuf) and receives; the
 * client sends one 1000-byte frame. Prints where the frame landed.
 *
 *   gcc -O1 -DALLOW_EXPERIMENTAL_API -o /tmp/extmem scripts/dpdk_extmem_probe.c \
 *       $(pkg-config --cflags --libs libdpdk) -lrte_bus_vdev && /tmp/extmem [DIR]
 *
 * (DIR, default /tmp: where the memif socket and the mapped file go.)
 * tests/replication/transport/test_dpdk.py builds and runs it.
 *
 * Here: IOVA mode VA; registration 0; virt2iova = the address; the pool is
 * made; memif receives into it ("in the mapping? YES", the mbuf flagged
 * external). So the mbufs can be the log pool's memory -- but each frame
 * lands at the start of whichever buffer the pool hands the driver, behind
 * its own headers, never at the log's tail.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_bus_vdev.h>
#include <rte_mbuf.h>
#include <rte_memory.h>

#define LEN (16u << 20)
static char SOCKET[512] = "/tmp/blizzard-extmem-probe.sock";
static char POOL[512] = "/tmp/blizzard-extmem-probe.pool";
#define ELT 2048

static int run(int server)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "--file-prefix=extmem%d_%d", getpid(), server);
    char *argv[] = {"x", "--no-huge", "--no-pci", "--no-shconf", "-m", "64", "--no-telemetry",
                    "-l", "0", prefix, "--log-level=5", NULL};
    if (rte_eal_init(11, argv) < 0) { printf("eal: %s\n", rte_strerror(rte_errno)); return 1; }
    printf("[%s] iova mode: %s\n", server ? "server" : "client",
           rte_eal_iova_mode() == RTE_IOVA_VA ? "VA" : rte_eal_iova_mode() == RTE_IOVA_PA ? "PA" : "DC");
    struct rte_mempool *pool;
    uint8_t *base = NULL;
    if (server) {
        int fd = open(POOL, O_RDWR | O_CREAT | O_TRUNC, 0600);
        ftruncate(fd, LEN);
        base = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        int ret = rte_extmem_register(base, LEN, NULL, 0, 4096);
        printf("[server] rte_extmem_register(%p, %u, NULL, 0, 4096) = %d (%s)\n", base, LEN,
               ret, ret ? rte_strerror(rte_errno) : "ok");
        rte_iova_t iova = rte_mem_virt2iova(base);
        printf("[server] rte_mem_virt2iova = %#lx (RTE_BAD_IOVA %s)\n", (unsigned long)iova,
               iova == RTE_BAD_IOVA ? "yes" : "no");
        struct rte_pktmbuf_extmem ext = {base, rte_eal_iova_mode() == RTE_IOVA_VA ?
                                         (rte_iova_t)(uintptr_t)base : RTE_BAD_IOVA, LEN, ELT};
        pool = rte_pktmbuf_pool_create_extbuf("ext", 1023, 0, 0, ELT, SOCKET_ID_ANY, &ext, 1);
        printf("[server] rte_pktmbuf_pool_create_extbuf = %p (%s)\n", (void *)pool,
               pool ? "ok" : rte_strerror(rte_errno));
        if (!pool) return 1;
    } else {
        pool = rte_pktmbuf_pool_create("p", 1023, 0, 0, ELT + 128, SOCKET_ID_ANY);
    }
    const char *name = server ? "net_memif0" : "net_memif1";
    char args[200];
    snprintf(args, sizeof args, "role=%s,id=0,socket=%s,socket-abstract=no,bsize=2048",
             server ? "server" : "client", SOCKET);
    if (rte_vdev_init(name, args)) { printf("vdev failed\n"); return 1; }
    uint16_t port; rte_eth_dev_get_port_by_name(name, &port);
    struct rte_eth_conf conf; memset(&conf, 0, sizeof conf);
    int r1 = rte_eth_dev_configure(port, 1, 1, &conf);
    int r2 = rte_eth_rx_queue_setup(port, 0, 256, SOCKET_ID_ANY, NULL, pool);
    int r3 = rte_eth_tx_queue_setup(port, 0, 256, SOCKET_ID_ANY, NULL);
    int r4 = rte_eth_dev_start(port);
    printf("[%s] configure %d rxq %d txq %d start %d\n", server ? "server" : "client", r1, r2, r3, r4);
    for (int i = 0; i < 300; i++) {
        struct rte_eth_link link; rte_eth_link_get_nowait(port, &link);
        if (link.link_status) break;
        usleep(10000);
    }
    if (!server) {
        for (int k = 0; k < 100; k++) {
            struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
            char *p = rte_pktmbuf_append(m, 1000);
            memset(p, 0xAB, 1000); memcpy(p, "EXTMEM-PAYLOAD", 14);
            if (rte_eth_tx_burst(port, 0, &m, 1) == 1) { usleep(100000); break; }
            rte_pktmbuf_free(m); usleep(20000);
        }
        usleep(500000);
        return 0;
    }
    for (int k = 0; k < 500; k++) {
        struct rte_mbuf *m;
        if (rte_eth_rx_burst(port, 0, &m, 1) == 1) {
            uint8_t *d = rte_pktmbuf_mtod(m, uint8_t *);
            printf("[server] received %u bytes at %p: in the mapping [%p, %p)? %s; flags ext=%d; data %.14s\n",
                   m->pkt_len, d, base, base + LEN,
                   d >= base && d < base + LEN ? "YES" : "no",
                   !!(m->ol_flags & RTE_MBUF_F_EXTERNAL), d);
            return 0;
        }
        usleep(10000);
    }
    printf("[server] nothing received\n");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        snprintf(SOCKET, sizeof SOCKET, "%s/extmem-probe.sock", argv[1]);
        snprintf(POOL, sizeof POOL, "%s/extmem-probe.pool", argv[1]);
    }
    unlink(SOCKET);
    pid_t child = fork();
    if (child == 0) return run(1);
    usleep(300000);
    pid_t c2 = fork();
    if (c2 == 0) return run(0);
    int st; waitpid(child, &st, 0); waitpid(c2, NULL, 0);
    unlink(SOCKET);
    unlink(POOL);
    return WEXITSTATUS(st);
}
