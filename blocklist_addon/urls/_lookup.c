/* The matcher's hot path in C: the host-index probes of a host's DNS suffixes and the
 * expression digests of a URL on a listed host (exact expressions, then the directory
 * walk by extending one SHA-256, stopped at the host's depth), looked up in a loaded
 * snapshot's sections. The pure-Python matcher (matcher.py, snapshot.py) is the
 * reference: this does the same lookups in the same order and gives the same answers
 * (tests/test_matcher_compiled.py holds it to that), without a Python object per
 * expression. SHA-256 with the x86 SHA extensions when the CPU has them, else portable C.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_SHANI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#define DIGEST_SIZE 8
#define HOST_KEY_SIZE 4
#define MAX_DNS_NAME 253
#define UNKNOWN_DEPTH 255

/* -- SHA-256 ------------------------------------------------------------------------- */

typedef struct {
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t len; /* bytes hashed so far */
} sha_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress_portable(uint32_t state[8], const uint8_t *block, size_t blocks)
{
    while (blocks--) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
                   (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) +
                          K256[i] + w[i];
            uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
        block += 64;
    }
}

#ifdef HAVE_SHANI
/* The SHA extensions' four-rounds-at-a-time form (Intel's reference layout: the state as
 * ABEF and CDGH, the message schedule by sha256msg1/msg2). */
__attribute__((target("sha,sse4.1,ssse3"))) static void
compress_shani(uint32_t state[8], const uint8_t *block, size_t blocks)
{
    const __m128i MASK = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i state1 = _mm_loadu_si128((const __m128i *)&state[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                /* CDAB */
    state1 = _mm_shuffle_epi32(state1, 0x1B);          /* EFGH */
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);  /* ABEF */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);       /* CDGH */

    while (blocks--) {
        __m128i abef = state0, cdgh = state1, msg;
        __m128i m[4];
        for (int i = 0; i < 16; i++) {
            __m128i w;
            if (i < 4) {
                w = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * i)), MASK);
            } else {
                /* W[t] = sigma1(W[t-2]) + W[t-7] + sigma0(W[t-15]) + W[t-16] */
                w = _mm_sha256msg1_epu32(m[i & 3], m[(i + 1) & 3]);
                w = _mm_add_epi32(w, _mm_alignr_epi8(m[(i + 3) & 3], m[(i + 2) & 3], 4));
                w = _mm_sha256msg2_epu32(w, m[(i + 3) & 3]);
            }
            m[i & 3] = w;
            msg = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&K256[4 * i]));
            state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
            msg = _mm_shuffle_epi32(msg, 0x0E);
            state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
        }
        state0 = _mm_add_epi32(state0, abef);
        state1 = _mm_add_epi32(state1, cdgh);
        block += 64;
    }

    tmp = _mm_shuffle_epi32(state0, 0x1B);           /* FEBA */
    state1 = _mm_shuffle_epi32(state1, 0xB1);        /* DCHG */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0);     /* DCBA */
    state1 = _mm_alignr_epi8(state1, tmp, 8);        /* ABEF */
    _mm_storeu_si128((__m128i *)&state[0], state0);
    _mm_storeu_si128((__m128i *)&state[4], state1);
}

static int cpu_has_shani(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & (1u << 9)) || !(c & (1u << 19))) /* SSSE3, SSE4.1 */
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1;
}
#endif

typedef void (*compress_fn)(uint32_t[8], const uint8_t *, size_t);
static compress_fn compress = compress_portable;

static inline void sha_init(sha_ctx *ctx)
{
    memcpy(ctx->h, H0, sizeof H0);
    ctx->len = 0;
}

static void sha_update(sha_ctx *ctx, const uint8_t *data, size_t n)
{
    size_t used = ctx->len & 63;
    ctx->len += n;
    if (used) {
        size_t take = 64 - used < n ? 64 - used : n;
        memcpy(ctx->buf + used, data, take);
        data += take;
        n -= take;
        if (used + take < 64)
            return;
        compress(ctx->h, ctx->buf, 1);
    }
    if (n >= 64) {
        compress(ctx->h, data, n / 64);
        data += n & ~(size_t)63;
        n &= 63;
    }
    if (n)
        memcpy(ctx->buf, data, n);
}

