/* The two loops of the PDQ multi-index (blocklist_addon/hashes/pdqindex.py) that numpy
 * cannot do without materializing every candidate: building a table (a counting sort of
 * positions by one chunk of their hash) and looking queries up (probe every bucket within
 * a table's radius, verify each candidate by its full Hamming distance).
 *
 * Everything is passed as buffers (numpy arrays or slices of a mapped index file), so the
 * index can live in a file every process maps. No state; the GIL is released while the
 * loops run, so several threads can look up at once.
 *
 * Hashes are 32 bytes; chunks are read from the hash as big-endian 64-bit words, so table
 * 0's chunk (the leading bits) sorts like the hash bytes.
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

static inline uint64_t word_of(const uint8_t *hash, int word) {
    uint64_t w;
    memcpy(&w, hash + 8 * word, 8);
    return __builtin_bswap64(w);
}

static inline uint32_t chunk_of(const uint8_t *hash, int word, int shift, uint64_t mask) {
    return (uint32_t)((word_of(hash, word) >> shift) & mask);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("popcnt", "default")))
#endif
static int distance(const uint8_t *a, const uint8_t *b) {
    uint64_t x[4], y[4];
    memcpy(x, a, 32);
    memcpy(y, b, 32);
    return __builtin_popcountll(x[0] ^ y[0]) + __builtin_popcountll(x[1] ^ y[1]) +
           __builtin_popcountll(x[2] ^ y[2]) + __builtin_popcountll(x[3] ^ y[3]);
}

/* table(hashes, positions, word, shift, bits, dirs_out, ids_out)
 * positions: u32 positions of the hashes to index (empty: all of them, in order).
 * dirs_out: (2**bits + 1) u32, where each chunk value's positions start in ids_out.
 * ids_out: one u32 a position, grouped by chunk value, in the order given. */
static PyObject *table(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer hashes, positions, dirs, ids;
    int word, shift, bits;
    if (!PyArg_ParseTuple(args, "y*y*iiiw*w*", &hashes, &positions, &word, &shift, &bits, &dirs,
                          &ids))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = hashes.len / 32;
    Py_ssize_t count = positions.len ? positions.len / 4 : n;
    size_t buckets = (size_t)1 << bits;
    if (bits < 1 || bits > 30 || word < 0 || word > 3 || shift < 0 || shift + bits > 64 ||
        dirs.len != (Py_ssize_t)(4 * (buckets + 1)) || ids.len != 4 * count) {
        PyErr_SetString(PyExc_ValueError, "table: sizes do not agree");
        goto out;
    }
    const uint8_t *h = hashes.buf;
    const uint32_t *pos = positions.buf;
    uint32_t *dir = dirs.buf, *out = ids.buf;
    uint64_t mask = buckets - 1;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    memset(dir, 0, 4 * (buckets + 1));
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t p = positions.len ? pos[i] : i;
        if (p >= n) { bad = 1; break; }
        dir[chunk_of(h + 32 * p, word, shift, mask) + 1]++;
    }
    if (!bad) {
        for (size_t v = 0; v < buckets; v++) dir[v + 1] += dir[v];
        /* dir[v] is where bucket v starts; fill, moving each start on, then shift back. */
        for (Py_ssize_t i = 0; i < count; i++) {
            Py_ssize_t p = positions.len ? pos[i] : i;
            out[dir[chunk_of(h + 32 * p, word, shift, mask)]++] = (uint32_t)p;
        }
        memmove(dir + 1, dir, 4 * buckets);
        dir[0] = 0;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "table: a position is out of range");
        goto out;
    }
    result = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&positions);
    PyBuffer_Release(&dirs);
    PyBuffer_Release(&ids);
    return result;
}

/* nearest(hashes, dirs, ids, bits, layout, probes, hot, hot_hashes, queries, threshold, scan)
 *   -> (position, distance) or None
 * dirs: m tables of (2**bits + 1) u32; ids: m tables of the same length (u32 positions);
 * layout: m pairs of i32 (word, shift); probes: pairs of u32 (table, xor mask);
 * hot, hot_hashes: the hashes the tables leave out (their positions, u32, and a copy of
 * them end to end), compared one by one; scan: compare every hash instead (no probes);
 * queries: 32 bytes each. The closest listed hash within threshold of any query; ties go
 * to the lowest position. */
