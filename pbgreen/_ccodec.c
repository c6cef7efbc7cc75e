/* pbgreen._ccodec: the plain-data codec of pbgreen._pycodec, compiled.
 *
 * How it works. The same four functions as _pycodec (dumps, dumps_head,
 * dumps_values, loads) with the same signatures, bytes, values and
 * exceptions. Encoding walks the value once and writes banana straight into
 * one growing bytes object; decoding walks the buffer once and builds the
 * objects, reading tags and words in place (no bytes object per token).
 *
 * Whatever the C code does not take natively -- an argument of an unusual
 * type, a vocabulary other than banana's VOCAB_CODES / VOCAB or an empty
 * one, a field that makes the pure function raise -- is handed to the pure
 * function in _pycodec, which gives the exact answer or exception. Where
 * the pure codec gives up (raises Fallback, or loads returns None) this one
 * gives up at the same inputs, so callers take the general jelly path on
 * exactly the same values. The tables (vocabulary, encoded tags, limits) are
 * read from pbgreen.banana and _pycodec when the module is imported, so the
 * two cannot drift apart.
 *
 * Only CPython's public C API is used, plus _PyBytes_Resize (present in
 * every CPython 3.x) to grow the output in place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ state */

static PyObject *Fallback, *Built;
static Py_ssize_t built_value_offset;  /* where Built's one slot, ``value``, lives */
static PyObject *py_dumps, *py_dumps_head, *py_dumps_values, *py_loads, *encode_int;
static PyObject *EncodeError;
static PyObject *VOCAB_CODES, *VOCAB;

static Py_ssize_t SIZE_LIMIT, PREFIX_LIMIT, CACHED, DEPTH;

/* encoding: vocabulary word -> code */
#define MAX_WORDS 64
typedef struct {
    const char *word, *code;
    Py_ssize_t wlen, clen;
} VocabEntry;
static VocabEntry vocab_entries[MAX_WORDS];
static int vocab_count;
static PyObject *vocab_refs; /* keeps the words and codes alive */

/* decoding: vocabulary number -> word object */
#define MAX_CODE 256
static PyObject *vocab_words[MAX_CODE];

typedef struct {
    char b[32];
    Py_ssize_t n;
} Piece;

typedef struct {
    int use_vocab;
    Piece UNICODE, LIST, TUPLE, DICT, SET, FROZENSET, NONE, TRUE_, FALSE_;
} Dialect;
static Dialect dialect_vocab, dialect_plain;

#define DECLINE (-2) /* Fallback (encoding) or "return None" (decoding) */
#define FAILED (-1)  /* a Python exception is set */

/* ------------------------------------------------------------------ output */

typedef struct {
    PyObject *bytes;
    char *p;
    Py_ssize_t len, cap;
} Out;

static int
out_init(Out *o, Py_ssize_t cap)
{
    o->bytes = PyBytes_FromStringAndSize(NULL, cap);
    if (o->bytes == NULL)
        return FAILED;
    o->p = PyBytes_AS_STRING(o->bytes);
    o->len = 0;
    o->cap = cap;
    return 0;
}

static int
out_grow(Out *o, Py_ssize_t need)
{
    Py_ssize_t cap = o->cap * 2;
    if (cap < o->len + need)
        cap = o->len + need + 64;
    if (_PyBytes_Resize(&o->bytes, cap) < 0)
        return FAILED;
    o->p = PyBytes_AS_STRING(o->bytes);
    o->cap = cap;
    return 0;
}

#define RESERVE(o, n) \
    do { if ((o)->cap - (o)->len < (Py_ssize_t)(n) && out_grow((o), (n)) < 0) return FAILED; } while (0)

static inline void
put_b128(Out *o, uint64_t n)
{
    do {
        o->p[o->len++] = (char)(n & 0x7F);
        n >>= 7;
    } while (n);
}

/* prefix + type byte; reserves room for them */
static inline int
put_head(Out *o, uint64_t n, unsigned char typ)
{
    RESERVE(o, 11);
    put_b128(o, n);
    o->p[o->len++] = (char)typ;
    return 0;
}

static inline int
put_raw(Out *o, const char *s, Py_ssize_t n)
{
    RESERVE(o, n);
    memcpy(o->p + o->len, s, n);
    o->len += n;
    return 0;
}

static inline int
put_piece(Out *o, const Piece *piece)
{
    return put_raw(o, piece->b, piece->n);
}

static PyObject *
out_finish(Out *o)
{
    if (_PyBytes_Resize(&o->bytes, o->len) < 0)
        return NULL;
    return o->bytes;
}

static void
out_drop(Out *o)
{
    Py_CLEAR(o->bytes);
}

/* ------------------------------------------------------------------ encoding */

/* candidates by (length, first byte): the first entry, then a chain through next */
#define INDEX_LEN 32
static signed char vocab_first[INDEX_LEN + 1][128];
static signed char vocab_next[MAX_WORDS];

static inline int
vocab_lookup(const char *s, Py_ssize_t n, const VocabEntry **found)
{
    unsigned char c = (unsigned char)s[0];
    if (n > INDEX_LEN || c >= 128)
        return 0;
    for (int i = vocab_first[n][c]; i >= 0; i = vocab_next[i]) {
        const VocabEntry *e = &vocab_entries[i];
        if (memcmp(e->word, s, n) == 0) {
            *found = e;
            return 1;
        }
    }
    return 0;
}

static Py_ssize_t vocab_min_len = 1, vocab_max_len = 0;

/* One byte-string element: the vocabulary code, or prefix + 0x82 + body;
 * DECLINE past the size limit (encode_string would raise EncodeError). */