/* The first ``size`` bytes of the digest of what ``ctx`` holds; ``ctx`` itself unchanged. */
static void sha_peek(const sha_ctx *ctx, uint8_t *out, size_t size)
{
    uint32_t h[8];
    uint8_t block[128];
    size_t used = ctx->len & 63;
    size_t blocks = used < 56 ? 1 : 2;
    memcpy(h, ctx->h, sizeof h);
    memcpy(block, ctx->buf, used);
    memset(block + used, 0, 64 * blocks - used);
    block[used] = 0x80;
    uint64_t bits = ctx->len * 8;
    for (int i = 0; i < 8; i++)
        block[64 * blocks - 1 - i] = (uint8_t)(bits >> (8 * i));
    compress(h, block, blocks);
    for (size_t i = 0; i < size; i++)
        out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

/* -- the snapshot's sections --------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *data;      /* the snapshot's bytes */
    const uint8_t *base;
    Py_ssize_t size;
    Py_buffer digest_index; /* u32 offsets into data, 2**b + 1 of them */
    int digest_shift;
    Py_buffer host_index;
    int host_shift;
    PyObject *depths;    /* bytes, one a host key; empty: every depth unknown */
    int floor;           /* the fewest directories walked on a listed host */
    /* the lookups made, for the tests' bounds: probes and their bytes, digests */
    unsigned long long probes, probe_bytes, digests;
} Lookup;

static inline uint32_t index_at(const Py_buffer *index, Py_ssize_t i)
{
    uint32_t value; /* (memcpy: any caller's buffer, aligned or not) */
    memcpy(&value, (const char *)index->buf + 4 * i, sizeof value);
    return value;
}

/* Whether the host key of ``name`` is in its bucket at any offset: ``bytes.find``, as
 * Snapshot.listed_hosts asks it. */
static int probe(Lookup *self, const uint8_t *name, size_t n)
{
    sha_ctx ctx;
    uint8_t key[HOST_KEY_SIZE];
    sha_init(&ctx);
    sha_update(&ctx, name, n);
    sha_peek(&ctx, key, HOST_KEY_SIZE);
    self->probes++;
    self->probe_bytes += n;
    Py_ssize_t bucket = (key[0] << 8 | key[1]) >> self->host_shift;
    Py_ssize_t start = index_at(&self->host_index, bucket);
    Py_ssize_t end = index_at(&self->host_index, bucket + 1);
    for (Py_ssize_t p = start; p + HOST_KEY_SIZE <= end; p++)
        if (memcmp(self->base + p, key, HOST_KEY_SIZE) == 0)
            return 1;
    return 0;
}

/* Snapshot.host_depth: the depth byte of the first aligned occurrence of the key. */
static int host_depth(Lookup *self, const uint8_t *name, size_t n)
{
    Py_ssize_t count = PyBytes_GET_SIZE(self->depths);
    if (count == 0)
        return UNKNOWN_DEPTH;
    sha_ctx ctx;
    uint8_t key[HOST_KEY_SIZE];
    sha_init(&ctx);
    sha_update(&ctx, name, n);
    sha_peek(&ctx, key, HOST_KEY_SIZE);
    Py_ssize_t first = index_at(&self->host_index, 0);
    Py_ssize_t bucket = (key[0] << 8 | key[1]) >> self->host_shift;
    Py_ssize_t start = index_at(&self->host_index, bucket);
    Py_ssize_t end = index_at(&self->host_index, bucket + 1);
    for (Py_ssize_t p = start; p + HOST_KEY_SIZE <= end; p++) {
        if ((p - first) % HOST_KEY_SIZE == 0 && memcmp(self->base + p, key, HOST_KEY_SIZE) == 0) {
            Py_ssize_t i = (p - first) / HOST_KEY_SIZE;
            return i < count ? (uint8_t)PyBytes_AS_STRING(self->depths)[i] : UNKNOWN_DEPTH;
        }
    }
    return UNKNOWN_DEPTH;
}

/* Snapshot.find_first for one digest: the entry number, or -1. */
static Py_ssize_t find(Lookup *self, const uint8_t *digest)
{
    self->digests++;
    Py_ssize_t bucket = (digest[0] << 8 | digest[1]) >> self->digest_shift;
    Py_ssize_t start = index_at(&self->digest_index, bucket);
    Py_ssize_t end = index_at(&self->digest_index, bucket + 1);
    Py_ssize_t p = start + (DIGEST_SIZE - start % DIGEST_SIZE) % DIGEST_SIZE;
    for (; p + DIGEST_SIZE <= end; p += DIGEST_SIZE)
        if (memcmp(self->base + p, digest, DIGEST_SIZE) == 0)
            return (p - 48) / DIGEST_SIZE;
    return -1;
}

