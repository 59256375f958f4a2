/* The two per-packet loops of the capture fast path that numpy can only do in many passes:
 * the walk over a run of well-formed pcapng Enhanced Packet Blocks, and the decode of the
 * link, IP and TCP/UDP headers of every packet of a chunk. Both are exact ports of the
 * numpy code they stand in for (pcapng._EpbRun.run and decode.decode_numpy, which stay
 * the reference and the fallback); tests/test_pcap_native.py checks native == numpy on
 * real and damaged captures. Every read is checked against the buffer's length, and the
 * loops run without the GIL, so the read-ahead thread no longer competes with the packet
 * loop for it. A third helper turns the payloads of WebSocket text frames found in bulk into
 * str (websocket.text_frames), the per-frame step of the packet loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline int64_t u32be(const unsigned char *a, int64_t o);
static inline int64_t u32le(const unsigned char *a, int64_t o);
static int view(PyObject *o, Py_buffer *v, Py_ssize_t bytes, int writable, const char *what);
static int rows(PyObject *o, Py_buffer *v, Py_ssize_t unit, const char *err, Py_ssize_t *n);

#define BT_EPB 6u
#define MAX_BLOCK (16u << 20)

/* ------------------------------------------------------------------ EPB run */

/* epb_run(buf, off) -> (offsets: bytearray of int64, next_off: int)
 * From byte offset `off` (a multiple of 4), the offsets of consecutive blocks that are all
 * good EPBs in the host's byte order (type 6, length a multiple of 4, 32..16 MiB, inside
 * the buffer, trailer equal to the length, captured length fitting), and the offset of the
 * first block that is not (left to the careful per-block walk). */
static PyObject *epb_run(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer b;
    Py_ssize_t off;
    if (!PyArg_ParseTuple(args, "y*n", &b, &off)) return NULL;
    const unsigned char *p = b.buf;
    Py_ssize_t n4 = b.len >> 2;
    if (off < 0 || (off & 3) || off > b.len) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "offset outside the buffer or not 4-byte aligned");
        return NULL;
    }
    Py_ssize_t cap = 1024, n = 0, i = off >> 2;
    int64_t *out = PyMem_RawMalloc(cap * sizeof(int64_t));
    if (!out) {
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS;
    for (;;) {
        uint32_t bt, bl, trailer, caplen;
        if (i + 8 > n4) break; /* a good EPB has at least 8 words */
        memcpy(&bt, p + 4 * i, 4);
        memcpy(&bl, p + 4 * i + 4, 4);
        if (bt != BT_EPB || (bl & 3) || bl < 32 || bl > MAX_BLOCK) break;
        Py_ssize_t j = i + (Py_ssize_t)(bl >> 2);
        if (j > n4) break;
        memcpy(&trailer, p + 4 * (j - 1), 4);
        memcpy(&caplen, p + 4 * i + 20, 4);
        if (trailer != bl || caplen > bl - 32) break;
        if (n == cap) {
            int64_t *grown = PyMem_RawRealloc(out, 2 * cap * sizeof(int64_t));
            if (!grown) {
                oom = 1;
                break;
            }
            out = grown;
            cap *= 2;
        }
        out[n++] = (int64_t)(4 * i);
        i = j;
    }
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&b);
    if (oom) {
        PyMem_RawFree(out);
        return PyErr_NoMemory();
    }
    PyObject *arr = PyByteArray_FromStringAndSize((const char *)out, n * (Py_ssize_t)sizeof(int64_t));
    PyMem_RawFree(out);
    if (!arr) return NULL;
    return Py_BuildValue("(Nn)", arr, 4 * i);
}

/* epb_fields(buf, offsets, big, out) -> None
 * out: int64[3, n] and ticks uint64[n] gathered at each block offset: interface id (+8),
 * the 64-bit timestamp (+12 high, +16 low), captured (+20) and original (+24) length, in
 * the section's byte order; fields past the buffer read as 0 (only a Simple Packet Block,
 * whose fields the caller replaces, can be that short). pcapng._chunk in numpy otherwise. */
