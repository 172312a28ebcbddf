/* The loops of the PDQ multi-index (blocklist_addon/hashes/pdqindex.py) that numpy cannot
 * do without materializing every candidate: finding hot buckets, building a table (a
 * counting sort of positions by one chunk of their hash, written compactly) and looking
 * queries up (probe every bucket within a table's radius, verify each candidate by its
 * full Hamming distance).
 *
 * Everything is passed as buffers (numpy arrays or slices of a mapped index file), so the
 * index can live in a file every process maps. No state; the GIL is released while the
 * loops run, so several threads can look up at once.
 *
 * Hashes are 32 bytes, read as four big-endian 64-bit words; a chunk is `bits` bits from
 * bit `offset` (0 = the hash's first bit), so the chunk at offset 0 sorts like the hash
 * bytes. A table is compact (see pdqlayout.py): a unary directory (each bucket's count of
 * entries as that many one bits, then a zero; LSB first in u64 words) with the entry index
 * where every 64th bucket starts (u32 samples), and the entries, each the group
 * (position >> group_shift) of a hash, bit-packed `width` bits each. A table without
 * entries is implicit: the hashes are sorted by its chunk, so its buckets are runs of
 * positions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Candidates whose hash is requested before it is compared. */
#ifndef AHEAD
#define AHEAD 12
#endif

#define NO_ENTRIES UINT64_MAX
#define META 6 /* u64 a table: chunk offset, words at, words, samples at, entries at, entries */

static inline uint64_t word_of(const uint8_t *hash, unsigned word) {
    uint64_t w;
    memcpy(&w, hash + 8 * word, 8);
    return __builtin_bswap64(w);
}

static inline uint32_t chunk_at(const uint8_t *hash, unsigned offset, unsigned bits) {
    unsigned w = offset >> 6, off = offset & 63;
    uint64_t v = word_of(hash, w);
    if (off + bits <= 64)
        v >>= 64 - off - bits;
    else
        v = (v << (off + bits - 64)) | (word_of(hash, w + 1) >> (128 - off - bits));
    return (uint32_t)(v & ((1ULL << bits) - 1));
}

/* The loops that count bits are compiled twice, with the popcnt instruction and without
 * (a call per count), and the CPU picks at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define POPCNT_CLONES __attribute__((target_clones("popcnt", "default")))
#else
#define POPCNT_CLONES
#endif

static inline __attribute__((always_inline)) int distance(const uint8_t *a, const uint8_t *b) {
    uint64_t x[4], y[4];
    memcpy(x, a, 32);
    memcpy(y, b, 32);
    return __builtin_popcountll(x[0] ^ y[0]) + __builtin_popcountll(x[1] ^ y[1]) +
           __builtin_popcountll(x[2] ^ y[2]) + __builtin_popcountll(x[3] ^ y[3]);
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static int chunk_ok(long offset, long bits) {
    return bits >= 1 && bits <= 32 && offset >= 0 && offset + bits <= 256;
}

/* hot(hashes, offsets, bits, limit, mask_out) -> count
 * offsets: i32 chunk offsets of the tables; mask_out: a byte a hash, set to 1 for every hash
 * in a bucket of more than `limit` hashes in any table. */
static PyObject *hot(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer hashes, offsets, mask;
    int bits;
    unsigned long long limit;
    if (!PyArg_ParseTuple(args, "y*y*iKw*", &hashes, &offsets, &bits, &limit, &mask))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = hashes.len / 32, tables = offsets.len / 4;
    const int32_t *offs = offsets.buf;
    int bad = hashes.len % 32 || offsets.len % 4 || mask.len != n || bits > 30;
    for (Py_ssize_t t = 0; t < tables && !bad; t++) bad = !chunk_ok(offs[t], bits);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "hot: sizes do not agree");
        goto out;
    }
    size_t buckets = (size_t)1 << bits;
    uint32_t *count = malloc(4 * buckets);
    if (!count) {
        PyErr_NoMemory();
        goto out;
    }
    const uint8_t *h = hashes.buf;
    uint8_t *m = mask.buf;
    Py_ssize_t total = 0;
    Py_BEGIN_ALLOW_THREADS
    memset(m, 0, n);
    for (Py_ssize_t t = 0; t < tables; t++) {
        memset(count, 0, 4 * buckets);
        for (Py_ssize_t p = 0; p < n; p++) count[chunk_at(h + 32 * p, offs[t], bits)]++;
        for (Py_ssize_t p = 0; p < n; p++)
            if (count[chunk_at(h + 32 * p, offs[t], bits)] > limit) m[p] = 1;
    }
    for (Py_ssize_t p = 0; p < n; p++) total += m[p];
    Py_END_ALLOW_THREADS
    free(count);
    result = PyLong_FromSsize_t(total);