static void Lookup_dealloc(Lookup *self)
{
    if (self->digest_index.obj)
        PyBuffer_Release(&self->digest_index);
    if (self->host_index.obj)
        PyBuffer_Release(&self->host_index);
    Py_XDECREF(self->data);
    Py_XDECREF(self->depths);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_index(Py_buffer *index, Py_ssize_t size, const char *what)
{
    Py_ssize_t count = index->len / 4;
    if (index->itemsize != 4 || count < 2) {
        PyErr_Format(PyExc_ValueError, "%s: not a u32 bucket table", what);
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++)
        if (index_at(index, i) > (uint64_t)size ||
            (i && index_at(index, i) < index_at(index, i - 1))) {
            PyErr_Format(PyExc_ValueError, "%s: out of order or out of range", what);
            return -1;
        }
    return 0;
}

static int Lookup_init(Lookup *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data",        "digest_index", "digest_shift", "host_index",
                             "host_shift",  "depths",       "floor",        NULL};
    PyObject *data, *depths;
    Py_buffer digest_index, host_index;
    int digest_shift, host_shift, floor;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!y*iy*iO!i", kwlist, &PyBytes_Type, &data,
                                     &digest_index, &digest_shift, &host_index, &host_shift,
                                     &PyBytes_Type, &depths, &floor))
        return -1;
    /* __init__ called again: the tables it held are let go */
    if (self->digest_index.obj)
        PyBuffer_Release(&self->digest_index);
    if (self->host_index.obj)
        PyBuffer_Release(&self->host_index);
    self->digest_index = digest_index;
    self->host_index = host_index;
    self->digest_shift = digest_shift;
    self->host_shift = host_shift;
    self->floor = floor;
    Py_INCREF(data);
    Py_XSETREF(self->data, data);
    Py_INCREF(depths);
    Py_XSETREF(self->depths, depths);
    self->base = (const uint8_t *)PyBytes_AS_STRING(data);
    self->size = PyBytes_GET_SIZE(data);
    /* y* gives bytes-like buffers as bytes (itemsize 1): read them as u32 tables */
    self->digest_index.itemsize = self->host_index.itemsize = 4;
    if (self->digest_index.len % 4 || self->host_index.len % 4) {
        PyErr_SetString(PyExc_ValueError, "bucket tables must be u32");
        return -1;
    }
    if (check_index(&self->digest_index, self->size, "digest index") < 0 ||
        check_index(&self->host_index, self->size, "host index") < 0)
        return -1;
    Py_ssize_t digest_buckets = self->digest_index.len / 4 - 1;
    Py_ssize_t host_buckets = self->host_index.len / 4 - 1;
    if (self->digest_shift < 0 || self->digest_shift > 16 || self->host_shift < 0 ||
        self->host_shift > 16 || (65535 >> self->digest_shift) >= digest_buckets ||
        (65535 >> self->host_shift) >= host_buckets) {
        PyErr_SetString(PyExc_ValueError, "bucket shift does not match its table");
        return -1;
    }
    return 0;
}

/* The DNS suffixes of the ASCII host ``s`` (canonical.dns_suffixes: the host unless longer
 * than a DNS name, then each suffix of at least two labels up to MAX_DNS_NAME, longest
 * first) whose key the host index holds, in order, as str: substrings of ``host`` when it
 * is given (it holds ``s``), else new ones. */
static PyObject *listed_suffixes(Lookup *self, const uint8_t *s, Py_ssize_t n, int is_ip,
                                 PyObject *host)
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t starts[MAX_DNS_NAME + 2];
    int count = 0;
    if (n <= MAX_DNS_NAME)
        starts[count++] = 0;
    if (!is_ip) {
        /* the dot before the last two labels, then each dot to its left within reach */
        Py_ssize_t last = -1, cut = -1;
        for (Py_ssize_t i = n - 1; i >= 0; i--)
            if (s[i] == '.') {
                last = i;
                break;
            }
        for (Py_ssize_t i = last - 1; i >= 0; i--)
            if (s[i] == '.') {
                cut = i;
                break;
            }
        int first_suffix = count;
        while (cut >= 0 && n - cut - 1 <= MAX_DNS_NAME) {
            starts[count++] = cut + 1;
            Py_ssize_t i = cut - 1;
            cut = -1;
            for (; i >= 0; i--)
                if (s[i] == '.') {
                    cut = i;
                    break;
                }
        }
        /* longest first */
        for (int a = first_suffix, b = count - 1; a < b; a++, b--) {
            Py_ssize_t t = starts[a];
            starts[a] = starts[b];
            starts[b] = t;
        }
    }
    for (int k = 0; k < count; k++) {
        if (probe(self, s + starts[k], (size_t)(n - starts[k]))) {
            PyObject *name;
            if (host == NULL)
                name = PyUnicode_DecodeASCII((const char *)s + starts[k], n - starts[k], NULL);
            else
                name = starts[k] ? PyUnicode_Substring(host, starts[k], n) : Py_NewRef(host);
            if (name == NULL || PyList_Append(out, name) < 0) {
                Py_XDECREF(name);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(name);
        }
    }
    return out;
}