static PyObject *epb_fields(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ob, *oo, *oout, *oticks;
    int big;
    if (!PyArg_ParseTuple(args, "OOpOO", &ob, &oo, &big, &oout, &oticks)) return NULL;
    Py_buffer b, vo, vout, vt;
    if (PyObject_GetBuffer(ob, &b, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(oo, &vo, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&b);
        return NULL;
    }
    Py_ssize_t n = vo.len / 8;
    if (vo.len != n * 8 || view(oout, &vout, 3 * n * 8, 1, "out") < 0) {
        if (vo.len != n * 8) PyErr_SetString(PyExc_ValueError, "offsets: not int64");
        PyBuffer_Release(&vo);
        PyBuffer_Release(&b);
        return NULL;
    }
    if (view(oticks, &vt, n * 8, 1, "ticks") < 0) {
        PyBuffer_Release(&vout);
        PyBuffer_Release(&vo);
        PyBuffer_Release(&b);
        return NULL;
    }
    const unsigned char *a = b.buf;
    const int64_t *po = vo.buf;
    int64_t *out = vout.buf;
    uint64_t *ticks = vt.buf;
    int64_t len = (int64_t)b.len;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t o = po[k], f[5];
        for (int j = 0; j < 5; j++) {
            int64_t at = o + 8 + 4 * j;
            f[j] = at < 0 || at + 4 > len ? 0 : big ? u32be(a, at) : u32le(a, at);
        }
        out[k] = f[0];
        out[n + k] = f[3];
        out[2 * n + k] = f[4];
        ticks[k] = ((uint64_t)f[1] << 32) | (uint64_t)f[2];
    }
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&vt);
    PyBuffer_Release(&vout);
    PyBuffer_Release(&vo);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ header decode */

enum { I_VLAN, I_IPVER, I_PROTO, I_SPORT, I_DPORT, I_SEQ, I_ACK, I_FLAGS, I_WIN, I_PAYOFF,
       I_PAYLEN, N_INT };
enum { U_SHI, U_SLO, U_DHI, U_DLO, N_U64 };
enum { B_LINKOK, B_FRAG, B_L4OK, N_BOOL };

#define LINK_ETHERNET 1
#define LINK_NULL 0
#define LINK_LOOP 108
#define LINK_SLL 113
#define LINK_SLL2 276
#define ET_IPV4 0x0800
#define ET_IPV6 0x86DD

static inline int64_t u8(const unsigned char *a, int64_t o) { return a[o]; }
static inline int64_t u16(const unsigned char *a, int64_t o) { return ((int64_t)a[o] << 8) | a[o + 1]; }
static inline int64_t u32be(const unsigned char *a, int64_t o) {
    return ((int64_t)a[o] << 24) | ((int64_t)a[o + 1] << 16) | ((int64_t)a[o + 2] << 8) | a[o + 3];
}
static inline int64_t u32le(const unsigned char *a, int64_t o) {
    return ((int64_t)a[o + 3] << 24) | ((int64_t)a[o + 2] << 16) | ((int64_t)a[o + 1] << 8) | a[o];
}
static inline uint64_t u64be(const unsigned char *a, int64_t o) {
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) v = (v << 8) | a[o + k];
    return v;
}

/* One packet: bytes a[start:end] of the chunk (end <= buffer length, checked by the
 * caller). Writes column k of the outputs; the same masks and order as decode_numpy. */
