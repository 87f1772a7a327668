/* ringkvd --join: registers a new node with a running cluster (start-up). */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "rk_log.h"
#include "rk_proto.h"
#include "srv.h"

/* Give up joining after this long. */
#define JOIN_TIMEOUT_MS 30000
/* Per-call socket timeout. */
#define CALL_TIMEOUT_S 3

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int io_all(int fd, uint8_t *p, size_t n, bool wr)
{
    while (n > 0) {
        ssize_t k = wr ? write(fd, p, n) : read(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return RK_EUNAVAILABLE;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* One blocking request/response on a fresh connection. */
static int call(const char *addr, const Ringkv__Request *rq,
                uint64_t max_frame, Ringkv__Response **out)
{
    struct srv_addr a;
    struct sockaddr_storage ss;
    *out = NULL;
    if (srv_addr_parse(addr, &a) != 0 || a.port == 0 ||
        srv_addr_resolve(&a, &ss) != 0)
        return RK_EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return RK_EIO;
    struct timeval tv = {.tv_sec = CALL_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    socklen_t sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                           : sizeof(struct sockaddr_in6);
    uint8_t *req = NULL, *resp = NULL;
    size_t len = 0;
    int rv = connect(fd, (struct sockaddr *)&ss, sl) == 0 ? 0
                                                           : RK_EUNAVAILABLE;
    if (rv == 0)
        rv = rk_proto_pack((const ProtobufCMessage *)rq, 0, &req, &len);
    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16),
                      (uint8_t)(len >> 8), (uint8_t)len};
    if (rv == 0 && (rv = io_all(fd, hdr, 4, true)) == 0)
        rv = io_all(fd, req, len, true);
    if (rv == 0 && (rv = io_all(fd, hdr, 4, false)) == 0) {
        len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 |
              (size_t)hdr[2] << 8 | hdr[3];
        resp = len <= max_frame ? malloc(len + 1) : NULL;
        rv = resp == NULL ? RK_ETOOLARGE : io_all(fd, resp, len, false);
    }
    if (rv == 0)
        rv = rk_proto_unpack(&ringkv__response__descriptor, resp, len, 0,
                             (ProtobufCMessage **)out);
    close(fd);
    free(req);
    free(resp);
    return rv;
}

int srv_meta_join(struct srv *s)
{
    const struct srv_config *c = s->cfg;
    char join[SRV_HOST_MAX + 16], addr[SRV_HOST_MAX + 16];
    char peer[SRV_HOST_MAX + 16], client[SRV_HOST_MAX + 16];
    srv_addr_format(&c->join, join, sizeof(join));
    srv_addr_format(&c->peer_listen, peer, sizeof(peer));
    srv_addr_format(&c->listen, client, sizeof(client));
    snprintf(addr, sizeof(addr), "%s", join);

    Ringkv__MemberAddRequest ma = RINGKV__MEMBER_ADD_REQUEST__INIT;
    ma.node_id = c->id;
    ma.peer_addr = peer;
    ma.client_addr = client;
    Ringkv__Request rq = RINGKV__REQUEST__INIT;
    rq.op_case = RINGKV__REQUEST__OP_MEMBER_ADD;
    rq.member_add = &ma;
    uint64_t deadline = now_ms() + JOIN_TIMEOUT_MS;
    Ringkv__Response *r = NULL;
    int rv = RK_ETIMEDOUT;
    while (now_ms() < deadline) {
        rv = call(addr, &rq, c->max_frame_bytes, &r);
        if (rv == 0 && r->status == RINGKV__STATUS__OK)
            break;
        if (rv == 0 && r->status == RINGKV__STATUS__NOT_LEADER &&
            r->leader_hint != NULL && r->leader_hint->address[0] != '\0') {
            snprintf(addr, sizeof(addr), "%s", r->leader_hint->address);
        } else if (rv == 0 && r->status != RINGKV__STATUS__UNAVAILABLE &&
                   r->status != RINGKV__STATUS__TIMEOUT &&
                   r->status != RINGKV__STATUS__NOT_LEADER) {
            rk_errf(s->errmsg, "--join %s: the cluster refused node %" PRIu64
                    ": %s", join, c->id, r->message);
            rk_proto_free((ProtobufCMessage *)r);
            return RK_EINVAL;
        } else {
            snprintf(addr, sizeof(addr), "%s", join);
            usleep(300 * 1000);
        }
        if (r != NULL)
            rk_proto_free((ProtobufCMessage *)r);
        r = NULL;
        rv = RK_ETIMEDOUT;
    }
    if (r != NULL)
        rk_proto_free((ProtobufCMessage *)r);
    if (rv != 0) {
        rk_errf(s->errmsg, "--join %s: node %" PRIu64 " not registered "
                "within %d s: %s", join, c->id, JOIN_TIMEOUT_MS / 1000,
                rk_strerror(rv));
        return rv;
    }
    rk_log(RK_LOG_INFO, "joined: node %" PRIu64 " registered through %s",
           c->id, addr);

    /* The map that registered it (or a later one). */
    Ringkv__GetShardMapRequest gm = RINGKV__GET_SHARD_MAP_REQUEST__INIT;
    Ringkv__Request mq = RINGKV__REQUEST__INIT;
    mq.op_case = RINGKV__REQUEST__OP_GET_SHARD_MAP;
    mq.get_shard_map = &gm;
    struct shard_map m;
    shard_map_init(&m);
    rv = RK_ETIMEDOUT;
    while (now_ms() < deadline && rv != 0) {
        rv = call(addr, &mq, c->max_frame_bytes, &r);
        if (rv == 0 && (r->status != RINGKV__STATUS__OK ||
                        r->shard_map == NULL))
            rv = RK_EUNAVAILABLE;
        if (rv == 0)
            rv = shard_map_decode(&m, r->shard_map->encoded.data,
                                  r->shard_map->encoded.len);
        if (rv == 0 && shard_map_node(&m, c->id) == NULL) {
            shard_map_free(&m);
            rv = RK_EUNAVAILABLE; /* that node has not applied it yet */
        }
        if (r != NULL)
            rk_proto_free((ProtobufCMessage *)r);
        r = NULL;
        if (rv != 0)
            usleep(200 * 1000);
    }
    if (rv != 0) {
        rk_errf(s->errmsg, "--join %s: cannot fetch the shard map: %s", join,
                rk_strerror(rv));
        return rv;
    }
    s->cluster_id = m.cluster_id;
    rv = srv_meta_save(c, &m);
    shard_map_free(&m);
    if (rv != 0)
        rk_errf(s->errmsg, "cannot save the shard map in %s", c->data_dir);
    return rv;
}