/* listed_hosts(host, is_ip): ``listed_suffixes`` of a canonical host; None for a host that
 * is not ASCII (canonical hosts are): the caller asks the reference. */
static PyObject *Lookup_listed_hosts(Lookup *self, PyObject *args)
{
    PyObject *host;
    int is_ip;
    if (!PyArg_ParseTuple(args, "Up", &host, &is_ip))
        return NULL;
    if (!PyUnicode_IS_ASCII(host))
        Py_RETURN_NONE;
    return listed_suffixes(self, PyUnicode_1BYTE_DATA(host), PyUnicode_GET_LENGTH(host), is_ip,
                           host);
}

/* A character of matcher._SIMPLE_AUTHORITY's host: [A-Za-z0-9._~!$&'()*+,;=-]. */
static inline int authority_char(Py_UCS4 c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && c < 128 && strchr("._~!$&'()*+,;=-", (int)c) != NULL);
}

static inline int ci_is(Py_UCS4 c, char lower)
{
    return c == (Py_UCS4)lower || c == (Py_UCS4)(lower - 32);
}

/* simple_hosts(url): what Matcher._match_url's fast reading finds, when it finds a plain
 * host: ``_SIMPLE_AUTHORITY.match(url)``, its host lower-cased, and when that is a plain
 * host (canonical._PLAIN_HOST: it is its own canonical form) and no Translate proxy host,
 * ``listed_suffixes`` of it; None for anything else (the caller reads it in Python). The
 * regular expression's backtracking comes down to four readings: with and without the
 * scheme, with and without "//", each taken whole where present, first that fits. */