static void decode_one(const unsigned char *a, int64_t start, int64_t end, int64_t caplen,
                       int64_t link, int64_t *iv[N_INT], uint64_t *uv[N_U64], uint8_t *bv[N_BOOL],
                       Py_ssize_t k) {
    int64_t et = 0, l3 = start, vlan = -1;
    int linkok = 0;
    if (link == LINK_ETHERNET && caplen >= 14) {
        et = u16(a, start + 12);
        l3 = start + 14;
        linkok = 1;
        for (int t = 0; t < 2; t++) { /* 802.1Q / 802.1ad: up to two tags */
            if ((et == 0x8100 || et == 0x88A8 || et == 0x9100) && l3 + 4 <= end) {
                if (vlan < 0) vlan = u16(a, l3) & 0x0FFF;
                et = u16(a, l3 + 2);
                l3 += 4;
            }
        }
    } else if (link == LINK_SLL && caplen >= 16) {
        et = u16(a, start + 14);
        l3 = start + 16;
        linkok = 1;
    } else if (link == LINK_SLL2 && caplen >= 20) {
        et = u16(a, start);
        l3 = start + 20;
        linkok = 1;
    } else if ((link == 101 || link == 12 || link == 14 || link == 228 || link == 229) &&
               caplen >= 1) {
        int64_t ver = u8(a, start) >> 4;
        et = ver == 4 ? ET_IPV4 : ver == 6 ? ET_IPV6 : 0;
        linkok = 1;
    } else if ((link == LINK_NULL || link == LINK_LOOP) && caplen >= 4) {
        /* BSD loopback: address family in the writer's byte order (NULL) or big-endian */
        int64_t fam = link == LINK_LOOP ? u32be(a, start) : u32le(a, start);
        if (fam > 0xFFFF) fam = u32be(a, start);
        et = fam == 2 ? ET_IPV4 : (fam == 24 || fam == 28 || fam == 30) ? ET_IPV6 : 0;
        l3 = start + 4;
        linkok = 1;
    }

    int v4 = 0, v6 = 0, frag = 0, later = 0;
    int64_t proto = -1, ip_end = end, l4 = l3, ihl = 0;
    uint64_t shi = 0, slo = 0, dhi = 0, dlo = 0, s4 = 0, d4 = 0;
    if (linkok && et == ET_IPV4 && l3 + 20 <= end) {
        int64_t vhl = u8(a, l3);
        ihl = (vhl & 0x0F) * 4;
        v4 = (vhl >> 4) == 4 && ihl >= 20 && l3 + ihl <= end;
    }
    if (v4) {
        int64_t tot = u16(a, l3 + 2), fr = u16(a, l3 + 6);
        proto = u8(a, l3 + 9);
        frag = (fr & 0x3FFF) != 0;
        later = (fr & 0x1FFF) != 0;
        s4 = (uint64_t)u32be(a, l3 + 12);
        d4 = (uint64_t)u32be(a, l3 + 16);
        int64_t len = tot > ihl ? tot : ihl;
        ip_end = l3 + len < end ? l3 + len : end;
        l4 = l3 + ihl;
    }
    if (linkok && et == ET_IPV6 && l3 + 40 <= end) v6 = (u8(a, l3) >> 4) == 6;
    if (v6) {
        int64_t plen = u16(a, l3 + 4), nh = u8(a, l3 + 6);
        shi = u64be(a, l3 + 8);
        slo = u64be(a, l3 + 16);
        dhi = u64be(a, l3 + 24);
        dlo = u64be(a, l3 + 32);
        ip_end = l3 + 40 + plen < end ? l3 + 40 + plen : end;
        int64_t p6 = l3 + 40;
        for (int t = 0; t < 3; t++) { /* hop-by-hop, routing, destination options, fragment */
            if ((nh == 0 || nh == 43 || nh == 60) && p6 + 8 <= end) {
                int64_t nxt = u8(a, p6), hlen = (u8(a, p6 + 1) + 1) * 8;
                nh = nxt;
                p6 += hlen;
            }
            if (nh == 44 && p6 + 8 <= end) {
                int64_t fo = u16(a, p6 + 2);
                frag = 1;
                if (fo & 0xFFF8) later = 1;
                nh = u8(a, p6);
                p6 += 8;
            }
        }
        proto = nh;
        l4 = p6;
    } else {
        slo = (0xFFFFull << 32) | s4;
        dlo = (0xFFFFull << 32) | d4;
    }

    int ipok = (v4 || v6) && !later;
    int tcp = ipok && proto == 6 && l4 + 20 <= ip_end;
    int64_t doff = 0;
    if (tcp) {
        doff = (u8(a, l4 + 12) >> 4) * 4;
        tcp = doff >= 20 && l4 + doff <= ip_end;
    }
    int udp = ipok && proto == 17 && l4 + 8 <= ip_end;
    int l4ok = tcp || udp;
    int64_t pay_off = tcp ? l4 + doff : udp ? l4 + 8 : ip_end;

    iv[I_VLAN][k] = vlan;
    iv[I_IPVER][k] = v4 ? 4 : v6 ? 6 : 0;
    iv[I_PROTO][k] = proto;
    iv[I_SPORT][k] = l4ok ? u16(a, l4) : 0;
    iv[I_DPORT][k] = l4ok ? u16(a, l4 + 2) : 0;
    iv[I_SEQ][k] = tcp ? u32be(a, l4 + 4) : 0;
    iv[I_ACK][k] = tcp ? u32be(a, l4 + 8) : 0;
    iv[I_FLAGS][k] = tcp ? u8(a, l4 + 13) : 0;
    iv[I_WIN][k] = tcp ? u16(a, l4 + 14) : 0;
    iv[I_PAYOFF][k] = pay_off;
    iv[I_PAYLEN][k] = l4ok ? (ip_end - pay_off > 0 ? ip_end - pay_off : 0) : 0;
    uv[U_SHI][k] = shi;
    uv[U_SLO][k] = slo;
    uv[U_DHI][k] = dhi;
    uv[U_DLO][k] = dlo;
    bv[B_LINKOK][k] = (uint8_t)linkok;
    bv[B_FRAG][k] = (uint8_t)frag;
    bv[B_L4OK][k] = (uint8_t)l4ok;
}