static inline int
put_string(Out *o, const Dialect *d, const char *s, Py_ssize_t n)
{
    if (d->use_vocab && n >= vocab_min_len && n <= vocab_max_len) {
        const VocabEntry *e;
        if (vocab_lookup(s, n, &e))
            return put_raw(o, e->code, e->clen);
    }
    if (n > SIZE_LIMIT && n >= CACHED)
        return DECLINE;
    RESERVE(o, n + 11);
    put_b128(o, (uint64_t)n);
    o->p[o->len++] = (char)0x82;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    return 0;
}

/* One integer element, as banana.encode_int; DECLINE past PB's limit. */
static int
put_int(Out *o, PyObject *obj)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return FAILED;
    if (!overflow) {
        if (v >= 0)
            return put_head(o, (uint64_t)v, v < 2147483648LL ? 0x81 : 0x85);
        uint64_t mag = (uint64_t)0 - (uint64_t)v;
        return put_head(o, mag, mag <= 2147483648ULL ? 0x83 : 0x86);
    }
    /* past 64 bits: rare, banana's own encoder says how (or EncodeError) */
    PyObject *data = PyObject_CallOneArg(encode_int, obj);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(EncodeError)) {
            PyErr_Clear();
            return DECLINE;
        }
        return FAILED;
    }
    int r = put_raw(o, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return r;
}

/* A set of object addresses: the containers already written in one value. */
typedef struct {
    uintptr_t *slots;
    Py_ssize_t mask, used;
    uintptr_t inline_slots[64];
} Seen;

static void
seen_init(Seen *s)
{
    s->slots = s->inline_slots;
    s->mask = 63;
    s->used = 0;
    memset(s->inline_slots, 0, sizeof(s->inline_slots));
}

static void
seen_clear(Seen *s)
{
    if (s->used) {
        memset(s->slots, 0, (s->mask + 1) * sizeof(uintptr_t));
        s->used = 0;
    }
}

static void
seen_free(Seen *s)
{
    if (s->slots != s->inline_slots)
        PyMem_Free(s->slots);
}

static inline Py_ssize_t
seen_hash(uintptr_t p, Py_ssize_t mask)
{
    return (Py_ssize_t)(((p >> 4) * (uintptr_t)0x9E3779B97F4A7C15ULL) >> 16) & mask;
}

/* 1 if ``p`` was there already, 0 if added, FAILED on no memory */
static int
seen_add(Seen *s, uintptr_t p)
{
    Py_ssize_t i = seen_hash(p, s->mask);
    while (s->slots[i]) {
        if (s->slots[i] == p)
            return 1;
        i = (i + 1) & s->mask;
    }
    s->slots[i] = p;
    if (++s->used * 2 > s->mask) {
        Py_ssize_t size = (s->mask + 1) * 2;
        uintptr_t *slots = PyMem_Calloc(size, sizeof(uintptr_t));
        if (slots == NULL) {
            PyErr_NoMemory();
            return FAILED;
        }
        for (Py_ssize_t j = 0; j <= s->mask; j++) {
            uintptr_t q = s->slots[j];
            if (q) {
                Py_ssize_t k = seen_hash(q, size - 1);
                while (slots[k])
                    k = (k + 1) & (size - 1);
                slots[k] = q;
            }
        }
        seen_free(s);
        s->slots = slots;
        s->mask = size - 1;
    }
    return 0;
}

typedef struct {
    Out out;
    const Dialect *d;
    Seen seen;
} Dumper;

static int dump_value(Dumper *D, PyObject *obj, Py_ssize_t depth);

static int
dump_container_head(Dumper *D, PyObject *obj, Py_ssize_t count, Py_ssize_t depth)
{
    if (depth > DEPTH)
        return DECLINE;
    int r = seen_add(&D->seen, (uintptr_t)obj);
    if (r)
        return r == 1 ? DECLINE : FAILED;
    if (count + 1 > SIZE_LIMIT && count + 1 >= CACHED)
        return DECLINE;
    return put_head(&D->out, (uint64_t)(count + 1), 0x80);
}

