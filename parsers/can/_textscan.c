/* Line scanners for the CAN text formats that reach tens of millions of lines: can-utils
 * `candump -L` logs, Vector ASC and PEAK TRC 2.x (and, at the end, the object walk of BLF
 * containers). Each scanner takes one chunk of text (lines cut on '\n', as
 * Source.line_chunks yields them) and returns, as flat little-endian arrays, the lines that
 * are classic data frames (and candump SocketCAN / bare ASC error frames) in their most
 * common spelling, plus the index of every other line. Those other lines go through the
 * reference parsers in Python, so the grammar here may be narrower than the formats (it is:
 * ASCII only, blanks are ' ' and '\t'), never wider: any line accepted here must give the
 * same row as the reference parser gives it (tests/test_can_textscan.py checks both ways).
 *
 * Why C: the vectorised polars path spends ~0.5 us per line on string kernels; a single
 * pass over the bytes costs ~0.03 us, and the insert into DuckDB is then what is left.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_CHANNELS 64
#define MAX_SEC_DIGITS 12 /* epoch seconds have 10; more leaves the stamp to Python */
#define ERR_FLAG 0x20000000u
#define ERR_MASK 0x1FFFFFFFu
/* can_frames.flags bits (parsers/can/frames.py) */
#define F_EXT 1
#define F_ERR 4
#define F_TX 64

typedef struct {
    Py_ssize_t cap, n, nslow;
    int64_t *line;    /* line index within the chunk, 0-based */
    int64_t *ts;      /* candump: microseconds; ASC: seconds * 1e6 + micros (log clock) */
    uint8_t *chan;    /* index into the channel names */
    uint32_t *can_id; /* arbitration id (error class bits for error frames) */
    uint8_t *flags;
    uint8_t *dlc;
    uint64_t *payload; /* data bytes big-endian */
    int64_t *slow;     /* (line index, byte offset) of every line left to the reference parser */
    PyObject *out[8];  /* the bytearrays behind the pointers above */
    PyObject *slow_out;
    const char *names[MAX_CHANNELS];
    Py_ssize_t name_len[MAX_CHANNELS];
    int nnames;
    const char *columns; /* TRC: the $COLUMNS letters */
} Scan;