out:
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&mask);
    return result;
}

/* table(hashes, positions, subset, offset, bits, group_shift, width, stored)
 *   -> (words, samples, entries, largest)
 * positions: the u32 positions to index, increasing, when subset (else all of them). Buckets by the
 * chunk at `offset`; stored: each bucket's distinct groups (position >> group_shift) in
 * increasing order, bit-packed `width` bits each (entries), else no entries (an implicit
 * table: the positions themselves, which must then be all of them, sorted by the chunk).
 * words: the unary directory, (entries + 2**bits + 63) / 64 u64; samples: the entry index
 * where bucket 64 j starts, for j < ceil(2**bits / 64); entries: (entries * width + 7) / 8
 * + 8 bytes (the tail lets a lookup read any entry as one unaligned u64); largest: the
 * most positions a bucket holds. */
static PyObject *table(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer hashes, positions;
    int subset, offset, bits, group_shift, width, stored;
    if (!PyArg_ParseTuple(args, "y*y*piiiip", &hashes, &positions, &subset, &offset, &bits,
                          &group_shift, &width, &stored))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = hashes.len / 32;
    Py_ssize_t count = subset ? positions.len / 4 : n;
    if (hashes.len % 32 || positions.len % 4 || !chunk_ok(offset, bits) || bits > 30 ||
        group_shift < 0 || group_shift > 8 || width < 1 || width > 32 ||
        (stored && n > 0 && ((uint64_t)(n - 1) >> group_shift) >> (width - 1) > 1)) {
        PyErr_SetString(PyExc_ValueError, "table: sizes do not agree");
        goto out;
    }
    size_t buckets = (size_t)1 << bits, nsamples = (buckets + 63) / 64;
    const uint8_t *h = hashes.buf;
    const uint32_t *pos = positions.buf;
    /* A stable LSD radix sort of (chunk, position) by the chunk, in two digits: three
     * passes that stream through memory (2**bits buckets counted at random would miss
     * the cache at every hash: twice as slow at 10,000,000). */
    unsigned lo = (unsigned)bits / 2;
    size_t nlo = (size_t)1 << lo, nhi = (size_t)1 << (bits - lo), room = count ? count : 1;
    uint32_t *keys = malloc(4 * room), *keys2 = malloc(4 * room), *pos2 = malloc(4 * room);
    uint32_t *clo = calloc(nlo + 1, 4), *chi = calloc(nhi + 1, 4);
    uint32_t *sorted = malloc(4 * room);
    uint32_t *kept = calloc(buckets, 4);
    uint8_t *packed = NULL;
    uint64_t *words = NULL;
    uint32_t *samples = malloc(4 * nsamples);
    if (!keys || !keys2 || !pos2 || !clo || !chi || !sorted || !kept || !samples) {
        PyErr_NoMemory();
        goto done;
    }
    int bad = 0;
    size_t entries = 0;
    uint32_t largest = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t p = subset ? pos[i] : i;
        if (p >= n || (i && subset && pos[i] <= pos[i - 1])) { bad = 1; break; }
        uint32_t k = chunk_at(h + 32 * p, offset, bits);
        keys[i] = k;
        clo[(k & (nlo - 1)) + 1]++;
        chi[(k >> lo) + 1]++;
    }
    if (!bad) {
        for (size_t d = 0; d < nlo; d++) clo[d + 1] += clo[d];
        for (size_t d = 0; d < nhi; d++) chi[d + 1] += chi[d];
        for (Py_ssize_t i = 0; i < count; i++) {
            uint32_t at = clo[keys[i] & (nlo - 1)]++;
            keys2[at] = keys[i];
            pos2[at] = subset ? pos[i] : (uint32_t)i;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            uint32_t at = chi[keys2[i] >> lo]++;
            keys[at] = keys2[i];
            sorted[at] = pos2[i];
        }
        /* Each bucket's distinct groups, in order, and its size. */
        int64_t last_value = -1, last_group = -1;
        uint32_t run = 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            int64_t v = keys[i], g = stored ? (int64_t)(sorted[i] >> group_shift) : i;
            run = v == last_value ? run + 1 : 1;
            if (run > largest) largest = run;
            if (v != last_value || g != last_group) {
                sorted[entries++] = (uint32_t)g;
                kept[v]++;
            }
            last_value = v;
            last_group = g;
        }
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "table: positions out of range or out of order");
        goto done;
    }
    size_t nwords = (entries + buckets + 63) / 64;
    size_t nbytes = stored ? (entries * (size_t)width + 7) / 8 + 8 : 0;
    words = calloc(nwords ? nwords : 1, 8);
    packed = calloc(nbytes ? nbytes : 1, 1);
    if (!words || !packed) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    size_t bit = 0, e = 0;
    for (size_t v = 0; v < buckets; v++) {
        if (!(v & 63)) samples[v >> 6] = (uint32_t)e;
        for (uint32_t left = kept[v]; left;) { /* the bucket's count in ones, a word at a time */
            unsigned take = 64 - (unsigned)(bit & 63);
            if (take > left) take = left;
            words[bit >> 6] |= (take == 64 ? ~0ULL : ((1ULL << take) - 1)) << (bit & 63);
            bit += take;
            left -= take;
        }
        bit++; /* the bucket's closing zero */
        e += kept[v];
    }
    if (stored) {
        for (size_t i = 0; i < entries; i++) {
            size_t at = i * (size_t)width;
            uint64_t w = load64(packed + (at >> 3)) | ((uint64_t)sorted[i] << (at & 7));
            memcpy(packed + (at >> 3), &w, 8);
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(y#y#y#I)", (const char *)words, (Py_ssize_t)(8 * nwords),
                           (const char *)samples, (Py_ssize_t)(4 * nsamples),
                           (const char *)packed, (Py_ssize_t)nbytes, largest);
done:
    free(keys);
    free(keys2);
    free(pos2);
    free(clo);
    free(chi);
    free(sorted);
    free(kept);
    free(samples);
    free(words);
    free(packed);
out:
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&positions);
    return result;
}