static int
dump_value(Dumper *D, PyObject *obj, Py_ssize_t depth)
{
    Out *o = &D->out;
    const Dialect *d = D->d;
    PyTypeObject *t = Py_TYPE(obj);
    int r;

    if (t == &PyUnicode_Type) {
        if (put_piece(o, &d->UNICODE) < 0)
            return FAILED;
        if (PyUnicode_IS_COMPACT_ASCII(obj))
            return put_string(o, d, (const char *)PyUnicode_DATA(obj), PyUnicode_GET_LENGTH(obj));
        PyObject *data = PyUnicode_AsUTF8String(obj);
        if (data == NULL)
            return FAILED;
        r = put_string(o, d, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
        Py_DECREF(data);
        return r;
    }
    if (t == &PyLong_Type)
        return put_int(o, obj);
    if (t == &PyBytes_Type)
        return put_string(o, d, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj));
    if (t == &PyFloat_Type) {
        RESERVE(o, 9);
        o->p[o->len++] = (char)0x84;
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(obj), o->p + o->len, 0) < 0)
            return FAILED;
        o->len += 8;
        return 0;
    }
    if (obj == Py_None)
        return put_piece(o, &d->NONE);
    if (t == &PyBool_Type)
        return put_piece(o, obj == Py_True ? &d->TRUE_ : &d->FALSE_);
    if (t == &PyList_Type || t == &PyTuple_Type) {
        int is_list = t == &PyList_Type;
        Py_ssize_t n = is_list ? PyList_GET_SIZE(obj) : PyTuple_GET_SIZE(obj);
        if ((r = dump_container_head(D, obj, n, depth)) < 0)
            return r;
        if (put_piece(o, is_list ? &d->LIST : &d->TUPLE) < 0)
            return FAILED;
        /* Writing may allocate, and a collection may run a finalizer that changes
         * a list: so the size is read again each time and each item held. */
        for (Py_ssize_t i = 0; i < (is_list ? PyList_GET_SIZE(obj) : n); i++) {
            PyObject *item = is_list ? PyList_GET_ITEM(obj, i) : PyTuple_GET_ITEM(obj, i);
            if (Py_TYPE(item) == &PyLong_Type) {  /* the commonest leaves, inline */
                if ((r = put_int(o, item)) < 0)
                    return r;
                continue;
            }
            Py_INCREF(item);
            r = dump_value(D, item, depth + 1);
            Py_DECREF(item);
            if (r < 0)
                return r;
        }
        return 0;
    }
    if (t == &PyDict_Type) {
        if ((r = dump_container_head(D, obj, PyDict_GET_SIZE(obj), depth)) < 0)
            return r;
        if (put_piece(o, &d->DICT) < 0)
            return FAILED;
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(obj, &pos, &key, &item)) {
            RESERVE(o, 2);
            o->p[o->len++] = 2;
            o->p[o->len++] = (char)0x80;
            Py_INCREF(key);  /* held, as list items are above */
            Py_INCREF(item);
            r = dump_value(D, key, depth + 2);
            if (r == 0)
                r = dump_value(D, item, depth + 2);
            Py_DECREF(key);
            Py_DECREF(item);
            if (r < 0)
                return r;
        }
        return 0;
    }
    if (t == &PySet_Type || t == &PyFrozenSet_Type) {
        if ((r = dump_container_head(D, obj, PySet_GET_SIZE(obj), depth)) < 0)
            return r;
        if (put_piece(o, t == &PySet_Type ? &d->SET : &d->FROZENSET) < 0)
            return FAILED;
        PyObject *it = PyObject_GetIter(obj);
        if (it == NULL)
            return FAILED;
        PyObject *item;
        r = 0;
        while ((item = PyIter_Next(it)) != NULL) {
            r = dump_value(D, item, depth + 1);
            Py_DECREF(item);
            if (r < 0)
                break;
        }
        Py_DECREF(it);
        if (r == 0 && PyErr_Occurred())
            return FAILED;
        return r;
    }
    return DECLINE;
}

/* The dialect for ``vocab``, or NULL: the pure function handles other tables. */
static const Dialect *
dialect_of(PyObject *vocab)
{
    if (vocab == VOCAB_CODES)
        return &dialect_vocab;
    if (PyDict_CheckExact(vocab) && PyDict_GET_SIZE(vocab) == 0)
        return &dialect_plain;
    return NULL;
}

static int
start_dump(Dumper *D, const Dialect *d)
{
    D->d = d;
    seen_init(&D->seen);
    return out_init(&D->out, 256);
}

static PyObject *
finish_dump(Dumper *D, int r)
{
    seen_free(&D->seen);
    if (r < 0) {
        out_drop(&D->out);
        if (r == DECLINE)
            PyErr_SetNone(Fallback);
        return NULL;
    }
    return out_finish(&D->out);
}

static int
dump_all(Dumper *D, PyObject *values)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(values);
    PyObject **items = PySequence_Fast_ITEMS(values);
    for (Py_ssize_t i = 0; i < n; i++) {
        seen_clear(&D->seen);  /* each value is jellied on its own, as Twisted does */
        int r = dump_value(D, items[i], 1);
        if (r < 0)
            return r;
    }
    return 0;
}

#define EXACT_SEQUENCE(x) (PyTuple_CheckExact(x) || PyList_CheckExact(x))

/* The pure function's answer for a call this module does not take natively. */
#define delegate(func, args, nargs) PyObject_Vectorcall((func), (args), (nargs), kwnames)

PyDoc_STRVAR(dumps_values_doc,
"dumps_values(values, vocab) -> bytes\n\n"
"Banana bytes of jelly(v) for each value, one after another, or Fallback.");

static PyObject *
c_dumps_values(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 2 || kwnames != NULL)
        return delegate(py_dumps_values, args, nargs);
    const Dialect *d = dialect_of(args[1]);
    if (d == NULL || !EXACT_SEQUENCE(args[0]))
        return delegate(py_dumps_values, args, nargs);
    Dumper D;
    if (start_dump(&D, d) < 0)
        return NULL;
    return finish_dump(&D, dump_all(&D, args[0]));
}

static int
put_field(Out *o, const Dialect *d, PyObject *field)
{
    if (PyBytes_CheckExact(field))
        return put_string(o, d, PyBytes_AS_STRING(field), PyBytes_GET_SIZE(field));
    if (PyLong_CheckExact(field))
        return put_int(o, field);
    return DECLINE;
}

/* The header of a list of ``count`` elements, then ``head``'s fields. */
static int
put_opening(Out *o, const Dialect *d, PyObject *head, Py_ssize_t count)
{
    int r = put_head(o, (uint64_t)count, 0x80);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(head);
    PyObject **fields = PySequence_Fast_ITEMS(head);
    for (Py_ssize_t i = 0; r == 0 && i < n; i++)
        r = put_field(o, d, fields[i]);
    return r;
}

PyDoc_STRVAR(dumps_doc,
"dumps(head, values, vocab) -> bytes\n\n"
"Banana bytes of head + [jelly(v) for v in values], or Fallback.\n"
"head holds the message's plain fields (bytes and ints).");