static int view(PyObject *o, Py_buffer *v, Py_ssize_t bytes, int writable, const char *what) {
    if (PyObject_GetBuffer(o, v, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (v->len != bytes) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", what, v->len, bytes);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* The read-only buffer of o, n rows of `unit` bytes; a length that is not a whole number of
 * rows raises ValueError(err). The buffer is released on failure. */
static int rows(PyObject *o, Py_buffer *v, Py_ssize_t unit, const char *err, Py_ssize_t *n) {
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    *n = v->len / unit;
    if (v->len != *n * unit) {
        PyErr_SetString(PyExc_ValueError, err);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* decode(buf, data_off, caplen, linktype, ints, u64s, bools)
 * data_off, caplen, linktype: int64[n]; ints: int64[N_INT, n], u64s: uint64[N_U64, n],
 * bools: uint8[N_BOOL, n], filled in the row order of the enums above. A packet whose
 * bytes would lie outside buf raises ValueError (the reader never makes one). */
static PyObject *decode(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ob, *ooff, *ocap, *olink, *oi, *ou, *obool;
    if (!PyArg_ParseTuple(args, "OOOOOOO", &ob, &ooff, &ocap, &olink, &oi, &ou, &obool))
        return NULL;
    Py_buffer b, off, cap, link, vi, vu, vb;
    if (PyObject_GetBuffer(ob, &b, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t n;
    if (rows(ooff, &off, 8, "data_off: not int64", &n) < 0) goto e0;
    if (view(ocap, &cap, n * 8, 0, "caplen") < 0) goto e1;
    if (view(olink, &link, n * 8, 0, "linktype") < 0) goto e2;
    if (view(oi, &vi, (Py_ssize_t)N_INT * n * 8, 1, "ints") < 0) goto e3;
    if (view(ou, &vu, (Py_ssize_t)N_U64 * n * 8, 1, "u64s") < 0) goto e4;
    if (view(obool, &vb, (Py_ssize_t)N_BOOL * n, 1, "bools") < 0) goto e5;

    const unsigned char *a = b.buf;
    const int64_t *po = off.buf, *pc = cap.buf, *pl = link.buf;
    int64_t *iv[N_INT];
    uint64_t *uv[N_U64];
    uint8_t *bv[N_BOOL];
    for (int r = 0; r < N_INT; r++) iv[r] = (int64_t *)vi.buf + (Py_ssize_t)r * n;
    for (int r = 0; r < N_U64; r++) uv[r] = (uint64_t *)vu.buf + (Py_ssize_t)r * n;
    for (int r = 0; r < N_BOOL; r++) bv[r] = (uint8_t *)vb.buf + (Py_ssize_t)r * n;
    Py_ssize_t bad = -1;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t s = po[k], c = pc[k];
        if (s < 0 || c < 0 || s > (int64_t)b.len || c > (int64_t)b.len - s) {
            bad = k;
            break;
        }
        decode_one(a, s, s + c, c, pl[k], iv, uv, bv, k);
    }
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&vb);
    PyBuffer_Release(&vu);
    PyBuffer_Release(&vi);
    PyBuffer_Release(&link);
    PyBuffer_Release(&cap);
    PyBuffer_Release(&off);
    PyBuffer_Release(&b);
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "packet %zd lies outside the chunk's buffer", bad);
        return NULL;
    }
    Py_RETURN_NONE;
e5:
    PyBuffer_Release(&vu);
e4:
    PyBuffer_Release(&vi);
e3:
    PyBuffer_Release(&link);
e2:
    PyBuffer_Release(&cap);
e1:
    PyBuffer_Release(&off);
e0:
    PyBuffer_Release(&b);
    return NULL;
}

/* ------------------------------------------------------------------ TCP flow state */

#define F_FIN 1
#define F_SYN 2
#define F_RST 4
#define F_ACK 16
#define N_LETTERS 8 /* tcp.LETTERS "SHADFRTW" */

enum { P_GID, P_DIR, P_FLAGS, P_PLEN, P_FRAME, P_TS, P_SEQ, P_ACK, P_WIN, N_PKT };
enum { S_PKTS, S_BYTES, S_SYN, S_FIN, S_RST, S_RETRANS, S_DUPACK, S_ZEROWIN, S_ISN, S_MAXEND,
       S_LASTACK, S_LASTWIN, N_STATE };

/* fold(packets, state, last_frame, last_ts, hist_frame, hist_ts, n_flows)
 * packets: int64[N_PKT, n] (TCP packets of a chunk in frame order: flow id, direction,
 * flags, payload length, frame, ts, seq, ack, window); state: N_STATE int64 arrays of
 * shape (cap, 2) in the enum's order; last_frame, last_ts: int64[cap]; hist_frame,
 * hist_ts: int64[cap, 2, 8]. Folds packet after packet what tcp.FlowTable._fold_numpy
 * computes with sorts and segmented maxima (its reference). */
static PyObject *fold(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *opk, *ostate, *olf, *olt, *ohf, *oht;
    Py_ssize_t nflows;
    if (!PyArg_ParseTuple(args, "OOOOOOn", &opk, &ostate, &olf, &olt, &ohf, &oht, &nflows))
        return NULL;
    if (!PyTuple_Check(ostate) || PyTuple_GET_SIZE(ostate) != N_STATE) {
        PyErr_SetString(PyExc_ValueError, "state: a tuple of the flow arrays");
        return NULL;
    }
    Py_buffer pk, st[N_STATE], lf, lt, hf, ht;
    int got = 0, ok = 0;
    Py_ssize_t n;
    if (rows(opk, &pk, N_PKT * 8, "packets: not int64[9, n]", &n) < 0) return NULL;
    if (PyObject_GetBuffer(olf, &lf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto r0;
    Py_ssize_t cap = lf.len / 8;
    if (nflows < 0 || nflows > cap) {
        PyErr_SetString(PyExc_ValueError, "n_flows beyond the arrays");
        goto r1;
    }
    if (view(olt, &lt, cap * 8, 1, "last_ts") < 0) goto r1;
    if (view(ohf, &hf, cap * 2 * N_LETTERS * 8, 1, "hist_frame") < 0) goto r2;
    if (view(oht, &ht, cap * 2 * N_LETTERS * 8, 1, "hist_ts") < 0) goto r3;
    for (; got < N_STATE; got++)
        if (view(PyTuple_GET_ITEM(ostate, got), &st[got], cap * 2 * 8, 1, "state") < 0) goto r4;
    const int64_t *P = pk.buf;
    int64_t *S[N_STATE];
    for (int r = 0; r < N_STATE; r++) S[r] = st[r].buf;
    int64_t *LF = lf.buf, *LT = lt.buf, *HF = hf.buf, *HT = ht.buf;
    Py_ssize_t bad = -1;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t g = P[P_GID * n + k], d = P[P_DIR * n + k], f = P[P_FLAGS * n + k];
        int64_t plen = P[P_PLEN * n + k], frame = P[P_FRAME * n + k], ts = P[P_TS * n + k];
        int64_t seq = P[P_SEQ * n + k], ack = P[P_ACK * n + k], win = P[P_WIN * n + k];
        if (g < 0 || g >= nflows || (d != 0 && d != 1)) {
            bad = k;
            break;
        }
        Py_ssize_t i = 2 * g + d;
        int syn = (f & F_SYN) != 0, fin = (f & F_FIN) != 0, rst = (f & F_RST) != 0;
        int ackf = (f & F_ACK) != 0, ctl = (f & (F_SYN | F_FIN | F_RST)) != 0;
        S[S_PKTS][i] += 1;
        S[S_BYTES][i] += plen;
        S[S_SYN][i] += syn;
        S[S_FIN][i] += fin;
        S[S_RST][i] += rst;
        if (frame > LF[g]) LF[g] = frame;
        if (ts > LT[g]) LT[g] = ts;
        if (S[S_ISN][i] < 0) S[S_ISN][i] = seq;
        int64_t rel = (seq - S[S_ISN][i]) % 4294967296LL;
        if (rel < 0) rel += 4294967296LL;
        int64_t seg = plen + syn + fin, end = rel + seg;
        /* retransmission: ends at or below the highest end seen before in this direction */
        int64_t prior = S[S_MAXEND][i];
        int keepalive = seg <= 1 && !syn && !fin && end == prior;
        int retr = seg > 0 && end <= prior && !keepalive;
        int64_t val = seg > 0 ? end : 0;
        if (val > prior) S[S_MAXEND][i] = val;
        /* duplicate ACK: no payload, no SYN/FIN/RST, same ack and window as before, window > 0 */
        int pure = plen == 0 && !ctl && ackf;
        int dup = pure && ack == S[S_LASTACK][i] && win == S[S_LASTWIN][i] && win > 0;
        S[S_LASTACK][i] = ack;
        S[S_LASTWIN][i] = win;
        int zwin = win == 0 && !ctl;
        S[S_RETRANS][i] += retr;
        S[S_DUPACK][i] += dup;
        S[S_ZEROWIN][i] += zwin;
        int letters[N_LETTERS] = {syn && !ackf, syn && ackf, pure, plen > 0, fin, rst, retr, zwin};
        for (int li = 0; li < N_LETTERS; li++) {
            Py_ssize_t h = (2 * g + d) * N_LETTERS + li;
            if (letters[li] && HF[h] == 0) {
                HF[h] = frame;
                HT[h] = ts;
            }
        }
    }
    Py_END_ALLOW_THREADS;
    if (bad >= 0)
        PyErr_Format(PyExc_ValueError, "packet %zd names no flow or direction", bad);
    else
        ok = 1;
r4:
    for (int r = 0; r < got; r++) PyBuffer_Release(&st[r]);
    PyBuffer_Release(&ht);
r3:
    PyBuffer_Release(&hf);
r2:
    PyBuffer_Release(&lt);
r1:
    PyBuffer_Release(&lf);
r0:
    PyBuffer_Release(&pk);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ WebSocket texts */

/* Whether s[0:n] is well-formed UTF-8 as Python's strict decoder reads it (RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF). */
static int utf8_ok(const unsigned char *s, int64_t n) {
    int64_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int k;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c == 0xE0) k = 2, lo = 0xA0;
        else if (c >= 0xE1 && c <= 0xEC) k = 2;
        else if (c == 0xED) k = 2, hi = 0x9F;
        else if (c >= 0xEE && c <= 0xEF) k = 2;
        else if (c == 0xF0) k = 3, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3) k = 3;
        else if (c == 0xF4) k = 3, hi = 0x8F;
        else return 0;
        if (i + k >= n) return 0; /* truncated sequence */
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (int j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k + 1;
    }
    return 1;
}

/* pack_texts(buf, start, end, masked, out, ok)
 * Each frame payload buf[start[i]:end[i]], unmasked with the 4 bytes before it where
 * masked[i] (RFC 6455 5.3), copied end to end into out (uint8[sum(end - start)]); ok[i]
 * (uint8) says whether it is well-formed UTF-8. The packed texts become an Arrow string
 * column without a Python str each (websocket.Texts); text_frames' loop is the reference. */
static PyObject *pack_texts(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ob, *os, *oe, *om, *oo, *ok;
    if (!PyArg_ParseTuple(args, "OOOOOO", &ob, &os, &oe, &om, &oo, &ok)) return NULL;
    Py_buffer b, vs, ve, vm, vo, vk;
    PyObject *ret = NULL;
    if (PyObject_GetBuffer(ob, &b, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t n;
    if (rows(os, &vs, 8, "start: not int64", &n) < 0) goto f0;
    if (view(oe, &ve, n * 8, 0, "end") < 0) goto f1;
    if (view(om, &vm, n * 8, 0, "masked") < 0) goto f2;
    if (view(ok, &vk, n, 1, "ok") < 0) goto f3;
    const unsigned char *a = b.buf;
    const int64_t *ps = vs.buf, *pe = ve.buf, *pm = vm.buf;
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t s = ps[i], e = pe[i];
        if (s < 0 || e < s || e > (int64_t)b.len || (pm[i] && s < 4)) {
            PyErr_Format(PyExc_ValueError, "frame %zd lies outside the buffer", i);
            goto f4;
        }
        total += e - s;
    }
    if (view(oo, &vo, total, 1, "out") < 0) goto f4;
    unsigned char *out = vo.buf, *good = vk.buf;
    Py_BEGIN_ALLOW_THREADS;
    int64_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t s = ps[i], len = pe[i] - s;
        unsigned char *dst = out + at;
        if (pm[i]) {
            const unsigned char *key = a + s - 4;
            for (int64_t k = 0; k < len; k++) dst[k] = a[s + k] ^ key[k & 3];
        } else {
            memcpy(dst, a + s, (size_t)len);
        }
        good[i] = (unsigned char)utf8_ok(dst, len);
        at += len;
    }
    Py_END_ALLOW_THREADS;
    ret = Py_None;
    Py_INCREF(ret);
    PyBuffer_Release(&vo);
f4:
    PyBuffer_Release(&vk);
f3:
    PyBuffer_Release(&vm);
f2:
    PyBuffer_Release(&ve);
f1:
    PyBuffer_Release(&vs);
f0:
    PyBuffer_Release(&b);
    return ret;
}

/* ---------------------------------------------------------------- flow ids
 * A TCP flow's canonical key is its lower endpoint first: (hi, lo, hi, lo, ports) as
 * tcp.py builds it. The flow table's open-addressing index (slots: int64[2^k], -1 empty,
 * else a flow id whose key row is in keys) is owned by FlowTable; these two functions
 * read and fill it. */

static inline uint64_t key_hash(const uint64_t *k) {
    uint64_t x = (k[0] * 0x9E3779B97F4A7C15ULL) ^ (k[1] * 0xC2B2AE3D27D4EB4FULL) ^
                 (k[2] * 0x165667B19E3779F9ULL) ^ (k[3] * 0xD6E8FEB86659FD93ULL) ^
                 (k[4] * 0xFF51AFD7ED558CCDULL);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ULL;
    return x ^ (x >> 29);
}

static inline int same_key(const uint64_t *a, const uint64_t *b) {
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4];
}

/* flow_ids(cols, keys, slots, c_hi, c_lo, c_port, n_flows, out_key, out)
 * cols: uint64[6, n] (src_hi, src_lo, dst_hi, dst_lo, sport, dport of TCP packets);
 * keys: uint64[cap, 5]; slots: int64[size], size a power of two with a free slot;
 * c_hi, c_lo: uint64[cap], c_port: int64[cap] (each flow's client endpoint);
 * out_key: uint64[n, 5] <- each packet's canonical key; out: int64[2, n] <- flow id (-1 when
 * the key is not in the table) and direction (0 from the client, 1 to it). */
static PyObject *flow_ids(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ocols, *okeys, *oslots, *ochi, *oclo, *ocport, *okout, *oout;
    Py_ssize_t nflows;
    if (!PyArg_ParseTuple(args, "OOOOOOnOO", &ocols, &okeys, &oslots, &ochi, &oclo, &ocport,
                          &nflows, &okout, &oout))
        return NULL;
    Py_buffer cols, keys, slots, chi, clo, cport, kout, out;
    PyObject *ret = NULL;
    Py_ssize_t n;
    if (rows(ocols, &cols, 48, "cols: not uint64[6, n]", &n) < 0) return NULL;
    if (PyObject_GetBuffer(okeys, &keys, PyBUF_C_CONTIGUOUS) < 0) goto c0;
    Py_ssize_t cap = keys.len / 40;
    if (keys.len != cap * 40 || nflows < 0 || nflows > cap) {
        PyErr_SetString(PyExc_ValueError, "keys: not uint64[cap, 5] holding n_flows");
        goto c1;
    }
    if (PyObject_GetBuffer(oslots, &slots, PyBUF_C_CONTIGUOUS) < 0) goto c1;
    Py_ssize_t size = slots.len / 8;
    if (size < 2 || (size & (size - 1)) || size <= nflows) {
        PyErr_SetString(PyExc_ValueError, "slots: int64[2^k] with room to spare");
        goto c2;
    }
    if (view(ochi, &chi, cap * 8, 0, "c_hi") < 0) goto c2;
    if (view(oclo, &clo, cap * 8, 0, "c_lo") < 0) goto c3;
    if (view(ocport, &cport, cap * 8, 0, "c_port") < 0) goto c4;
    if (view(okout, &kout, n * 40, 1, "out_key") < 0) goto c5;
    if (view(oout, &out, n * 16, 1, "out") < 0) goto c6;
    const uint64_t *C = cols.buf, *K = keys.buf, *CHI = chi.buf, *CLO = clo.buf;
    const int64_t *S = slots.buf, *CP = cport.buf;
    uint64_t *KO = kout.buf;
    int64_t *O = out.buf;
    uint64_t mask = (uint64_t)size - 1;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t k = 0; k < n && !bad; k++) {
        uint64_t sh = C[k], sl = C[n + k], dh = C[2 * n + k], dl = C[3 * n + k];
        uint64_t sp = C[4 * n + k], dp = C[5 * n + k];
        int swap = sh > dh || (sh == dh && (sl > dl || (sl == dl && sp > dp)));
        uint64_t *key = KO + 5 * k;
        key[0] = swap ? dh : sh;
        key[1] = swap ? dl : sl;
        key[2] = swap ? sh : dh;
        key[3] = swap ? sl : dl;
        key[4] = swap ? (dp << 16) | sp : (sp << 16) | dp;
        int64_t gid = -1;
        for (uint64_t h = key_hash(key) & mask, probes = 0;; h = (h + 1) & mask, probes++) {
            int64_t g = S[h];
            if (g < 0) break;
            if (g >= nflows || probes > mask) {
                bad = 1;
                break;
            }
            if (same_key(K + 5 * g, key)) {
                gid = g;
                break;
            }
        }
        O[k] = gid;
        O[n + k] = gid >= 0 && !(sh == CHI[gid] && sl == CLO[gid] && (int64_t)sp == CP[gid]);
    }
    Py_END_ALLOW_THREADS;
    if (bad)
        PyErr_SetString(PyExc_ValueError, "slots: a flow id beyond n_flows, or no free slot");
    else
        ret = Py_NewRef(Py_None);
    PyBuffer_Release(&out);
c6:
    PyBuffer_Release(&kout);
c5:
    PyBuffer_Release(&cport);
c4:
    PyBuffer_Release(&clo);
c3:
    PyBuffer_Release(&chi);
c2:
    PyBuffer_Release(&slots);
c1:
    PyBuffer_Release(&keys);
c0:
    PyBuffer_Release(&cols);
    return ret;
}

/* slots_add(keys, slots, gids): puts each flow id of gids (int64[m], its key row in keys) in
 * the open-addressing index; the caller keeps it at most half full. */
static PyObject *slots_add(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *okeys, *oslots, *ogids;
    if (!PyArg_ParseTuple(args, "OOO", &okeys, &oslots, &ogids)) return NULL;
    Py_buffer keys, slots, gids;
    PyObject *ret = NULL;
    if (PyObject_GetBuffer(okeys, &keys, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    Py_ssize_t cap = keys.len / 40;
    if (PyObject_GetBuffer(oslots, &slots, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) goto a0;
    Py_ssize_t size = slots.len / 8;
    if (PyObject_GetBuffer(ogids, &gids, PyBUF_C_CONTIGUOUS) < 0) goto a1;
    Py_ssize_t m = gids.len / 8;
    if (keys.len != cap * 40 || size < 2 || (size & (size - 1))) {
        PyErr_SetString(PyExc_ValueError, "keys: uint64[cap, 5]; slots: int64[2^k]");
        goto a2;
    }
    const uint64_t *K = keys.buf;
    const int64_t *G = gids.buf;
    int64_t *S = slots.buf;
    uint64_t mask = (uint64_t)size - 1;
    for (Py_ssize_t i = 0; i < m; i++) {
        int64_t g = G[i];
        if (g < 0 || g >= cap) {
            PyErr_SetString(PyExc_ValueError, "gids: a flow id beyond the keys");
            goto a2;
        }
        uint64_t h = key_hash(K + 5 * g) & mask, probes = 0;
        while (S[h] >= 0) {
            if (++probes > mask) {
                PyErr_SetString(PyExc_ValueError, "slots: full");
                goto a2;
            }
            h = (h + 1) & mask;
        }
        S[h] = g;
    }
    ret = Py_NewRef(Py_None);
a2:
    PyBuffer_Release(&gids);
a1:
    PyBuffer_Release(&slots);
a0:
    PyBuffer_Release(&keys);
    return ret;
}

static PyMethodDef methods[] = {
    {"epb_fields", epb_fields, METH_VARARGS,
     "epb_fields(buf, offsets, big, out, ticks): interface, lengths and time of each block."},
    {"fold", fold, METH_VARARGS,
     "fold(packets, state, last_frame, last_ts, hist_frame, hist_ts, n_flows): TCP state."},
    {"pack_texts", pack_texts, METH_VARARGS,
     "pack_texts(buf, start, end, masked, out, ok): WebSocket text payloads, unmasked, packed."},
    {"epb_run", epb_run, METH_VARARGS,
     "epb_run(buf, off) -> (int64 offsets as bytearray, next offset): a run of good EPBs."},
    {"flow_ids", flow_ids, METH_VARARGS,
     "flow_ids(cols, keys, slots, c_hi, c_lo, c_port, n_flows, out_key, out): TCP flow ids."},
    {"slots_add", slots_add, METH_VARARGS,
     "slots_add(keys, slots, gids): flow ids into the flow table's hash index."},
    {"decode", decode, METH_VARARGS,
     "decode(buf, data_off, caplen, linktype, ints, u64s, bools): headers of every packet."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pcapscan",
    "Native pcapng EPB walk and packet header decode (see parsers/pcap/native.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__pcapscan(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "N_INT", N_INT) < 0 ||
        PyModule_AddIntConstant(m, "N_U64", N_U64) < 0 ||
        PyModule_AddIntConstant(m, "N_BOOL", N_BOOL) < 0 ||
        PyModule_AddIntConstant(m, "N_PKT", N_PKT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