static int hexval(unsigned char c, int upper_only) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (!upper_only && c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static void *alloc(PyObject **slot, Py_ssize_t bytes) {
    *slot = PyByteArray_FromStringAndSize(NULL, bytes > 0 ? bytes : 1);
    return *slot ? PyByteArray_AS_STRING(*slot) : NULL;
}

static int scan_init(Scan *s, Py_ssize_t lines) {
    memset(s, 0, sizeof(*s));
    s->cap = lines;
    if (!(s->line = alloc(&s->out[0], lines * 8)) || !(s->ts = alloc(&s->out[1], lines * 8)) ||
        !(s->chan = alloc(&s->out[2], lines)) || !(s->can_id = alloc(&s->out[3], lines * 4)) ||
        !(s->flags = alloc(&s->out[4], lines)) || !(s->dlc = alloc(&s->out[5], lines)) ||
        !(s->payload = alloc(&s->out[6], lines * 8)) || !(s->slow = alloc(&s->slow_out, lines * 16)))
        return -1;
    s->out[7] = NULL;
    return 0;
}

static void scan_free(Scan *s) {
    for (int i = 0; i < 8; i++) Py_XDECREF(s->out[i]);
    Py_XDECREF(s->slow_out);
}

/* index of the channel name, added if new; -1 when the table is full */
static int channel_index(Scan *s, const char *p, Py_ssize_t len) {
    for (int i = 0; i < s->nnames; i++)
        if (s->name_len[i] == len && memcmp(s->names[i], p, len) == 0) return i;
    if (s->nnames == MAX_CHANNELS) return -1;
    s->names[s->nnames] = p;
    s->name_len[s->nnames] = len;
    return s->nnames++;
}

/* one scanned frame; returns 1 (the line was taken) */
static int take(Scan *s, int64_t t, int ci, uint32_t id, uint8_t flags, int n, uint64_t pay) {
    Py_ssize_t k = s->n++;
    s->ts[k] = t;
    s->chan[k] = (uint8_t)ci;
    s->can_id[k] = id;
    s->flags[k] = flags;
    s->dlc[k] = (uint8_t)n;
    s->payload[k] = pay;
    return 1;
}

/* (1700000000.123456) can0 123#DEADBEEF[ R|T] -- can-utils' canonical form of a classic
 * frame: uppercase hex, 6-digit microseconds, 3- or 8-digit id, 0..8 data bytes. */
static int candump_line(Scan *s, const unsigned char *p, const unsigned char *e) {
    if (p == e || *p++ != '(') return 0;
    int64_t t = 0;
    int digits = 0;
    while (p < e && *p >= '0' && *p <= '9') { t = t * 10 + (*p++ - '0'); digits++; }
    if (digits == 0 || digits > MAX_SEC_DIGITS || p == e || *p++ != '.') return 0;
    for (int i = 0; i < 6; i++, p++) {
        if (p == e || *p < '0' || *p > '9') return 0;
        t = t * 10 + (*p - '0');
    }
    if (e - p < 2 || p[0] != ')' || p[1] != ' ') return 0;
    p += 2;
    const unsigned char *ch = p;
    while (p < e && *p > ' ' && *p < 0x7f) p++;
    if (p == ch || p == e || *p != ' ') return 0;
    int ci = channel_index(s, (const char *)ch, p - ch);
    if (ci < 0) return 0;
    p++;
    uint32_t id = 0;
    const unsigned char *id0 = p;
    int v;
    while (p < e && (v = hexval(*p, 1)) >= 0) { id = (id << 4) | (uint32_t)v; p++; }
    Py_ssize_t idlen = p - id0;
    if ((idlen != 3 && idlen != 8) || p == e || *p++ != '#') return 0;
    uint8_t flags = 0;
    if (idlen == 8) {
        if (id & ERR_FLAG) { flags = F_ERR; id &= ERR_MASK; }
        else if (id > 0x1FFFFFFFu) return 0;
        else flags = F_EXT;
    } else if (id > 0x7FF) return 0;
    uint64_t pay = 0;
    int n = 0, hi, lo;
    while (p + 1 < e && (hi = hexval(p[0], 1)) >= 0 && (lo = hexval(p[1], 1)) >= 0) {
        if (n == 8) return 0;
        pay = (pay << 8) | (uint64_t)(hi << 4 | lo);
        n++;
        p += 2;
    }
    if (p < e) { /* only ' R' / ' T' may follow */
        if (e - p != 2 || p[0] != ' ' || (p[1] != 'R' && p[1] != 'T')) return 0;
        if (p[1] == 'T') flags |= F_TX;
    }
    return take(s, t, ci, id, flags, n, pay);
}

static int blank(unsigned char c) { return c == ' ' || c == '\t'; }

/* '<sec>.<frac>' (frac 1..6 digits, padded to micros) then at least one blank */
static const unsigned char *asc_time(const unsigned char *p, const unsigned char *e, int64_t *t) {
    int64_t sec = 0, frac = 0;
    int digits = 0;
    while (p < e && *p >= '0' && *p <= '9') { sec = sec * 10 + (*p++ - '0'); digits++; }
    if (digits == 0 || digits > MAX_SEC_DIGITS || p == e || *p++ != '.') return NULL;
    digits = 0;
    while (p < e && *p >= '0' && *p <= '9') {
        if (++digits > 6) return NULL;
        frac = frac * 10 + (*p++ - '0');
    }
    if (digits == 0) return NULL;
    for (; digits < 6; digits++) frac *= 10;
    *t = sec * 1000000 + frac;
    if (p == e || !blank(*p)) return NULL;
    while (p < e && blank(*p)) p++;
    return p;
}

/* ` 0.000100 1  182x  Rx   d 8 01 02 .. [trailer]` -- a classic data frame, or
 * ` 0.000100 1  ErrorFrame` (bare, nothing after): see parsers/can/fastpath_asc.py */
static int asc_line(Scan *s, const unsigned char *p, const unsigned char *e) {
    while (p < e && blank(*p)) p++;
    int64_t t;
    if (!(p = asc_time(p, e, &t))) return 0;
    const unsigned char *ch = p;
    while (p < e && *p >= '0' && *p <= '9') p++;
    if (p == ch || p == e || !blank(*p)) return 0;
    int ci = channel_index(s, (const char *)ch, p - ch);
    if (ci < 0) return 0;
    while (p < e && blank(*p)) p++;
    uint32_t id = 0;
    uint8_t flags = 0;
    uint64_t pay = 0;
    int n = 0;
    if (e - p >= 10 && memcmp(p, "ErrorFrame", 10) == 0) {
        p += 10;
        while (p < e && blank(*p)) p++;
        if (p != e) return 0;
        flags = F_ERR;
    } else {
        const unsigned char *id0 = p;
        int v;
        while (p < e && (v = hexval(*p, 0)) >= 0) { id = (id << 4) | (uint32_t)v; p++; }
        if (p == id0 || p - id0 > 8) return 0;
        if (p < e && *p == 'x') { flags = F_EXT; p++; }
        if (p == e || !blank(*p)) return 0;
        if (id > (flags & F_EXT ? 0x1FFFFFFFu : 0x7FFu)) return 0;
        while (p < e && blank(*p)) p++;
        if (e - p < 2 || p[1] != 'x' || (p[0] != 'R' && p[0] != 'T')) return 0;
        if (p[0] == 'T') flags |= F_TX;
        p += 2;
        if (p == e || !blank(*p)) return 0;
        while (p < e && blank(*p)) p++;
        if (p == e || *p != 'd') return 0;
        p++;
        if (p == e || !blank(*p)) return 0;
        while (p < e && blank(*p)) p++;
        if (p == e || *p < '0' || *p > '8') return 0;
        int dlc = *p++ - '0';
        if (p < e && !blank(*p)) return 0;
        /* data pairs, then an optional trailer that starts with a non-hex character */
        for (;;) {
            while (p < e && blank(*p)) p++;
            if (p == e) break;
            int hi = hexval(p[0], 0);
            if (hi < 0) break; /* trailer: 'Length = ...' and the like, taken as it is */
            int lo = e - p >= 2 ? hexval(p[1], 0) : -1;
            if (lo < 0 || n == 8 || (e - p > 2 && !blank(p[2]))) return 0;
            pay = (pay << 8) | (uint64_t)(hi << 4 | lo);
            n++;
            p += 2;
        }
        if (n != dlc) return 0;
    }
    return take(s, t, ci, id, flags, n, pay);
}

/* PEAK TRC 2.x data frame, laid out by the file's $COLUMNS (one letter per column, data 'D'
 * last): see frame_regex in parsers/can/fastpath_trc.py, which this follows. */

static int digits_run(const unsigned char **pp, const unsigned char *e, int max, int64_t *v) {
    const unsigned char *p = *pp;
    int n = 0;
    *v = 0;
    while (p < e && *p >= '0' && *p <= '9') {
        if (++n > max) return 0;
        *v = *v * 10 + (*p++ - '0');
    }
    *pp = p;
    return n > 0;
}

static int trc_line(Scan *s, const unsigned char *p, const unsigned char *e) {
    while (e > p && blank(e[-1])) e--; /* the line is right-stripped of blanks first */
    while (p < e && blank(*p)) p++;
    int64_t t = -1, v;
    int ci = -1, idlen = 0, dlc = -1, have_bus = 0;
    uint32_t id = 0;
    uint8_t flags = 0;
    for (const char *c = s->columns; *c != 'D'; c++) {
        if (c != s->columns) { /* columns are separated by blanks */
            if (p == e || !blank(*p)) return 0;
            while (p < e && blank(*p)) p++;
        }
        switch (*c) {
        case 'N':
            if (!digits_run(&p, e, 18, &v)) return 0; /* more would overflow: left to Python */
            break;
        case 'O': {
            int64_t ms;
            if (!digits_run(&p, e, MAX_SEC_DIGITS, &ms)) return 0;
            int64_t frac = 0;
            int fd = 0;
            if (p < e && *p == '.') {
                p++;
                while (p < e && *p >= '0' && *p <= '9') {
                    if (fd < 3) frac = frac * 10 + (*p - '0');
                    fd++;
                    p++;
                }
            }
            for (; fd < 3; fd++) frac *= 10;
            t = ms * 1000 + frac;
            break;
        }
        case 'T':
            if (e - p < 2 || p[0] != 'D' || p[1] != 'T') return 0;
            p += 2;
            break;
        case 'B': {
            const unsigned char *b0 = p;
            if (!digits_run(&p, e, 9, &v)) return 0;
            if ((ci = channel_index(s, (const char *)b0, p - b0)) < 0) return 0;
            have_bus = 1;
            break;
        }
        case 'I': {
            const unsigned char *i0 = p;
            int x;
            while (p < e && (x = hexval(*p, 0)) >= 0) { id = (id << 4) | (uint32_t)x; p++; }
            idlen = (int)(p - i0);
            if (idlen == 0 || idlen > 8) return 0;
            break;
        }
        case 'd':
            if (e - p < 2 || (p[0] != 'R' && p[0] != 'T') || p[1] != 'x') return 0;
            if (p[0] == 'T') flags |= F_TX;
            p += 2;
            break;
        case 'R':
            if (p == e || *p != '-') return 0;
            p++;
            break;
        case 'L':
        case 'l':
            if (!digits_run(&p, e, 2, &v)) return 0;
            dlc = *c == 'L' && v > 8 ? 8 : (int)v; /* DLC 9-15 on 'L' layouts: 8 bytes */
            break;
        default:
            return 0;
        }
    }
    if (t < 0 || idlen == 0 || dlc < 0 || dlc > 8) return 0;
    if (idlen > 4) flags |= F_EXT;
    if (id > (flags & F_EXT ? 0x1FFFFFFFu : 0x7FFu)) return 0;
    uint64_t pay = 0;
    int n = 0;
    while (p < e) { /* ([ \t]+ hh)* to the end */
        if (!blank(*p)) return 0;
        while (p < e && blank(*p)) p++;
        int hi = e - p >= 2 ? hexval(p[0], 0) : -1, lo = hi >= 0 ? hexval(p[1], 0) : -1;
        if (lo < 0 || n == 8) return 0;
        pay = (pay << 8) | (uint64_t)(hi << 4 | lo);
        n++;
        p += 2;
    }
    if (n != dlc) return 0;
    if (!have_bus && (ci = channel_index(s, "1", 1)) < 0) return 0;
    return take(s, t, ci, id, flags, n, pay);
}

typedef int (*LineFn)(Scan *, const unsigned char *, const unsigned char *);

/* Runs `fn` over every line of `buf` (released here); `columns` is kept for trc_line. */
static PyObject *scan(Py_buffer buf, LineFn fn, const char *columns) {
    const unsigned char *data = buf.buf, *end = data + buf.len;
    Py_ssize_t lines = 1;
    for (const unsigned char *q = data; (q = memchr(q, '\n', end - q)); q++) lines++;
    Scan s;
    PyObject *result = NULL;
    if (scan_init(&s, lines) < 0) goto done;
    s.columns = columns;
    Py_BEGIN_ALLOW_THREADS;
    const unsigned char *p = data;
    for (Py_ssize_t i = 0; i < lines; i++) {
        const unsigned char *nl = memchr(p, '\n', end - p);
        const unsigned char *e = nl ? nl : end;
        const unsigned char *le = (e > p && e[-1] == '\r') ? e - 1 : e;
        Py_ssize_t before = s.n;
        if (fn(&s, p, le)) s.line[before] = i;
        else {
            s.slow[2 * s.nslow] = i;
            s.slow[2 * s.nslow++ + 1] = p - data;
        }
        p = e + 1;
    }
    Py_END_ALLOW_THREADS;
    static const int width[8] = {8, 8, 1, 4, 1, 1, 8, 0};
    for (int i = 0; i < 7; i++)
        if (PyByteArray_Resize(s.out[i], s.n * width[i]) < 0) goto done;
    if (PyByteArray_Resize(s.slow_out, s.nslow * 16) < 0) goto done;
    PyObject *names = PyList_New(s.nnames);
    if (!names) goto done;
    for (int i = 0; i < s.nnames; i++) {
        PyObject *name = PyUnicode_DecodeASCII(s.names[i], s.name_len[i], "strict");
        if (!name) { Py_DECREF(names); goto done; }
        PyList_SET_ITEM(names, i, name);
    }
    result = Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:N,s:n}", "line", s.out[0], "ts",
                           s.out[1], "channel", s.out[2], "can_id", s.out[3], "flags", s.out[4],
                           "dlc", s.out[5], "payload", s.out[6], "slow", s.slow_out, "names",
                           names, "lines", lines);