static PyObject *
c_dumps(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 3 || kwnames != NULL)
        return delegate(py_dumps, args, nargs);
    PyObject *head = args[0], *values = args[1];
    const Dialect *d = dialect_of(args[2]);
    if (d == NULL || !EXACT_SEQUENCE(head) || !EXACT_SEQUENCE(values)
            || PySequence_Fast_GET_SIZE(head) + PySequence_Fast_GET_SIZE(values) >= CACHED)
        return delegate(py_dumps, args, nargs);
    Dumper D;
    if (start_dump(&D, d) < 0)
        return NULL;
    int r = put_opening(&D.out, d, head,
                        PySequence_Fast_GET_SIZE(head) + PySequence_Fast_GET_SIZE(values));
    if (r == 0)
        r = dump_all(&D, values);
    return finish_dump(&D, r);
}

PyDoc_STRVAR(dumps_head_doc,
"dumps_head(head, more, vocab) -> bytes\n\n"
"Banana bytes that open a list of len(head) + more and hold head's fields.\n"
"Raises EncodeError for a field banana cannot send.");

static PyObject *
c_dumps_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 3 || kwnames != NULL)
        return delegate(py_dumps_head, args, nargs);
    PyObject *head = args[0], *more = args[1];
    const Dialect *d = dialect_of(args[2]);
    if (d == NULL || !EXACT_SEQUENCE(head) || !PyLong_CheckExact(more))
        return delegate(py_dumps_head, args, nargs);
    Py_ssize_t extra = PyLong_AsSsize_t(more);
    if (extra == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return delegate(py_dumps_head, args, nargs);
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(head);
    if (extra < 0 || extra > PY_SSIZE_T_MAX / 2)
        return delegate(py_dumps_head, args, nargs);
    Out o;
    if (out_init(&o, 64) < 0)
        return NULL;
    int r = put_opening(&o, d, head, n + extra);
    if (r < 0) {
        out_drop(&o);
        if (r == DECLINE)  /* the pure function raises the right EncodeError (or returns) */
            return delegate(py_dumps_head, args, nargs);
        return NULL;
    }
    return out_finish(&o);
}

/* ------------------------------------------------------------------ decoding */

typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;        /* bytes in buf: reading past it means "not complete yet" */
    Py_ssize_t n;          /* where string and float bodies must end (<= len) */
    int vocab;             /* banana.VOCAB in use */
    uint64_t size_limit;
} Loader;

typedef struct {
    uint64_t value;
    int big;               /* the prefix is past 64 bits: value is meaningless */
    Py_ssize_t start, end; /* where the prefix digits are */
    unsigned char typ;
    Py_ssize_t after;      /* position after the type byte */
} Head;

static int
header(const Loader *L, Py_ssize_t pos, Head *h)
{
    const unsigned char *buf = L->buf;
    if (pos >= L->len)
        return DECLINE;
    unsigned char b0 = buf[pos];
    h->big = 0;
    h->start = pos;
    if (b0 >= 0x80) {
        h->value = 0;
        h->typ = b0;
        h->end = pos;
        h->after = pos + 1;
        return 0;
    }
    if (pos + 1 >= L->len)
        return DECLINE;
    unsigned char b1 = buf[pos + 1];
    if (b1 >= 0x80) {
        h->value = b0;
        h->typ = b1;
        h->end = pos + 1;
        h->after = pos + 2;
        return 0;
    }
    Py_ssize_t end = pos + 2;
    for (;;) {
        if (end >= L->len)
            return DECLINE;  /* not complete yet */
        if (buf[end] >= 0x80)
            break;
        end++;
        if (end - pos > PREFIX_LIMIT)
            return DECLINE;
    }
    uint64_t value = 0;
    for (Py_ssize_t i = end - 1; i >= pos; i--) {
        if (value >> 57) {
            h->big = 1;
            break;
        }
        value = (value << 7) | buf[i];
    }
    h->value = value;
    h->typ = buf[end];
    h->end = end;
    h->after = end + 1;
    if ((h->typ == 0x80 || h->typ == 0x82) && (h->big || value > L->size_limit))
        return DECLINE;  /* the general path refuses it properly */
    return 0;
}

/* The prefix of ``h`` as a Python int (any size). */
#define MAX_PREFIX 128  /* PREFIX_LIMIT may not be larger (checked on import) */
static PyObject *
head_int(const Loader *L, const Head *h)
{
    if (!h->big)
        return PyLong_FromUnsignedLongLong(h->value);
    /* past 64 bits (rare): regroup the 7-bit digits into bytes, spell them in hex */
    unsigned char bytes[MAX_PREFIX];
    char hex[2 * MAX_PREFIX + 1];
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t nb = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (Py_ssize_t i = h->start; i < h->end; i++) {
        acc |= (uint32_t)L->buf[i] << bits;
        bits += 7;
        while (bits >= 8) {
            bytes[nb++] = (unsigned char)(acc & 0xFF);
            acc >>= 8;
            bits -= 8;
        }
    }
    if (bits)
        bytes[nb++] = (unsigned char)acc;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = nb - 1; i >= 0; i--) {
        hex[k++] = digits[bytes[i] >> 4];
        hex[k++] = digits[bytes[i] & 0xF];
    }
    hex[k] = 0;
    return PyLong_FromString(hex, NULL, 16);
}

/* Whether a body of ``size`` bytes starting at ``start`` ends by ``n`` (as start + size <= n). */
static inline int
fits(const Loader *L, Py_ssize_t start, uint64_t size)
{
    return start <= L->n && size <= (uint64_t)(L->n - start);
}

/* A byte string in place: a string element or a vocabulary word. */
typedef struct {
    const char *p;
    Py_ssize_t len;
    PyObject *word;  /* the vocabulary word (borrowed) when it is one */
} Span;

static inline PyObject *
vocab_word(const Loader *L, const Head *h)
{
    if (!L->vocab || h->big || h->value >= MAX_CODE)
        return NULL;
    return vocab_words[h->value];
}