typedef struct {
    uint64_t chunk, words_at, nwords, samples_at, entries_at, entries;
} Table;

/* The position of the k-th (from 1) set bit of x, which has at least k: halves, quarters,
 * bytes, then bit by bit (no pdep: microcoded on older AMD cores). */
static inline __attribute__((always_inline)) unsigned select64(uint64_t x, unsigned k) {
    unsigned at = 0, c = (unsigned)__builtin_popcountll(x & 0xffffffffULL);
    if (k > c) { k -= c; x >>= 32; at += 32; }
    c = (unsigned)__builtin_popcountll(x & 0xffffULL);
    if (k > c) { k -= c; x >>= 16; at += 16; }
    c = (unsigned)__builtin_popcountll(x & 0xffULL);
    if (k > c) { k -= c; x >>= 8; at += 8; }
    for (; k > 1; k--) x &= x - 1;
    return at + (unsigned)__builtin_ctzll(x);
}

/* Where bucket v of a table starts (an entry index, or a position for an implicit table)
 * and how many it holds; 0 when the directory is corrupt. `from`: the bit where bucket
 * 64 (v / 64)'s run starts (its sample plus the zeros before it). */
static inline __attribute__((always_inline)) int bucket(const uint64_t *words, uint64_t nwords, uint64_t from, uint32_t v,
                  uint64_t *first, uint64_t *count) {
    uint64_t p = from, w = p >> 6;
    unsigned k = v & 63;
    if (w >= nwords) return 0;
    if (k) {
        uint64_t x = ~words[w] & (~0ULL << (p & 63));
        for (;;) {
            unsigned c = (unsigned)__builtin_popcountll(x);
            if (c >= k) {
                p = 64 * w + select64(x, k) + 1;
                break;
            }
            k -= c;
            if (++w >= nwords) return 0;
            x = ~words[w];
        }
    }
    uint64_t run = 0;
    w = p >> 6;
    if (w >= nwords) return 0;
    uint64_t y = words[w] >> (p & 63);
    unsigned avail = 64 - (unsigned)(p & 63);
    for (;;) {
        uint64_t z = ~y;
        unsigned t = z ? (unsigned)__builtin_ctzll(z) : 64;
        if (t < avail) {
            run += t;
            break;
        }
        run += avail;
        if (++w >= nwords) return 0;
        y = words[w];
        avail = 64;
    }
    if (p < v) return 0;
    *first = p - v;
    *count = run;
    return 1;
}