static PyObject *Lookup_simple_hosts(Lookup *self, PyObject *url)
{
    if (!PyUnicode_Check(url)) {
        PyErr_SetString(PyExc_TypeError, "url must be str");
        return NULL;
    }
    int kind = PyUnicode_KIND(url);
    const void *data = PyUnicode_DATA(url);
    Py_ssize_t len = PyUnicode_GET_LENGTH(url);
#define AT(i) ((i) < len ? PyUnicode_READ(kind, data, (i)) : 0)
    /* (?!(?i:wss?|ftp):) */
    if ((ci_is(AT(0), 'w') && ci_is(AT(1), 's') &&
         (AT(2) == ':' || (ci_is(AT(2), 's') && AT(3) == ':'))) ||
        (ci_is(AT(0), 'f') && ci_is(AT(1), 't') && ci_is(AT(2), 'p') && AT(3) == ':'))
        Py_RETURN_NONE;
    Py_ssize_t scheme = 0; /* (?:[hH][tT][tT][pP][sS]?:)? */
    if (ci_is(AT(0), 'h') && ci_is(AT(1), 't') && ci_is(AT(2), 't') && ci_is(AT(3), 'p')) {
        if (AT(4) == ':')
            scheme = 5;
        else if (ci_is(AT(4), 's') && AT(5) == ':')
            scheme = 6;
    }
    Py_ssize_t host = -1, end = -1;
    for (int reading = 0; reading < 4 && host < 0; reading++) {
        Py_ssize_t at = reading < 2 ? scheme : 0;
        if (reading < 2 && scheme == 0)
            continue;
        if (reading % 2 == 0) { /* (?://)? taken */
            if (!(AT(at) == '/' && AT(at + 1) == '/'))
                continue;
            at += 2;
        }
        Py_ssize_t stop = at;
        while (stop < len && authority_char(PyUnicode_READ(kind, data, stop)))
            stop++;
        if (stop == at)
            continue;
        Py_ssize_t after = stop;
        if (AT(after) == ':' && AT(after + 1) >= '0' && AT(after + 1) <= '9') {
            after++;
            while (AT(after) >= '0' && AT(after) <= '9')
                after++;
        }
        /* (?=[/?#]|$): "$" also before a final newline */
        Py_UCS4 next = AT(after);
        if (after == len || next == '/' || next == '?' || next == '#' ||
            (after == len - 1 && next == '\n')) {
            host = at;
            end = stop;
        }
        else if (after != stop) {
            /* the port read did not fit: without it, ":" follows the host, which does not */
            continue;
        }
    }
#undef AT
    if (host < 0)
        Py_RETURN_NONE;
    /* lower-cased; a plain host: labels of [a-z0-9_~!$&'()*+,;=-], single dots, the last
     * label neither all digits nor starting "0x" */
    Py_ssize_t n = end - host;
    uint8_t small[512];
    uint8_t *s = n <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)n);
    if (s == NULL)
        return PyErr_NoMemory();
    int plain = 1;
    Py_ssize_t label = 0; /* where the current label starts */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, host + i);
        if (c >= 'A' && c <= 'Z')
            c += 32;
        s[i] = (uint8_t)c;
        if (c == '.') {
            if (i == label) {
                plain = 0;
                break;
            }
            label = i + 1;
        }
    }
    PyObject *out = NULL;
    if (plain && label < n) {
        int digits = 1;
        for (Py_ssize_t i = label; i < n; i++)
            if (s[i] < '0' || s[i] > '9')
                digits = 0;
        if (digits || (n - label >= 2 && s[label] == '0' && s[label + 1] == 'x'))
            plain = 0;
    }
    else
        plain = 0;
    static const char translate[] = ".translate.goog";
    Py_ssize_t tn = (Py_ssize_t)sizeof translate - 1;
    if (plain && !(n >= tn && memcmp(s + n - tn, translate, (size_t)tn) == 0))
        out = listed_suffixes(self, s, n, 0, NULL);
    else
        out = Py_NewRef(Py_None);
    if (s != small)
        PyMem_Free(s);
    return out;
}

/* Digests one expression ``host + text`` and looks it up: 1 found (entry, digest set), 0
 * not, -1 error. */
static int find_expression(Lookup *self, const uint8_t *h, Py_ssize_t hn, PyObject *text,
                           Py_ssize_t *entry, uint8_t *digest)
{
    Py_ssize_t tn;
    const char *t = PyUnicode_AsUTF8AndSize(text, &tn);
    if (t == NULL)
        return -1;
    sha_ctx ctx;
    sha_init(&ctx);
    sha_update(&ctx, h, (size_t)hn);
    sha_update(&ctx, (const uint8_t *)t, (size_t)tn);
    sha_peek(&ctx, digest, DIGEST_SIZE);
    *entry = find(self, digest);
    return *entry >= 0;
}

static PyObject *found(Py_ssize_t entry, const uint8_t *digest)
{
    return Py_BuildValue("(ny#)", entry, (const char *)digest, (Py_ssize_t)DIGEST_SIZE);
}

/* Matcher._find_on_hosts: for each listed host in turn, the expressions ``before`` (host +
 * each), the directories of ``path`` (host + "/", host + "/a/" ...) down to the host's
 * depth (``floor`` at least; every one when unknown), then ``after``; the first listed
 * one's (entry number, digest), or None. */