static int
word(const Loader *L, Py_ssize_t pos, Span *w, Py_ssize_t *after)
{
    Head h;
    int r = header(L, pos, &h);
    if (r < 0)
        return r;
    if (h.typ == 0x82) {
        if (!fits(L, h.after, h.value))
            return DECLINE;
        w->p = (const char *)L->buf + h.after;
        w->len = (Py_ssize_t)h.value;
        w->word = NULL;
        *after = h.after + w->len;
        return 0;
    }
    if (h.typ == 0x87) {
        PyObject *found = vocab_word(L, &h);
        if (found != NULL) {
            w->p = PyBytes_AS_STRING(found);
            w->len = PyBytes_GET_SIZE(found);
            w->word = found;
            *after = h.after;
            return 0;
        }
    }
    return DECLINE;
}

static PyObject *
span_bytes(const Span *w)
{
    if (w->word != NULL)
        return Py_NewRef(w->word);
    return PyBytes_FromStringAndSize(w->p, w->len);
}

#define IS(w, lit) ((w).len == (Py_ssize_t)sizeof(lit) - 1 && memcmp((w).p, lit, sizeof(lit) - 1) == 0)

/* Short ASCII texts seen recently (dict keys, mostly), so a message of many
 * records builds each key once: a direct-mapped table of str objects. A str
 * is immutable, so handing out the same one again is only visible to `is`. */
#define TEXT_CACHE 512
#define TEXT_CACHE_LEN 32
static PyObject *text_cache[TEXT_CACHE];

/* utf-8 text, or DECLINE when it is not valid utf-8 */
static int
decode_text(const char *p, Py_ssize_t len, PyObject **result)
{
    PyObject **slot = NULL;
    if (len <= TEXT_CACHE_LEN) {
        uint32_t h = 2166136261u;
        unsigned char high = 0;
        for (Py_ssize_t i = 0; i < len; i++) {
            high |= (unsigned char)p[i];
            h = (h ^ (unsigned char)p[i]) * 16777619u;
        }
        if (!(high & 0x80))  /* ASCII: its str holds the same bytes */
            slot = &text_cache[(h ^ (h >> 15)) & (TEXT_CACHE - 1)];
    }
    if (slot != NULL) {
        PyObject *known = *slot;
        if (known != NULL && PyUnicode_GET_LENGTH(known) == len
                && memcmp(PyUnicode_DATA(known), p, len) == 0) {
            *result = Py_NewRef(known);
            return 0;
        }
    }
    PyObject *text = PyUnicode_DecodeUTF8(p, len, NULL);
    if (text != NULL && slot != NULL)
        Py_XSETREF(*slot, Py_NewRef(text));
    if (text == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return DECLINE;
        }
        return FAILED;
    }
    *result = text;
    return 0;
}

static int load_value(const Loader *L, Py_ssize_t pos, Py_ssize_t depth, PyObject **result,
                      Py_ssize_t *after);

/* DECLINE for a TypeError (unhashable), FAILED for anything else */
static int
type_error_declines(void)
{
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        return DECLINE;
    }
    return FAILED;
}

static int
load_tagged(const Loader *L, uint64_t count, Py_ssize_t pos, Py_ssize_t depth, PyObject **result,
            Py_ssize_t *after)
{
    if (count == 0 || depth > DEPTH)
        return DECLINE;
    Span tag;
    int r = word(L, pos, &tag, &pos);
    if (r < 0)
        return r;
    depth += 1;
    uint64_t items = count - 1;
    int kind = IS(tag, "list") ? 1 : IS(tag, "tuple") ? 2 : IS(tag, "set") ? 3
               : IS(tag, "frozenset") ? 4 : IS(tag, "dictionary") ? 5 : 0;
    if (kind && items > (uint64_t)(L->len - pos))
        return DECLINE;  /* each element takes a byte at least: it cannot be complete */
    if (kind >= 1 && kind <= 4) {
        Py_ssize_t n = (Py_ssize_t)items;
        PyObject *seq = kind == 2 ? PyTuple_New(n) : PyList_New(n);
        if (seq == NULL)
            return FAILED;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item;
            if ((r = load_value(L, pos, depth, &item, &pos)) < 0) {
                Py_DECREF(seq);
                return r;
            }
            if (kind == 2)
                PyTuple_SET_ITEM(seq, i, item);
            else
                PyList_SET_ITEM(seq, i, item);
        }
        if (kind <= 2) {
            *result = seq;
        }
        else {
            *result = kind == 3 ? PySet_New(seq) : PyFrozenSet_New(seq);
            Py_DECREF(seq);
            if (*result == NULL)
                return type_error_declines();
        }
        *after = pos;
        return 0;
    }
    if (kind == 5) {
        PyObject *dict = PyDict_New();
        if (dict == NULL)
            return FAILED;
        for (uint64_t i = 0; i < items; i++) {
            PyObject *key, *item;
            if (pos + 1 >= L->len || L->buf[pos] != 2 || L->buf[pos + 1] != 0x80) {
                Py_DECREF(dict);  /* each entry is a 2-list */
                return DECLINE;
            }
            if ((r = load_value(L, pos + 2, depth, &key, &pos)) < 0) {
                Py_DECREF(dict);
                return r;
            }
            if ((r = load_value(L, pos, depth, &item, &pos)) < 0) {
                Py_DECREF(key);
                Py_DECREF(dict);
                return r;
            }
            r = PyDict_SetItem(dict, key, item);
            Py_DECREF(key);
            Py_DECREF(item);
            if (r < 0) {
                Py_DECREF(dict);
                return type_error_declines();
            }
        }
        *result = dict;
        *after = pos;
        return 0;
    }
    if (count == 2 && IS(tag, "unicode")) {
        Span text;
        if ((r = word(L, pos, &text, after)) < 0)
            return r;
        return decode_text(text.p, text.len, result);
    }
    if (count == 1 && IS(tag, "None")) {
        *result = Py_NewRef(Py_None);
        *after = pos;
        return 0;
    }
    if (count == 2 && IS(tag, "boolean")) {
        Span flag;
        if ((r = word(L, pos, &flag, after)) < 0)
            return r;
        if (IS(flag, "true")) {
            *result = Py_NewRef(Py_True);
            return 0;
        }
        if (IS(flag, "false")) {
            *result = Py_NewRef(Py_False);
            return 0;
        }
    }
    return DECLINE;
}