typedef struct {
    uint32_t *items;
    size_t len, room;
} Vec;

static int push(Vec *vec, uint32_t a, uint32_t b, uint32_t c, int three) {
    size_t need = vec->len + (three ? 3 : 1);
    if (need > vec->room) {
        size_t more = 2 * need + 1024;
        uint32_t *grown = realloc(vec->items, 4 * more);
        if (!grown) return 0;
        vec->items = grown;
        vec->room = more;
    }
    vec->items[vec->len++] = a;
    if (three) {
        vec->items[vec->len++] = b;
        vec->items[vec->len++] = c;
    }
    return 1;
}

typedef struct {
    const uint8_t *h;
    Py_ssize_t n;
    int threshold, all;
    int64_t best_pos;
    int best;
    Vec found; /* all: (query, position, distance) triples */
} Answer;

static inline __attribute__((always_inline)) int consider(Answer *a, Py_ssize_t j, uint32_t p, int d) {
    if (d > a->threshold) return 1;
    if (a->all) return push(&a->found, (uint32_t)j, p, (uint32_t)d, 1);
    if (d < a->best || (d == a->best && (int64_t)p < a->best_pos)) {
        a->best = d;
        a->best_pos = p;
    }
    return 1;
}

/* lookup(hashes, blob, meta, params, probes, hot, hot_hashes, queries, threshold, scan, all)
 *   -> (position, distance) or None; all: bytes of u32 (query, position, distance) triples
 * blob: the tables' words, samples and entries; meta: META u64 a table (see Table: byte
 * offsets into blob, counts in words and entries; entries_at NO_ENTRIES for an implicit
 * table); params: u32 bits, group_shift, width, hot_limit (an implicit table's bucket over
 * it holds only hot hashes and is not probed); probes: pairs of u32 (table, xor mask);
 * hot, hot_hashes: the hashes the tables leave out (their positions, u32, and a copy of
 * them end to end), compared one by one; scan: compare every hash instead (no probes);
 * queries: 32 bytes each. Nearest: the closest listed hash within threshold of any query,
 * ties to the lowest position. All: every (query, listed hash) within it, perhaps twice. */