static PyObject *nearest(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer hashes, dirs, ids, layout, probes, hot, hot_hashes, queries;
    int bits, threshold, scan;
    if (!PyArg_ParseTuple(args, "y*y*y*iy*y*y*y*y*ip", &hashes, &dirs, &ids, &bits, &layout,
                          &probes, &hot, &hot_hashes, &queries, &threshold, &scan))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = hashes.len / 32;
    size_t buckets = (size_t)1 << bits;
    Py_ssize_t tables = layout.len / 8;
    Py_ssize_t per_table = tables ? ids.len / 4 / tables : 0;
    if (bits < 1 || bits > 30 || hashes.len % 32 || queries.len % 32 || probes.len % 8 ||
        layout.len % 8 || dirs.len != (Py_ssize_t)(4 * (buckets + 1) * tables) ||
        ids.len != 4 * per_table * tables || hot.len % 4 || hot_hashes.len != 8 * hot.len) {
        PyErr_SetString(PyExc_ValueError, "nearest: sizes do not agree");
        goto out;
    }
    const uint8_t *h = hashes.buf, *q = queries.buf, *hh = hot_hashes.buf;
    const uint32_t *dir = dirs.buf, *id = ids.buf, *probe = probes.buf, *hp = hot.buf;
    const int32_t *lay = layout.buf;
    Py_ssize_t nq = queries.len / 32, np_ = probes.len / 8, nh = hot.len / 4;
    uint64_t mask = buckets - 1;
    int64_t best_pos = -1;
    int best = threshold + 1, bad = 0;
    for (Py_ssize_t t = 0; t < tables; t++)
        if (lay[2 * t] < 0 || lay[2 * t] > 3 || lay[2 * t + 1] < 0 || lay[2 * t + 1] + bits > 64)
            bad = 1;
    for (Py_ssize_t k = 0; k < np_; k++)
        if (probe[2 * k] >= (uint32_t)tables || probe[2 * k + 1] > mask) bad = 1;
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "nearest: a table or probe is out of range");
        goto out;
    }
    int nomem = 0;
    uint32_t *values = malloc(4 * (size_t)(np_ + 1));
    Py_ssize_t room = 4096;
    uint32_t *candidates = malloc(4 * (size_t)room);
    if (!values || !candidates) {
        free(values);
        free(candidates);
        PyErr_NoMemory();
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < nq && !bad && !nomem; j++) {
        const uint8_t *query = q + 32 * j;
        if (scan) {
            for (Py_ssize_t p = 0; p < n; p++) {
                int d = distance(h + 32 * (size_t)p, query);
                if (d < best || (d == best && p < best_pos)) { best = d; best_pos = p; }
            }
            continue;
        }
        for (Py_ssize_t k = 0; k < nh; k++) {
            uint32_t p = hp[k];
            int d = distance(hh + 32 * (size_t)k, query);
            if (d < best || (d == best && (int64_t)p < best_pos)) { best = d; best_pos = p; }
        }
        /* Two passes, so that the memory reads (a bucket's start, then each candidate's
         * hash: random places in a large index) are requested ahead of their use. */
        for (Py_ssize_t k = 0; k < np_; k++) {
            uint32_t t = probe[2 * k];
            uint32_t value = chunk_of(query, lay[2 * t], lay[2 * t + 1], mask) ^ probe[2 * k + 1];
            values[k] = value;
            __builtin_prefetch(dir + (size_t)t * (buckets + 1) + value);
        }
        Py_ssize_t found = 0;
        for (Py_ssize_t k = 0; k < np_; k++) {
            uint32_t t = probe[2 * k];
            const uint32_t *d0 = dir + (size_t)t * (buckets + 1);
            uint32_t lo = d0[values[k]], hi = d0[values[k] + 1];
            if (hi > per_table || lo > hi) { bad = 1; break; }
            if (found + (hi - lo) > room) {
                Py_ssize_t more = 2 * (found + (hi - lo));
                uint32_t *grown = realloc(candidates, 4 * (size_t)more);
                if (!grown) { nomem = 1; break; }
                candidates = grown;
                room = more;
            }
            memcpy(candidates + found, id + (size_t)t * per_table + lo, 4 * (size_t)(hi - lo));
            found += hi - lo;
            if (found > n / 2) break; /* a scan costs less than these candidates */
        }
        if (bad || nomem) break;
        if (found > n / 2) {
            for (Py_ssize_t p = 0; p < n; p++) {
                int d = distance(h + 32 * (size_t)p, query);
                if (d < best || (d == best && p < best_pos)) { best = d; best_pos = p; }
            }
            continue;
        }
        for (Py_ssize_t i = 0; i < found; i++) {
            if (i + AHEAD < found && candidates[i + AHEAD] < n)
                __builtin_prefetch(h + 32 * (size_t)candidates[i + AHEAD]);
            uint32_t p = candidates[i];
            if (p >= n) { bad = 1; break; }
            int d = distance(h + 32 * (size_t)p, query);
            if (d < best || (d == best && (int64_t)p < best_pos)) { best = d; best_pos = p; }
        }
    }
    free(values);
    free(candidates);
    Py_END_ALLOW_THREADS
    if (nomem) {
        PyErr_NoMemory();
        goto out;
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "nearest: the index is corrupt");
        goto out;
    }
    result = best_pos < 0 ? Py_NewRef(Py_None) : Py_BuildValue("(Li)", (long long)best_pos, best);
out:
    PyBuffer_Release(&hashes);
    PyBuffer_Release(&dirs);
    PyBuffer_Release(&ids);
    PyBuffer_Release(&layout);
    PyBuffer_Release(&probes);
    PyBuffer_Release(&hot);
    PyBuffer_Release(&hot_hashes);
    PyBuffer_Release(&queries);
    return result;
}

static PyMethodDef methods[] = {
    {"table", table, METH_VARARGS, "Group positions by one chunk of their hash."},
    {"nearest", nearest, METH_VARARGS, "The closest listed hash within a threshold."},
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