static const char UNICODE_HEAD[] = "\x07\x82unicode";  /* 'unicode' is no vocabulary word */

static int
load_value(const Loader *L, Py_ssize_t pos, Py_ssize_t depth, PyObject **result, Py_ssize_t *after)
{
    const unsigned char *buf = L->buf;
    Head h;
    if (pos >= L->len)
        return DECLINE;
    unsigned char b0 = buf[pos];
    if (b0 >= 0x80) {
        h.value = 0;
        h.big = 0;
        h.typ = b0;
        pos += 1;
    }
    else {
        if (pos + 1 >= L->len)
            return DECLINE;
        if (buf[pos + 1] >= 0x80) {
            h.value = b0;
            h.big = 0;
            h.typ = buf[pos + 1];
            pos += 2;
        }
        else {
            int r = header(L, pos, &h);
            if (r < 0)
                return r;
            pos = h.after;
        }
    }
    switch (h.typ) {
    case 0x82:
        if (!fits(L, pos, h.value))
            return DECLINE;
        *result = PyBytes_FromStringAndSize((const char *)buf + pos, (Py_ssize_t)h.value);
        if (*result == NULL)
            return FAILED;
        *after = pos + (Py_ssize_t)h.value;
        return 0;
    case 0x80:
        /* the common short text, read directly: ['unicode', <string under 128 bytes>] */
        if (h.value == 2 && L->len - pos >= 9 && buf[pos] == 0x07 && buf[pos + 1] == 0x82
                && memcmp(buf + pos + 2, UNICODE_HEAD + 2, 7) == 0) {
            if (pos + 9 >= L->len)
                return DECLINE;
            unsigned char length = buf[pos + 9];
            if (length < 0x80) {
                if (pos + 10 >= L->len)
                    return DECLINE;
                if (buf[pos + 10] == 0x82) {
                    if (pos + 11 + length > L->n)
                        return DECLINE;
                    *after = pos + 11 + length;
                    return decode_text((const char *)buf + pos + 11, length, result);
                }
            }
        }
        return load_tagged(L, h.value, pos, depth, result, after);
    case 0x81:
    case 0x85:
        *result = h.big ? head_int(L, &h) : PyLong_FromUnsignedLongLong(h.value);
        if (*result == NULL)
            return FAILED;
        *after = pos;
        return 0;
    case 0x87: {
        PyObject *found = vocab_word(L, &h);
        if (found == NULL)
            return DECLINE;
        *result = Py_NewRef(found);
        *after = pos;
        return 0;
    }
    case 0x83:
    case 0x86:
        if (h.big || h.value > (uint64_t)INT64_MAX) {
            PyObject *mag = head_int(L, &h);
            if (mag == NULL)
                return FAILED;
            *result = PyNumber_Negative(mag);
            Py_DECREF(mag);
        }
        else {
            *result = PyLong_FromLongLong(-(long long)h.value);
        }
        if (*result == NULL)
            return FAILED;
        *after = pos;
        return 0;
    case 0x84: {
        if (pos + 8 > L->n)
            return DECLINE;
        double x = PyFloat_Unpack8((const char *)buf + pos, 0);
        if (x == -1.0 && PyErr_Occurred())
            return FAILED;
        *result = PyFloat_FromDouble(x);
        if (*result == NULL)
            return FAILED;
        *after = pos + 8;
        return 0;
    }
    default:
        return DECLINE;
    }
}

/* A Python int argument as a uint64 limit: negative -> -1 (as a flag), huge -> UINT64_MAX. */
static int
as_limit(PyObject *obj, uint64_t *value, int *negative)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return FAILED;
    *negative = overflow < 0 || (!overflow && v < 0);
    *value = overflow > 0 ? UINT64_MAX : (*negative ? 0 : (uint64_t)v);
    return 0;
}

/* Built(value), stealing the reference: allocated and filled here, as
 * Built.__init__ would (it only stores ``value`` in its one slot). */