POPCNT_CLONES static PyObject *lookup(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer hashes, blob, meta, params, probes, hot, hot_hashes, queries;
    int threshold, scan, all;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*ipp", &hashes, &blob, &meta, &params, &probes,
                          &hot, &hot_hashes, &queries, &threshold, &scan, &all))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = hashes.len / 32, tables = meta.len / (8 * META);
    Table *tab = NULL;
    uint32_t *values = NULL, *firsts = NULL, *counts = NULL, *candidates = NULL;
    uint64_t *froms = NULL;
    Answer a = {hashes.buf, n, threshold, all, -1, threshold + 1, {NULL, 0, 0}};
    if (hashes.len % 32 || queries.len % 32 || probes.len % 8 || meta.len % (8 * META) ||
        params.len != 16 || hot.len % 4 || hot_hashes.len != 8 * hot.len) {
        PyErr_SetString(PyExc_ValueError, "lookup: sizes do not agree");
        goto out;
    }
    const uint32_t *par = params.buf;
    unsigned bits = par[0], group_shift = par[1], width = par[2];
    uint64_t hot_limit = par[3], mask = bits < 32 ? (1ULL << bits) - 1 : 0;
    int bad = bits < 1 || bits > 30 || group_shift > 8 || width < 1 || width > 32;
    size_t nsamples = bad ? 0 : (((size_t)1 << bits) + 63) / 64;
    tab = malloc(sizeof(Table) * (tables ? tables : 1));
    if (!tab) {
        PyErr_NoMemory();
        goto out;
    }
    const uint8_t *b = blob.buf;
    uint64_t blen = (uint64_t)blob.len;
    for (Py_ssize_t t = 0; t < tables && !bad; t++) {
        memcpy(&tab[t], (const uint8_t *)meta.buf + 8 * META * t, sizeof(Table));
        Table *x = &tab[t];
        bad = !chunk_ok((long)x->chunk, bits) || x->words_at % 8 || x->samples_at % 4 ||
              x->nwords > blen / 8 || x->words_at > blen - 8 * x->nwords ||
              nsamples * 4 > blen || x->samples_at > blen - 4 * nsamples;
        if (x->entries_at == NO_ENTRIES)
            bad |= x->entries != (uint64_t)n;
        else
            bad |= x->entries > blen || x->entries_at > blen ||
                   (x->entries * width + 7) / 8 + 8 > blen - x->entries_at;
    }
    Py_ssize_t np_ = probes.len / 8;
    const uint32_t *probe = probes.buf;
    for (Py_ssize_t k = 0; k < np_ && !bad; k++)
        bad = probe[2 * k] >= (uint32_t)tables || probe[2 * k + 1] > mask;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "lookup: a table or probe is out of range");
        goto out;
    }
    values = malloc(4 * (size_t)(np_ + 1));
    firsts = malloc(4 * (size_t)(np_ + 1));
    counts = malloc(4 * (size_t)(np_ + 1));
    froms = malloc(8 * (size_t)(np_ + 1));
    size_t room = 4096;
    candidates = malloc(4 * room);
    if (!values || !firsts || !counts || !froms || !candidates) {
        PyErr_NoMemory();
        goto out;
    }
    const uint8_t *q = queries.buf, *hh = hot_hashes.buf, *h = hashes.buf;
    const uint32_t *hp = hot.buf;
    Py_ssize_t nq = queries.len / 32, nh = hot.len / 4;
    int nomem = 0;
    uint64_t entry_mask = width < 64 ? (1ULL << width) - 1 : ~0ULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < nq && !bad && !nomem; j++) {
        const uint8_t *query = q + 32 * j;
        if (scan) {
            for (Py_ssize_t p = 0; p < n && !nomem; p++)
                nomem = !consider(&a, j, (uint32_t)p, distance(h + 32 * (size_t)p, query));
            continue;
        }
        for (Py_ssize_t k = 0; k < nh && !nomem; k++) {
            if (hp[k] >= n) { bad = 1; break; }
            nomem = !consider(&a, j, hp[k], distance(hh + 32 * (size_t)k, query));
        }
        /* Passes, so that each memory read (a bucket's sample, its directory word, its
         * entries, then each candidate's hash: random places in a large index) is
         * requested ahead of its use. */
        for (Py_ssize_t k = 0; k < np_; k++) {
            const Table *x = &tab[probe[2 * k]];
            uint32_t value = chunk_at(query, (unsigned)x->chunk, bits) ^ probe[2 * k + 1];
            values[k] = value;
            __builtin_prefetch(b + x->samples_at + 4 * (value >> 6));
        }
        for (Py_ssize_t k = 0; k < np_; k++) {
            const Table *x = &tab[probe[2 * k]];
            uint32_t sample;
            memcpy(&sample, b + x->samples_at + 4 * (values[k] >> 6), 4);
            froms[k] = (uint64_t)sample + ((uint64_t)(values[k] >> 6) << 6);
            __builtin_prefetch(b + x->words_at + 8 * (froms[k] >> 6));
        }
        size_t found = 0;
        for (Py_ssize_t k = 0; k < np_ && !bad; k++) {
            const Table *x = &tab[probe[2 * k]];
            uint64_t first, count;
            if (!bucket((const uint64_t *)(b + x->words_at), x->nwords, froms[k], values[k],
                        &first, &count) ||
                first + count > x->entries) {
                bad = 1;
                break;
            }
            if (x->entries_at == NO_ENTRIES && count > hot_limit) count = 0; /* all hot */
            firsts[k] = (uint32_t)first;
            counts[k] = (uint32_t)count;
            found += x->entries_at == NO_ENTRIES ? count : count << group_shift;
            if (x->entries_at != NO_ENTRIES && count)
                __builtin_prefetch(b + x->entries_at + ((first * width) >> 3));
        }
        if (bad) break;
        if (found > (size_t)n / 2) { /* a scan costs less than these candidates */
            for (Py_ssize_t p = 0; p < n && !nomem; p++)
                nomem = !consider(&a, j, (uint32_t)p, distance(h + 32 * (size_t)p, query));
            continue;
        }
        if (found > room) {
            uint32_t *grown = realloc(candidates, 4 * found);
            if (!grown) { nomem = 1; break; }
            candidates = grown;
            room = found;
        }
        size_t got = 0;
        for (Py_ssize_t k = 0; k < np_ && !bad; k++) {
            const Table *x = &tab[probe[2 * k]];
            uint64_t first = firsts[k];
            if (x->entries_at == NO_ENTRIES) {
                if (counts[k]) __builtin_prefetch(h + 32 * first);
                for (uint32_t i = 0; i < counts[k]; i++) candidates[got++] = (uint32_t)(first + i);
                continue;
            }
            for (uint32_t i = 0; i < counts[k]; i++) {
                uint64_t at = (first + i) * width;
                uint64_t g = (load64(b + x->entries_at + (at >> 3)) >> (at & 7)) & entry_mask;
                uint64_t p0 = g << group_shift;
                if (p0 >= (uint64_t)n) { bad = 1; break; }
                __builtin_prefetch(h + 32 * p0);
                for (uint64_t p = p0; p < p0 + (1u << group_shift) && p < (uint64_t)n; p++)
                    candidates[got++] = (uint32_t)p;
            }
        }
        if (bad) break;
        for (size_t i = 0; i < got && !nomem; i++) {
            if (i + AHEAD < got) __builtin_prefetch(h + 32 * (size_t)candidates[i + AHEAD]);
            uint32_t p = candidates[i];
            nomem = !consider(&a, j, p, distance(h + 32 * (size_t)p, query));
        }
    }
    Py_END_ALLOW_THREADS
    if (nomem) {
        PyErr_NoMemory();
        goto out;
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "lookup: the index is corrupt");
        goto out;
    }
    if (all)
        result = PyBytes_FromStringAndSize((const char *)a.found.items,
                                           (Py_ssize_t)(4 * a.found.len));
    else
        result = a.best_pos < 0 ? Py_NewRef(Py_None)
                                : Py_BuildValue("(Li)", (long long)a.best_pos, a.best);
out:
    free(tab);
    free(values);
    free(firsts);
    free(counts);
    free(froms);
    free(candidates);
    free(a.found.items);
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&blob);
    PyBuffer_Release(&meta);
    PyBuffer_Release(&params);
    PyBuffer_Release(&probes);
    PyBuffer_Release(&hot);
    PyBuffer_Release(&hot_hashes);
    PyBuffer_Release(&queries);
    return result;
}

static PyMethodDef methods[] = {
    {"hot", hot, METH_VARARGS, "Mark the hashes in crowded buckets."},
    {"table", table, METH_VARARGS, "Group positions by one chunk of their hash, compactly."},
    {"lookup", lookup, METH_VARARGS, "Listed hashes within a threshold of queries."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mih", "Loops of the PDQ multi-index.", 0, methods, slots,
};

PyMODINIT_FUNC PyInit__mih(void) { return PyModuleDef_Init(&module); }
