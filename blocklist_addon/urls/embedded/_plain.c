/* The embedded-URL search's prefilter in C: plain(text) is markers.PLAIN.fullmatch(text)
 * is not None, for every str, read the way the regex reads it (the same alternatives, the
 * same lookaheads, the same possessive runs; the regex is the reference and
 * tests/test_embedded_plain.py holds the two together on generated text). Most URLs on a
 * page embed nothing: this says so in a pass over the characters, where the regex's
 * alternatives and lookaheads cost a page scan about a tenth of its time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t n;
} text_t;

/* The character at i, or -1 past either end (a lookahead or lookbehind that finds none). */
static inline Py_UCS4 at(const text_t *t, Py_ssize_t i)
{
    return (i < 0 || i >= t->n) ? (Py_UCS4)-1 : PyUnicode_READ(t->kind, t->data, i);
}

static inline int is_letter(Py_UCS4 c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static inline int is_digit(Py_UCS4 c) { return c >= '0' && c <= '9'; }
static inline int is_slash(Py_UCS4 c) { return c == '/' || c == '\\'; }
static inline int is_high(Py_UCS4 c) { return c >= 0x80 && c <= 0xff; } /* \x80-\xff */
static inline int in(Py_UCS4 c, const char *set) { return c != (Py_UCS4)-1 && c < 0x80 && c && strchr(set, (int)c); }
/* [a-zA-Z0-9_\-] */
static inline int is_label(Py_UCS4 c) { return is_letter(c) || is_digit(c) || c == '_' || c == '-'; }

/* The digits from i: how many (at most `most` + 1, enough to tell "too many"). */
static Py_ssize_t digits(const text_t *t, Py_ssize_t i, Py_ssize_t most)
{
    Py_ssize_t k = 0;
    while (k <= most && is_digit(at(t, i + k)))
        k++;
    return k;
}

/* (?::[0-9]*+)?[/\\] at i. */
static int port_then_slash(const text_t *t, Py_ssize_t i)
{
    if (at(t, i) == ':') {
        Py_ssize_t k = i + 1;
        while (is_digit(at(t, k)))
            k++;
        if (is_slash(at(t, k)))
            return 1;
    }
    return is_slash(at(t, i));
}

/* [46]8[57]4 at i. */
static int hex_scheme(const text_t *t, Py_ssize_t i)
{
    return in(at(t, i), "46") && at(t, i + 1) == '8' && in(at(t, i + 2), "57") && at(t, i + 3) == '4';
}

/* [aS][HF]R at i. */
static int b64_scheme(const text_t *t, Py_ssize_t i)
{
    return in(at(t, i), "aS") && in(at(t, i + 1), "HF") && at(t, i + 2) == 'R';
}

/* The lookahead after a value's "=", "?" or "&": a value that may start a marker. */
static int value_starts_something(const text_t *t, Py_ssize_t j)
{
    Py_ssize_t k, run;
    if (b64_scheme(t, j))
        return 1;
    if (is_letter(at(t, j))) { /* [A-Za-z][0-9]{1,3}[aS][HF]R */
        run = digits(t, j + 1, 3);
        if (run >= 1 && run <= 3 && b64_scheme(t, j + 1 + run))
            return 1;
    }
    if (hex_scheme(t, j))
        return 1;
    if (in(at(t, j), "hH") && in(at(t, j + 1), "tT") && in(at(t, j + 2), "tT") &&
        in(at(t, j + 3), "pP")) { /* [hH][tT][tT][pP][sS]?- */
        if (at(t, j + 4) == '-' || (in(at(t, j + 4), "sS") && at(t, j + 5) == '-'))
            return 1;
    }
    k = j; /* [\x00-\x20]*+ */
    while (k < t->n && at(t, k) <= 0x20)
        k++;
    if (is_slash(at(t, k)))
        return 1;
    if (is_label(at(t, k))) { /* [a-zA-Z0-9_\-]++\.[a-zA-Z0-9_\-.]*?[a-zA-Z] */
        Py_ssize_t m = k;
        while (is_label(at(t, m)))
            m++;
        if (at(t, m) == '.') {
            for (m++; is_label(at(t, m)) || at(t, m) == '.'; m++)
                if (is_letter(at(t, m)))
                    return 1;
        }
    }
    /* [0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9] */
    for (int group = 0; group < 3; group++) {
        run = digits(t, k, 3);
        if (run < 1 || run > 3 || at(t, k + run) != '.')
            return 0;
        k += run + 1;
    }
    return is_digit(at(t, k));
}

/* (?![a-zA-Z][a-zA-Z0-9\-]*+\.?(?::[0-9]*+)?[/\\]) after a ".": 1 where it fails. */
static int dot_starts_tld(const text_t *t, Py_ssize_t j)
{
    Py_ssize_t k;
    Py_UCS4 c;
    if (!is_letter(at(t, j)))
        return 0;
    for (k = j + 1; (c = at(t, k)) != (Py_UCS4)-1 && (is_letter(c) || is_digit(c) || c == '-'); k++)
        ;
    if (at(t, k) == '.' && port_then_slash(t, k + 1))
        return 1;
    return port_then_slash(t, k);
}

/* (?:[0-9]{1,3}\.){3}[0-9]{1,3}(?::[0-9]*+)?[/\\] | [aS][/HF] | [46]8[57]4 after a "/". */
static int slash_starts_something(const text_t *t, Py_ssize_t j)
{
    Py_ssize_t k = j, run;
    if (in(at(t, j), "aS") && in(at(t, j + 1), "/HF"))
        return 1;
    if (hex_scheme(t, j))
        return 1;
    for (int group = 0; group < 4; group++) {
        run = digits(t, k, 3);
        if (run < 1 || run > 3)
            return 0;
        k += run;
        if (group < 3) {
            if (at(t, k) != '.')
                return 0;
            k++;
        }
    }
    return port_then_slash(t, k);
}

static int plain(const text_t *t)
{
    Py_ssize_t i = 0, k;
    Py_UCS4 c;
    /* _OUTER: (?:[A-Za-z][A-Za-z0-9+.\-]*+:)?+[/\\]*+[^/\\?#%=&]*+ */
    if (is_letter(at(t, 0))) {
        for (k = 1; (c = at(t, k)) != (Py_UCS4)-1 && (is_letter(c) || is_digit(c) || in(c, "+.-")); k++)
            ;
        if (at(t, k) == ':')
            i = k + 1;
    }
    while (is_slash(at(t, i)))
        i++;
    while (i < t->n && !in(at(t, i), "/\\?#%=&"))
        i++;
    while (i < t->n) {
        c = at(t, i);
        if (!is_high(c) && !in(c, ":wW=?&%./\\[\t\n\r")) { /* starts nothing */
            i++;
        } else if (c == '%') { /* %20, a space */
            if (at(t, i + 1) != '2' || at(t, i + 2) != '0')
                return 0;
            i += 3;
        } else if (in(c, "=?&")) { /* a value */
            if (value_starts_something(t, i + 1))
                return 0;
            for (i++;;) {
                c = at(t, i);
                if (c == (Py_UCS4)-1)
                    break;
                if (!is_high(c) && !in(c, "=?&#%/\\:wW[\t\n\r"))
                    i++;
                else if (c == '%' && !in(at(t, i - 1), "=?&") && at(t, i - 1) > 0x20 &&
                         at(t, i + 1) == '2' && at(t, i + 2) == '0')
                    i += 3;
                else
                    break;
            }
            c = at(t, i);
            if (is_high(c) || in(c, "/\\%["))
                return 0;
        } else if (c == 'w' || c == 'W') { /* a "w" that does not start "ww" */
            if (in(at(t, i + 1), "wW"))
                return 0;
            i++;
        } else if (c == ':') { /* not the end of "http", "https", "cache" or "ssl" */
            if (in(at(t, i - 1), "pPsSeElL"))
                return 0;
            i++;
        } else if (c == '.') { /* not a TLD before a "/" */
            if (dot_starts_tld(t, i + 1))
                return 0;
            i++;
        } else if (is_slash(c)) {
            if (slash_starts_something(t, i + 1))
                return 0;
            i++;
        } else { /* "[", a tab or newline, a byte >= 0x80 */
            return 0;
        }
    }
    return 1;
}

static PyObject *module_plain(PyObject *self, PyObject *arg)
{
    text_t t;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "plain() takes a str");
        return NULL;
    }
    t.kind = PyUnicode_KIND(arg);
    t.data = PyUnicode_DATA(arg);
    t.n = PyUnicode_GET_LENGTH(arg);
    return PyBool_FromLong(plain(&t));
}

static PyMethodDef module_methods[] = {
    {"plain", (PyCFunction)module_plain, METH_O,
     "plain(text) -> markers.PLAIN.fullmatch(text) is not None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_plain", "The embedded-URL search's prefilter.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__plain(void) { return PyModule_Create(&module); }