static PyObject *
new_built(PyObject *value)
{
    PyTypeObject *type = (PyTypeObject *)Built;
    PyObject *built = type->tp_alloc(type, 0);
    if (built == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    *(PyObject **)((char *)built + built_value_offset) = value;
    return built;
}

static PyObject *
load_message(const Loader *L, Py_ssize_t pos, uint64_t max_items)
{
    Py_ssize_t start = pos;
    Head h;
    Span command;
    int r;
    if (header(L, pos, &h) < 0 || h.typ != 0x80)
        Py_RETURN_NONE;
    if (word(L, h.after, &command, &pos) < 0)
        Py_RETURN_NONE;
    int fields, payloads;
    if (IS(command, "message") || IS(command, "cachemessage")) {
        fields = 4;
        payloads = 2;
    }
    else if (IS(command, "answer")) {
        fields = 1;
        payloads = 1;
    }
    else {
        Py_RETURN_NONE;
    }
    if (h.value != (uint64_t)(1 + fields + payloads))
        Py_RETURN_NONE;
    PyObject *message = PyList_New(1 + fields + payloads);
    if (message == NULL)
        return NULL;
    PyObject *item = span_bytes(&command);
    if (item == NULL)
        goto failed;
    PyList_SET_ITEM(message, 0, item);
    for (int i = 1; i <= fields; i++) {
        if ((r = header(L, pos, &h)) < 0)
            goto declined;
        if (h.typ == 0x81) {
            item = head_int(L, &h);
            pos = h.after;
        }
        else {
            Span field;
            if ((r = word(L, pos, &field, &pos)) < 0)
                goto declined;
            item = span_bytes(&field);
        }
        if (item == NULL)
            goto failed;
        PyList_SET_ITEM(message, i, item);
    }
    for (int i = 1 + fields; i <= fields + payloads; i++) {
        PyObject *value;
        r = load_value(L, pos, 1, &value, &pos);
        if (r == FAILED)
            goto failed;
        if (r < 0)
            goto declined;
        item = new_built(value);
        if (item == NULL)
            goto failed;
        PyList_SET_ITEM(message, i, item);
    }
    if ((uint64_t)(pos - start) > max_items)  /* every element takes at least one byte */
        goto declined;
    PyObject *found = PyTuple_New(2);
    PyObject *end = PyLong_FromSsize_t(pos);
    if (found == NULL || end == NULL) {
        Py_XDECREF(found);
        Py_XDECREF(end);
        goto failed;
    }
    PyTuple_SET_ITEM(found, 0, message);
    PyTuple_SET_ITEM(found, 1, end);
    return found;
declined:
    Py_DECREF(message);
    Py_RETURN_NONE;
failed:
    Py_DECREF(message);
    return NULL;
}

PyDoc_STRVAR(loads_doc,
"loads(buf, pos, n, vocab, size_limit, max_items) -> (message, end) or None\n\n"
"One PB message at buf[pos:n]: (message, end), or None to decline.\n"
"Only message, cachemessage and answer are taken; their payloads come back\n"
"as Built values.");

static PyObject *
c_loads(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 6 || kwnames != NULL || !PyBytes_CheckExact(args[0]) || !PyLong_CheckExact(args[1])
            || !PyLong_CheckExact(args[2]) || !(args[3] == Py_None || args[3] == VOCAB)
            || !PyLong_CheckExact(args[4]) || !PyLong_CheckExact(args[5]))
        return delegate(py_loads, args, nargs);
    Loader L;
    int negative;
    uint64_t max_items;
    if (as_limit(args[4], &L.size_limit, &negative) < 0)
        return NULL;
    if (negative || L.size_limit < (1 << 14))  /* the one- and two-byte shortcuts assume it */
        Py_RETURN_NONE;
    if (as_limit(args[5], &max_items, &negative) < 0)
        return NULL;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t n = PyLong_AsSsize_t(args[2]);
    L.buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    L.len = PyBytes_GET_SIZE(args[0]);
    if (PyErr_Occurred() || negative || pos < 0 || pos > L.len || n < pos || n > L.len) {
        PyErr_Clear();  /* odd arguments: the pure function says what they give */
        return delegate(py_loads, args, nargs);
    }
    L.n = n;
    L.vocab = args[3] != Py_None;
    return load_message(&L, pos, max_items);
}

/* ------------------------------------------------------------------ module */

static PyMethodDef methods[] = {
    {"dumps", (PyCFunction)(void (*)(void))c_dumps, METH_FASTCALL | METH_KEYWORDS, dumps_doc},
    {"dumps_head", (PyCFunction)(void (*)(void))c_dumps_head, METH_FASTCALL | METH_KEYWORDS, dumps_head_doc},
    {"dumps_values", (PyCFunction)(void (*)(void))c_dumps_values, METH_FASTCALL | METH_KEYWORDS, dumps_values_doc},
    {"loads", (PyCFunction)(void (*)(void))c_loads, METH_FASTCALL | METH_KEYWORDS, loads_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pbgreen._ccodec",
    "The plain-data codec of pbgreen._pycodec, compiled (use pbgreen.plaincodec).",
    -1, methods,
};

static int
get(PyObject *module, const char *name, PyObject **into)
{
    *into = PyObject_GetAttrString(module, name);
    return *into == NULL ? -1 : 0;
}

static int
get_size(PyObject *module, const char *name, Py_ssize_t *into)
{
    PyObject *value = PyObject_GetAttrString(module, name);
    if (value == NULL)
        return -1;
    *into = PyLong_AsSsize_t(value);
    Py_DECREF(value);
    return *into == -1 && PyErr_Occurred() ? -1 : 0;
}

static int
piece_from(PyObject *tags, const char *name, Piece *piece)
{
    PyObject *value = PyObject_GetAttrString(tags, name);
    if (value == NULL)
        return -1;
    if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) > (Py_ssize_t)sizeof(piece->b)) {
        Py_DECREF(value);
        PyErr_Format(PyExc_ImportError, "pbgreen._ccodec: tag %s is not short bytes", name);
        return -1;
    }
    piece->n = PyBytes_GET_SIZE(value);
    memcpy(piece->b, PyBytes_AS_STRING(value), piece->n);
    Py_DECREF(value);
    return 0;
}

static int
dialect_from(PyObject *pure, PyObject *vocab, Dialect *d)
{
    PyObject *tags = PyObject_CallMethod(pure, "_Tags", "O", vocab);
    if (tags == NULL)
        return -1;
    int r = piece_from(tags, "UNICODE", &d->UNICODE) || piece_from(tags, "LIST", &d->LIST)
            || piece_from(tags, "TUPLE", &d->TUPLE) || piece_from(tags, "DICT", &d->DICT)
            || piece_from(tags, "SET", &d->SET) || piece_from(tags, "FROZENSET", &d->FROZENSET)
            || piece_from(tags, "NONE", &d->NONE) || piece_from(tags, "TRUE", &d->TRUE_)
            || piece_from(tags, "FALSE", &d->FALSE_);
    Py_DECREF(tags);
    d->use_vocab = PyDict_GET_SIZE(vocab) > 0;
    return r ? -1 : 0;
}