done:
    scan_free(&s);
    PyBuffer_Release(&buf);
    return result;
}

static PyObject *scan_candump(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    return scan(buf, candump_line, NULL);
}

static PyObject *scan_asc(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    return scan(buf, asc_line, NULL);
}

static PyObject *scan_trc(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    const char *columns;
    if (!PyArg_ParseTuple(args, "y*s", &buf, &columns)) return NULL;
    size_t nc = strlen(columns);
    if (nc < 2 || columns[nc - 1] != 'D' || strchr(columns, 'D') != columns + nc - 1) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "columns must end with their only 'D'");
        return NULL;
    }
    /* `columns` lives in the argument tuple, which outlives the scan */
    return scan(buf, trc_line, columns);
}


/* ---- BLF: the objects of decompressed log containers ------------------------------------ */

static uint64_t le(const unsigned char *p, int width) {
    uint64_t v = 0;
    for (int k = width - 1; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

/* Walks the objects of `data` (whole containers' payloads joined, after the tail the last
 * batch left) exactly as BlfReader._inner does, taking CAN_MESSAGE / CAN_MESSAGE2 objects
 * with a version-1 header into columns and listing every other object for the reference
 * code. Anything _inner would reject (no signature, bad sizes, padding that is not zeros)
 * returns None before anything is taken: the caller then runs the reference over it. */
static PyObject *walk_blf(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    const unsigned char *d = buf.buf;
    /* a CAN_MESSAGE is 48 bytes, any object at least 16: the most rows each list can get */
    Py_ssize_t len = buf.len, pos = 0, nobj = 0, nfast = 0, nother = 0;
    PyObject *out[9] = {NULL};
    static const int width[9] = {8, 8, 8, 1, 1, 4, 8, 16, 1};
    void *col[9];
    PyObject *result = NULL;
    for (int i = 0; i < 9; i++)
        if (!(col[i] = alloc(&out[i], (len / (i == 7 ? 16 : 48) + 1) * width[i]))) goto done;
    int64_t *idx = col[0], *stamp = col[1], *other = col[7];
    uint64_t *hflags = col[2], *payload = col[6];
    uint8_t *mflags = col[3], *dlc = col[4], *chan = col[8];
    uint32_t *cid = col[5];
    int bail = 0;
    Py_BEGIN_ALLOW_THREADS;
    while (pos + 16 <= len) {
        if (memcmp(d + pos, "LOBJ", 4) != 0) { /* 1-3 zero bytes of padding, then LOBJ */
            Py_ssize_t k = pos;
            while (k < len && k - pos < 3 && d[k] == 0) k++;
            if (k == pos || k + 4 > len || memcmp(d + k, "LOBJ", 4) != 0) { bail = 1; break; }
            pos = k;
            continue;
        }
        uint64_t hsize = le(d + pos + 4, 2), hver = le(d + pos + 6, 2);
        uint64_t size = le(d + pos + 8, 4), otype = le(d + pos + 12, 4);
        if (size < hsize || hsize < 16) { bail = 1; break; }
        if ((uint64_t)(len - pos) < size) break; /* the tail: completed by the next batch */
        if ((otype == 1 || otype == 86) && hver == 1 && hsize == 32 && size >= 48) {
            const unsigned char *o = d + pos;
            Py_ssize_t k = nfast++;
            idx[k] = nobj;
            hflags[k] = le(o + 16, 4);
            stamp[k] = (int64_t)le(o + 24, 8);
            uint64_t ch = le(o + 32, 2);
            if (ch > 255) { bail = 1; break; }
            chan[k] = (uint8_t)ch;
            mflags[k] = o[34];
            dlc[k] = o[35];
            cid[k] = (uint32_t)le(o + 36, 4);
            int n = (o[34] & 0x80) ? 0 : (o[35] < 8 ? o[35] : 8); /* remote frames: none */
            uint64_t v = 0;
            for (int b = 0; b < n; b++) v = (v << 8) | o[40 + b];
            payload[k] = v;
        } else {
            other[2 * nother] = nobj;
            other[2 * nother++ + 1] = pos;
        }
        nobj++;
        pos += (Py_ssize_t)size;
    }
    Py_END_ALLOW_THREADS;
    if (bail) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    for (int i = 0; i < 9; i++) {
        Py_ssize_t rows = i == 7 ? nother : nfast;
        if (PyByteArray_Resize(out[i], rows * width[i]) < 0) goto done;
    }
    result = Py_BuildValue("{s:n,s:n,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "objects", nobj,
                           "tail", pos, "index", out[0], "stamp", out[1], "hflags", out[2],
                           "mflags", out[3], "dlc", out[4], "can_id", out[5], "payload", out[6],
                           "other", out[7], "channel", out[8]);
done:
    for (int i = 0; i < 9; i++) Py_XDECREF(out[i]);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_candump", scan_candump, METH_VARARGS,
     "scan_candump(chunk) -> dict of columns (bytearrays) for the canonical candump -L lines, "
     "'slow': int64 (line index, byte offset) pairs of the other lines, 'names': channel names, 'lines': line count"},
    {"scan_asc", scan_asc, METH_VARARGS,
     "scan_asc(chunk) -> the same for ASC classic data frames and bare ErrorFrame lines; "
     "ts is the line's own stamp in microseconds (the time base is added in Python)"},
    {"scan_trc", scan_trc, METH_VARARGS,
     "scan_trc(chunk, columns) -> the same for TRC 2.x DT lines laid out by columns "
     "(the $COLUMNS letters joined, ending in 'D'); ts is the offset in microseconds"},
    {"walk_blf", walk_blf, METH_VARARGS,
     "walk_blf(data) -> dict of CAN_MESSAGE(2) columns, 'other' (object index, offset) pairs, "
     "'objects' walked and 'tail' offset; None where the reference must read the data"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_textscan",
    .m_doc = "Line scanners for candump and ASC text (see the source).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__textscan(void) { return PyModule_Create(&module); }
