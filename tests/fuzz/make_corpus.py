#!/usr/bin/env python3
"""Writes the seed corpus of tricky inputs for tests/fuzz (run from anywhere).

corpus/frame:  byte 0 picks the frame limit (index into 1, 7, 255, 4096,
               default), byte 1 seeds the slicing, the rest is the stream.
corpus/peer:   PeerBatch / PeerHello bytes (proto/raft.proto).
corpus/client: Request / Response / ShardMap bytes (proto/ringkv.proto).
corpus/store:  WAL records (a storage batch) and KV commands (src/storage).
Files found by fuzzing are added next to these under their own names.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fv(num, v):  # varint field
    return varint(num << 3) + varint(v)


def fb(num, b):  # length-delimited field
    return varint(num << 3 | 2) + varint(len(b)) + b


def packed(num, vals):
    return fb(num, b"".join(varint(v) for v in vals))


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def write(kind, name, data):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ------------------------------------------------------------------ frames
write("frame", "empty-stream", b"\x04\x00")
write("frame", "one-empty-frame", b"\x04\x00" + frame(b""))
write("frame", "many-small", b"\x03\x05" + b"".join(frame(bytes([i]) * i) for i in range(40)))
write("frame", "header-ffffffff", b"\x04\x07" + b"\xff\xff\xff\xff" + b"abc")
write("frame", "over-default-by-one", b"\x04\x01" + struct.pack(">I", (4 << 20) + 1))
write("frame", "over-small-limit", b"\x01\x02" + frame(b"ab"))
write("frame", "exactly-limit-7", b"\x01\x09" + frame(b"1234567") + frame(b"12345678"))
write("frame", "truncated-header", b"\x03\x03" + b"\x00\x00\x01")
write("frame", "truncated-payload", b"\x03\x04" + struct.pack(">I", 100) + b"x" * 50)
write("frame", "big-then-partial", b"\x03\xfe" + frame(b"y" * 4000) + b"\x00\x00")

# ------------------------------------------------------------------- peers
def entry(term, index, typ=0, data=b""):
    b = fv(1, term) + fv(2, index)
    if typ:
        b += fv(3, typ)
    if data:
        b += fb(4, data)
    return b


def msg(typ, shard=1, term=5, **kw):
    b = (fv(1, typ) if typ else b"") + fv(2, shard) + fv(5, term)
    order = ["frm", "to", "index", "log_term", "commit"]
    nums = {"frm": 3, "to": 4, "index": 6, "log_term": 7, "commit": 8}
    for k in order:
        if k in kw:
            b += fv(nums[k], kw[k])
    for e in kw.get("entries", []):
        b += fb(9, e)
    for k, n in (("reject", 10), ("hint_index", 11), ("hint_term", 12),
                 ("context", 13), ("chunk_seq", 15), ("chunk_last", 16)):
        if k in kw:
            b += fv(n, kw[k])
    if "snap" in kw:
        b += fb(14, kw["snap"])
    if "chunk" in kw:
        b += fb(17, kw["chunk"])
    return b


def batch(msgs=(), hb=None, hbr=None, frm=1, to=2):
    b = (fv(1, frm) if frm else b"") + (fv(2, to) if to else b"")
    for m in msgs:
        b += fb(3, m)
    if hb is not None:
        b += fb(4, hb)
    if hbr is not None:
        b += fb(5, hbr)
    return b


def conf(voters, learners=()):
    return packed(1, voters) + (packed(2, learners) if learners else b"")


def coalesced(shards, terms, commits=(), ctxs=()):
    b = packed(1, shards) + packed(2, terms)
    if commits:
        b += packed(3, commits)
    if ctxs:
        b += packed(4, ctxs)
    return b


append = msg(4, index=10, log_term=4, commit=9,
             entries=[entry(5, 11, 0, b"put k v"), entry(5, 12, 2), entry(5, 13, 1, b"\x00" * 9)])
write("peer", "append-3-entries", batch([append]))
write("peer", "keepalive", batch())
write("peer", "empty-bytes", b"")
write("peer", "all-types", batch([msg(t, shard=t + 1, index=3, log_term=2) for t in range(11)]))
write("peer", "coalesced-hb", batch(hb=coalesced(range(1, 200), [5] * 199, range(199)),
                                     hbr=coalesced([1, 2, 3], [5, 5, 5], (), [7, 8, 9])))
write("peer", "coalesced-mismatch", batch(hb=coalesced([1, 2, 3], [5, 5])))
write("peer", "snapshot-chunk", batch([msg(8, index=0, snap=fv(1, 100) + fv(2, 4) + fb(3, conf([1, 2, 3], [4])),
                                            chunk_seq=2, chunk_last=1, chunk=b"\xab" * 300)]))
write("peer", "conf-17-voters", batch([msg(8, snap=fv(1, 1) + fv(2, 1) + fb(3, conf(range(1, 18))))]))
write("peer", "entries-on-vote", batch([msg(2, entries=[entry(5, 1)])]))
write("peer", "entry-index-gap", batch([msg(4, index=10, entries=[entry(5, 11), entry(5, 13)])]))
write("peer", "index-wraps", batch([msg(4, index=(1 << 64) - 1, entries=[entry(5, 0)])]))
write("peer", "type-11", batch([msg(11)]))
write("peer", "type-negative", batch([fv(1, (1 << 64) - 1)]))
write("peer", "chunk-on-append", batch([msg(4, chunk=b"zz")]))
write("peer", "from-zero", batch([msg(2)], frm=0))
write("peer", "explicit-from-to", batch([msg(3, frm=9, to=8, reject=1, hint_index=4, hint_term=2)]))
write("peer", "hb-as-full-msg", batch([msg(6, commit=3, context=77), msg(7, context=77)]))
write("peer", "many-empty-msgs", batch([b""] * 3000))
write("peer", "overlong-varint", fv(1, 1) + b"\x10" + b"\xff" * 10 + b"\x01")
write("peer", "truncated-append", batch([append])[:-5])
write("peer", "wrong-wire-type", varint(3 << 3 | 0) + varint(5) + fv(1, 1))
write("peer", "huge-length-claim", fv(1, 1) + fv(2, 2) + varint(3 << 3 | 2) + varint(1 << 40))
write("peer", "unknown-fields", batch([msg(2) + fv(99, 1) + fb(100, b"future")]) + fv(77, 3))
hello = fv(1, 1) + fv(2, 0xC0FFEE) + fv(3, 2) + fv(4, 1) + fb(6, b"127.0.0.2:7001") + fb(7, b"127.0.0.2:6001")
write("peer", "hello", hello)
write("peer", "hello-ack", hello + fv(5, 1))
write("peer", "hello-long-addr", fv(1, 1) + fv(3, 2) + fb(6, b"a" * 300))
write("peer", "hello-version-0", fv(3, 2))

# ------------------------------------------------------------------ client
def request(op_field, op, **kw):
    b = fv(1, kw.get("rid", 1)) + fv(2, 7) + fv(3, kw.get("seq", 0)) + fv(4, 1)
    if "consistency" in kw:
        b += fv(5, kw["consistency"])
    return b + fb(op_field, op)


write("client", "get", request(10, fb(1, b"key")))
write("client", "get-empty-key", request(10, b""))
write("client", "put", request(11, fb(1, b"k") + fb(2, b"v" * 100), seq=1))
write("client", "delete", request(12, fb(1, b"k"), seq=2))
write("client", "cas-value", request(13, fb(1, b"k") + fb(2, b"") + fb(5, b"new"), seq=3))
write("client", "cas-revision", request(13, fb(1, b"k") + fv(3, 42) + fv(6, 1), seq=4))
write("client", "cas-absent-false", request(13, fb(1, b"k") + fv(4, 0)))
write("client", "cas-two-expects", request(13, fb(1, b"k") + fv(3, 1) + fb(2, b"x") + fv(4, 1)))
write("client", "scan", request(14, fb(1, b"user/") + fb(2, b"user/10") + fv(3, 100) + fv(4, 3)))
write("client", "status", request(15, b""))
write("client", "bad-consistency", request(10, fb(1, b"k"), consistency=9))
write("client", "two-ops", request(10, fb(1, b"k")) + fb(11, fb(1, b"k")))
write("client", "member-add", request(18, fv(1, 4) + fb(2, b"127.0.0.4:7001") + fb(3, b"127.0.0.4:6001")))
kv = fb(1, b"k1") + fb(2, b"v1") + fv(3, 10) + fv(4, 9)
write("client", "resp-scan", fv(1, 1) + fb(14, fb(1, kv) * 50 + fv(2, 1)))
write("client", "resp-many-empty-items", fv(1, 1) + fb(14, b"\x0a\x00" * 5000))
write("client", "resp-not-leader", fv(1, 9) + fv(2, 2) + fb(4, fv(1, 3) + fb(2, b"127.0.0.3:6001")) + fv(5, 4))
write("client", "resp-unknown-status", fv(1, 9) + fv(2, 1000))
node = fv(1, 1) + fb(2, b"127.0.0.1:7001") + fb(3, b"127.0.0.1:6001")
shard = fv(1, 1) + packed(2, [1, 2, 3]) + fb(4, fv(1, 2) + fv(2, 9) + fb(3, fv(1, 123) + fv(2, 9)))
smap = fv(1, 0xC0FFEE) + fv(2, 7) + b"".join(fb(3, fv(1, h << 40) + fv(2, 1 + h % 4)) for h in range(64)) \
    + fb(4, shard) + fb(5, node)
write("client", "shard-map", smap)
write("client", "resp-shard-map", fv(1, 2) + fb(16, smap))
write("client", "nested-garbage", fb(10, fb(1, fb(1, fb(1, b"\xff\xff")))))
write("client", "string-bad-utf8", fv(1, 1) + fb(3, b"\xc3\x28\xff"))


# corpus/store: WAL records (stor_thread.c "the batch as a record") and KV
# commands (stor.h "KV commands"); all integers big-endian.
def put_cmd(key, val, client=7, seq=1):
    return struct.pack(">BBQQI", 1, 1, client, seq, len(key)) + key + struct.pack(">I", len(val)) + val


def sconf(voters, learners=()):
    return struct.pack(">II", len(voters), len(learners)) + b"".join(struct.pack(">Q", i) for i in (*voters, *learners))


def sents(ents):  # (term, index, type, data)
    return struct.pack(">I", len(ents)) + b"".join(
        struct.pack(">QQBI", t, i, ty, len(d)) + d for t, i, ty, d in ents)


def rec(ops):  # (kind, shard, body)
    return struct.pack(">BI", 1, len(ops)) + b"".join(struct.pack(">BQ", k, s) + b for k, s, b in ops)


CREATE, DESTROY, APPEND, HS, CONF, APPLIED_CONF, STAGE, INSTALL, APPLY, COMPACT = range(10)
p1 = put_cmd(b"key", b"value")
write("store", "put-cmd", p1)
write("store", "del-cmd", struct.pack(">BBQQI", 1, 2, 0, 0, 1) + b"k")
write("store", "split-cmd", struct.pack(">BBQQII", 1, 5, 0, 0, 9, 2) + struct.pack(">QQQQ", 0, 10, 1 << 63, (1 << 64) - 1))
write("store", "cmd-trailing-byte", p1 + b"\x00")
write("store", "rec-append-apply-hs", rec([
    (APPEND, 1, sents([(1, 1, 0, p1), (1, 2, 2, b"")])),
    (HS, 1, struct.pack(">QQQ", 1, 1, 2)),
    (APPLY, 1, sents([(1, 1, 0, p1), (1, 2, 2, b"")])),
    (COMPACT, 1, struct.pack(">Q", 1))]))
write("store", "rec-create-conf-destroy", rec([
    (CREATE, 2, sconf([1, 2, 3], [4])),
    (CONF, 2, sconf([1, 2, 3])),
    (APPLIED_CONF, 2, sconf([1, 2])),
    (DESTROY, 3, b"")]))
meta = struct.pack(">QQ", 10, 2) + sconf([1, 2, 3])
write("store", "rec-stage-install", rec([
    (STAGE, 1, meta + struct.pack(">IBI", 0, 1, 5) + b"chunk"),
    (INSTALL, 1, meta)]))
write("store", "rec-empty", rec([]))
write("store", "rec-unknown-kind", rec([(42, 1, b"")]))
write("store", "rec-bad-version", b"\x02" + rec([])[1:])
write("store", "rec-truncated", rec([(APPEND, 1, sents([(1, 1, 0, p1)]))])[:-3])
write("store", "rec-huge-count", struct.pack(">BI", 1, 0xFFFFFFFF))
write("store", "rec-conf-too-many", rec([(CONF, 1, struct.pack(">II", 1000, 0))]))


# Log chunks (stor_int.h "log chunks"): u8 format | u32 count |
# count * (u64 term | u32 end | u8 type) | data.
def logc(ents, fmt=1):  # (term, type, data)
    desc, data = b"", b""
    for t, ty, d in ents:
        data += d
        desc += struct.pack(">QIB", t, len(data), ty)
    return struct.pack(">BI", fmt, len(ents)) + desc + data


write("store", "logc-three", logc([(1, 0, p1), (1, 2, b""), (2, 1, b"conf")]))
write("store", "logc-bad-format", logc([(1, 0, b"x")], fmt=2))
write("store", "logc-zero-count", struct.pack(">BI", 1, 0))
write("store", "logc-count-past-end", struct.pack(">BI", 1, 1000) + b"\x00" * 13)
write("store", "logc-end-past-data", struct.pack(">BIQIB", 1, 1, 1, 99, 0) + b"abc")
write("store", "logc-ends-backwards", struct.pack(">BIQIBQIB", 1, 2, 1, 3, 0, 1, 1, 0) + b"abc")
write("store", "logc-data-left-over", logc([(1, 0, b"ab")]) + b"zz")