static PyObject *Lookup_find_on_hosts(Lookup *self, PyObject *args)
{
    PyObject *hosts, *before, *after, *path;
    if (!PyArg_ParseTuple(args, "O!O!UO!", &PyList_Type, &hosts, &PyList_Type, &before, &path,
                          &PyList_Type, &after))
        return NULL;
    Py_ssize_t pn;
    const char *p = PyUnicode_AsUTF8AndSize(path, &pn);
    if (p == NULL)
        return NULL;
    if (pn == 0 || p[0] != '/') {
        PyErr_SetString(PyExc_ValueError, "a canonical path starts with /");
        return NULL;
    }
    /* the last "/" of the path: directories end at each "/" up to it */
    Py_ssize_t last = pn - 1;
    while (p[last] != '/')
        last--;
    uint8_t digest[DIGEST_SIZE];
    Py_ssize_t entry;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(hosts); k++) {
        PyObject *host = PyList_GET_ITEM(hosts, k);
        if (!PyUnicode_Check(host)) {
            PyErr_SetString(PyExc_TypeError, "hosts must be str");
            return NULL;
        }
        Py_ssize_t hn;
        const uint8_t *h = (const uint8_t *)PyUnicode_AsUTF8AndSize(host, &hn);
        if (h == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(before); i++) {
            int r = find_expression(self, h, hn, PyList_GET_ITEM(before, i), &entry, digest);
            if (r < 0)
                return NULL;
            if (r)
                return found(entry, digest);
        }
        int depth = host_depth(self, h, (size_t)hn);
        Py_ssize_t walk = depth == UNKNOWN_DEPTH ? PY_SSIZE_T_MAX
                                                 : (depth > self->floor ? depth : self->floor);
        sha_ctx ctx;
        sha_init(&ctx);
        sha_update(&ctx, h, (size_t)hn);
        Py_ssize_t at = 0; /* hashed: path[:at] */
        Py_ssize_t walked = 0;
        for (Py_ssize_t i = 0; i <= last && walked < walk; i++) {
            if (p[i] != '/')
                continue;
            sha_update(&ctx, (const uint8_t *)p + at, (size_t)(i + 1 - at));
            at = i + 1;
            sha_peek(&ctx, digest, DIGEST_SIZE);
            walked++;
            entry = find(self, digest);
            if (entry >= 0)
                return found(entry, digest);
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(after); i++) {
            int r = find_expression(self, h, hn, PyList_GET_ITEM(after, i), &entry, digest);
            if (r < 0)
                return NULL;
            if (r)
                return found(entry, digest);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *Lookup_counts(Lookup *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(KKK)", self->probes, self->probe_bytes, self->digests);
}

static PyMethodDef Lookup_methods[] = {
    {"listed_hosts", (PyCFunction)Lookup_listed_hosts, METH_VARARGS,
     "listed_hosts(host, is_ip) -> the listed DNS suffixes of host, or None (not ASCII)"},
    {"simple_hosts", (PyCFunction)Lookup_simple_hosts, METH_O,
     "simple_hosts(url) -> the listed suffixes of a plain host read fast, or None"},
    {"find_on_hosts", (PyCFunction)Lookup_find_on_hosts, METH_VARARGS,
     "find_on_hosts(hosts, before, path, after) -> (entry, digest) or None"},
    {"counts", (PyCFunction)Lookup_counts, METH_NOARGS,
     "counts() -> (host probes, their bytes, expression digests) made so far"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LookupType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "blocklist_addon.urls._lookup.Lookup",
    .tp_basicsize = sizeof(Lookup),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A loaded snapshot's lookups (built by Snapshot.compiled_lookup).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lookup_init,
    .tp_dealloc = (destructor)Lookup_dealloc,
    .tp_methods = Lookup_methods,
};

/* sha256(data, accelerated=True): the digest, by the SHA extensions when the CPU has them
 * and ``accelerated``, else portable C; fed in pieces of ``step`` bytes (the tests hold
 * both, and every split of the input, to hashlib). */
static PyObject *module_sha256(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", "accelerated", "step", NULL};
    (void)module;
    Py_buffer data;
    int accelerated = 1;
    Py_ssize_t step = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|pn", kwlist, &data, &accelerated, &step))
        return NULL;
    /* (the GIL is held throughout: no lookup runs while the portable one stands in) */
    compress_fn saved = compress;
    if (!accelerated)
        compress = compress_portable;
    sha_ctx ctx;
    sha_init(&ctx);
    const uint8_t *s = data.buf;
    Py_ssize_t left = data.len;
    if (step <= 0)
        step = left ? left : 1;
    while (left > 0) {
        Py_ssize_t take = left < step ? left : step;
        sha_update(&ctx, s, (size_t)take);
        s += take;
        left -= take;
    }
    uint8_t out[32];
    sha_peek(&ctx, out, 32);
    compress = saved;
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyMethodDef module_methods[] = {
    {"sha256", (PyCFunction)(void (*)(void))module_sha256, METH_VARARGS | METH_KEYWORDS,
     "sha256(data, accelerated=True, step=0) -> the 32-byte digest"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lookup", "The matcher's compiled hot path.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__lookup(void)
{
    int accelerated = 0;
#ifdef HAVE_SHANI
    if (cpu_has_shani()) {
        compress = compress_shani;
        accelerated = 1;
    }
#endif
    if (PyType_Ready(&LookupType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Lookup", (PyObject *)&LookupType) < 0 ||
        PyModule_AddIntConstant(m, "ACCELERATED", accelerated) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