/* The vocabulary tables, from banana's (encoding: word -> code; decoding: number -> word). */
static int
vocab_tables(void)
{
    if (!PyDict_CheckExact(VOCAB_CODES) || !PyDict_CheckExact(VOCAB)
            || PyDict_GET_SIZE(VOCAB_CODES) > MAX_WORDS) {
        PyErr_SetString(PyExc_ImportError, "pbgreen._ccodec: unexpected banana vocabulary");
        return -1;
    }
    vocab_refs = PyList_New(0);
    if (vocab_refs == NULL)
        return -1;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    memset(vocab_first, -1, sizeof(vocab_first));
    vocab_min_len = PY_SSIZE_T_MAX;
    vocab_max_len = 0;
    while (PyDict_Next(VOCAB_CODES, &pos, &key, &value)) {
        if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(value) || PyBytes_GET_SIZE(key) == 0
                || PyList_Append(vocab_refs, key) < 0 || PyList_Append(vocab_refs, value) < 0) {
            PyErr_SetString(PyExc_ImportError, "pbgreen._ccodec: unexpected banana vocabulary");
            return -1;
        }
        VocabEntry *e = &vocab_entries[vocab_count];
        e->word = PyBytes_AS_STRING(key);
        e->wlen = PyBytes_GET_SIZE(key);
        e->code = PyBytes_AS_STRING(value);
        e->clen = PyBytes_GET_SIZE(value);
        if (e->wlen < vocab_min_len)
            vocab_min_len = e->wlen;
        if (e->wlen > vocab_max_len)
            vocab_max_len = e->wlen;
        unsigned char c = (unsigned char)e->word[0];
        if (e->wlen > INDEX_LEN || c >= 128) {
            PyErr_SetString(PyExc_ImportError, "pbgreen._ccodec: a vocabulary word it cannot index");
            return -1;
        }
        vocab_next[vocab_count] = vocab_first[e->wlen][c];
        vocab_first[e->wlen][c] = (signed char)vocab_count;
        vocab_count++;
    }
    pos = 0;
    while (PyDict_Next(VOCAB, &pos, &key, &value)) {
        Py_ssize_t code = PyLong_Check(key) ? PyLong_AsSsize_t(key) : -1;
        if (code < 0 || code >= MAX_CODE || !PyBytes_CheckExact(value)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ImportError, "pbgreen._ccodec: unexpected banana vocabulary");
            return -1;
        }
        vocab_words[code] = Py_NewRef(value);
    }
    return 0;
}

PyMODINIT_FUNC
PyInit__ccodec(void)
{
    /* Exceptions: Fallback comes from _pycodec and EncodeError from banana, as
     * in the pure codec; neither codec raises ProtocolError or BananaError (a
     * declined message goes to banana's general decoder, which does). */
    PyObject *banana = NULL, *pure = NULL, *module = NULL;
    banana = PyImport_ImportModule("pbgreen.banana");
    pure = PyImport_ImportModule("pbgreen._pycodec");
    if (banana == NULL || pure == NULL)
        goto done;
    if (get(pure, "Fallback", &Fallback) || get(pure, "Built", &Built)
            || get(pure, "dumps", &py_dumps) || get(pure, "dumps_head", &py_dumps_head)
            || get(pure, "dumps_values", &py_dumps_values) || get(pure, "loads", &py_loads)
            || get(banana, "encode_int", &encode_int) || get(banana, "EncodeError", &EncodeError)
            || get(banana, "VOCAB_CODES", &VOCAB_CODES) || get(banana, "VOCAB", &VOCAB)
            || get_size(banana, "SIZE_LIMIT", &SIZE_LIMIT)
            || get_size(banana, "PREFIX_LIMIT", &PREFIX_LIMIT)
            || get_size(pure, "_CACHED", &CACHED) || get_size(pure, "_DEPTH", &DEPTH))
        goto done;
    PyObject *slot = PyObject_GetAttrString(Built, "value");
    if (slot == NULL)
        goto done;
    if (!PyType_Check(Built) || Py_TYPE(slot) != &PyMemberDescr_Type
            || ((PyMemberDescrObject *)slot)->d_member->type != T_OBJECT_EX) {
        Py_DECREF(slot);
        PyErr_SetString(PyExc_ImportError, "pbgreen._ccodec: Built is not a one-slot class");
        goto done;
    }
    built_value_offset = ((PyMemberDescrObject *)slot)->d_member->offset;
    Py_DECREF(slot);
    if (PREFIX_LIMIT < 2 || PREFIX_LIMIT > MAX_PREFIX || SIZE_LIMIT < (1 << 14)) {
        PyErr_SetString(PyExc_ImportError, "pbgreen._ccodec: banana's limits are out of its range");
        goto done;
    }
    PyObject *no_vocab = PyObject_GetAttrString(banana, "NO_VOCAB");
    if (no_vocab == NULL)
        goto done;
    int r = vocab_tables() || dialect_from(pure, VOCAB_CODES, &dialect_vocab)
            || dialect_from(pure, no_vocab, &dialect_plain);
    Py_DECREF(no_vocab);
    if (r)
        goto done;
    module = PyModule_Create(&module_def);
done:
    Py_XDECREF(banana);
    Py_XDECREF(pure);
    return module;
}
