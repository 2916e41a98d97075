/* The gateway's JSON access line, made in C: what AccessLines._make (access.py) makes.
 *
 * This is an optional extension (setup.py): without a compiler, or with
 * ORCHESTRO_NO_EXTENSIONS set, access.py makes every line in Python. The Python method stays
 * the definition of the line. This one makes the lines whose every value is of the expected
 * type and whose text is ASCII (nearly all of them: a target as sent, an agent, a request
 * id); any other entry it hands to that method, which is given at construction. Both paths
 * therefore write the same line, and tests/observability/test_lines_c.py compares them over
 * any entry (hypothesis).
 *
 * What a line costs: ~14.8k instructions in Python (docs/architecture.md, "The writer's
 * line, trimmed"), a fraction of that here: one pass to size the line, one to write it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <string.h>

/* The entry the gateway puts (route_meter.py, RouteMeter._access_entry): the maker, then */
enum {
    E_MAKER,
    E_CREATED,    /* float: time.time() when answered */
    E_TRACE_ID,   /* int or None */
    E_SPAN_ID,    /* int or None */
    E_REQUEST_ID, /* str or None */
    E_METHOD,     /* str: a token, written as it is */
    E_TARGET,     /* str: the request target as sent */
    E_STATUS,     /* int */
    E_ELAPSED,    /* float: seconds */
    E_AGENT,      /* str */
    E_CLIENT,     /* the peername: a tuple whose first item is the address, a str, or None */
    E_EXTRA,      /* str: the request's log fields, already JSON text */
    E_SIZE
};

typedef struct {
    PyObject_HEAD
    PyObject *head;     /* ', "cell": ..., "instance": ...' */
    PyObject *route;    /* the route's JSON string */
    PyObject *fallback; /* AccessLines._make: the entries this type does not make */
    PyObject *iso_time; /* logs.iso_time: the line's time, made while the millisecond changes */
    PyObject *url_path; /* access.url_path, to decode a path with a percent escape (the
                         * cut at `?` or `#` is made here, as url_path makes it) */
    PyObject *stamp;    /* the last time's text, and its millisecond */
    long long milli;
    int ascii;          /* head and route are ASCII: else every line is the fallback's */
} Lines;

/* A str whose characters are its bytes: the only text the fast path writes. */
static int
is_ascii(PyObject *o)
{
    if (!PyUnicode_CheckExact(o)) {
        return 0;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(o) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    return PyUnicode_IS_ASCII(o);
}

/* One piece of the line: text copied as it is, or escaped as the inside of a JSON string
 * (what json.encoder.encode_basestring writes between its quotes). */
typedef struct {
    const char *text;
    Py_ssize_t size;
    int escape;
} Piece;

static const char HEX[] = "0123456789abcdef";
static PyObject *sixty_four; /* the shift to a trace id's high half; made at import */

/* The size of each ASCII character inside a JSON string: 1, 2 for a short escape (\" \\ \b
 * \f \n \r \t), 6 for \u00XX (the other control characters). */
static unsigned char ESCAPED[128];

static void
init_escaped(void)
{
    for (int c = 0; c < 128; c++) {
        ESCAPED[c] = c < 0x20 ? 6 : 1;
    }
    ESCAPED['"'] = ESCAPED['\\'] = ESCAPED['\b'] = ESCAPED['\f'] = 2;
    ESCAPED['\n'] = ESCAPED['\r'] = ESCAPED['\t'] = 2;
}

static Py_ssize_t
escaped_size(const char *s, Py_ssize_t n)
{
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        size += ESCAPED[(unsigned char)s[i] & 0x7f];
    }
    return size;
}

static char *
write_escaped(char *out, const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (ESCAPED[c & 0x7f] == 1) {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = HEX[c >> 4];
            *out++ = HEX[c & 0xf];
        }
    }
    return out;
}

/* `value` in decimal, as str(int) writes it, at the end of `buffer`; returns its first digit. */
static char *
decimal(char *end, long long value)
{
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    do {
        *--end = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0) {
        *--end = '-';
    }
    return end;
}

#define MAX_PIECES 48

static inline void
literal_piece(Piece *p, const char *text, Py_ssize_t size)
{
    *p = (Piece){text, size, 0};
}

/* A string literal's piece; `p` is evaluated once. */
#define LITERAL(p, s) literal_piece((p), (s), (Py_ssize_t)(sizeof(s) - 1))

static void
text_piece(Piece *p, PyObject *ascii, int escape)
{
    p->text = (const char *)PyUnicode_1BYTE_DATA(ascii);
    p->size = PyUnicode_GET_LENGTH(ascii);
    p->escape = escape;
}

/* `value`'s digits as `{value:0<width>x}` writes them, for 0 <= value < 16**width. */
static void
hex_digits(char *out, unsigned long long value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = HEX[value & 0xf];
        value >>= 4;
    }
}

/* The time's text for `created`, as iso_time gives it: kept while the millisecond repeats
 * (iso_time's text is a function of int(created * 1000) alone). 0: not made here. */
static int
stamp_for(Lines *self, PyObject *created, PyObject **stamp)
{
    double seconds = PyFloat_AS_DOUBLE(created);
    double scaled = seconds * 1000.0;
    if (!isfinite(scaled) || fabs(scaled) >= 9.0e18) {
        return 0;
    }
    long long milli = (long long)scaled; /* int(): toward zero */
    if (self->stamp == NULL || milli != self->milli) {
        PyObject *text = PyObject_CallOneArg(self->iso_time, created);
        if (text == NULL) {
            return -1;
        }
        if (!is_ascii(text)) {
            Py_DECREF(text);
            return 0;
        }
        Py_XSETREF(self->stamp, text);
        self->milli = milli;
    }
    *stamp = self->stamp;
    return 1;
}

/* The line of `entry`, or NULL with no exception set: the fallback makes it. */
static PyObject *
fast_line(Lines *self, PyObject *entry)
{
    if (!self->ascii || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != E_SIZE) {
        return NULL;
    }
    PyObject **item = PySequence_Fast_ITEMS(entry);
    PyObject *created = item[E_CREATED], *trace_id = item[E_TRACE_ID];
    PyObject *span_id = item[E_SPAN_ID], *request_id = item[E_REQUEST_ID];
    PyObject *method = item[E_METHOD], *target = item[E_TARGET], *status = item[E_STATUS];
    PyObject *elapsed = item[E_ELAPSED], *agent = item[E_AGENT], *client = item[E_CLIENT];
    PyObject *extra = item[E_EXTRA];
    /* The address is str(peer[0]) of a tuple, str(peer) of a str (itself, when exact). */
    int no_client = client == Py_None;
    if (PyTuple_CheckExact(client)) {
        if (PyTuple_GET_SIZE(client) == 0) {
            return NULL;
        }
        client = PyTuple_GET_ITEM(client, 0);
        if (!is_ascii(client)) {
            return NULL;
        }
    }
    if (!PyFloat_CheckExact(created) || !PyFloat_CheckExact(elapsed) ||
        !PyLong_CheckExact(status) || !is_ascii(method) || !is_ascii(target) ||
        !is_ascii(agent) || !is_ascii(extra) || (request_id != Py_None && !is_ascii(request_id)) ||
        (!no_client && !is_ascii(client)) ||
        (trace_id != Py_None && !PyLong_CheckExact(trace_id)) ||
        (span_id != Py_None && !PyLong_CheckExact(span_id))) {
        return NULL;
    }
    const char *target_text = (const char *)PyUnicode_1BYTE_DATA(target);
    Py_ssize_t target_size = PyUnicode_GET_LENGTH(target);
    if (target_size == 0 || target_text[0] != '/') {
        return NULL; /* `*`, the authority or the absolute form: rare, url_path's */
    }

    /* The numbers' text. */
    char status_buffer[24], duration_buffer[32], trace[32], span[16];
    int overflow;
    long long code = PyLong_AsLongLongAndOverflow(status, &overflow);
    if (overflow || (code == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return NULL;
    }
    char *status_end = status_buffer + sizeof status_buffer;
    char *status_text = decimal(status_end, code);
    Py_ssize_t status_size = status_end - status_text;
    /* int(elapsed * 1e6 + 0.5), floor-divided as Python does (setup.py builds this file
     * without floating-point contraction: the same two roundings as Python's). */
    double micros_f = PyFloat_AS_DOUBLE(elapsed) * 1e6;
    micros_f = micros_f + 0.5;
    if (!isfinite(micros_f) || fabs(micros_f) >= 9.0e15) {
        return NULL;
    }
    long long micros = (long long)micros_f, whole = micros / 1000, rest = micros % 1000;
    if (rest < 0) {
        rest += 1000;
        whole -= 1;
    }
    char *duration_end = duration_buffer + sizeof duration_buffer;
    char *duration = duration_end - 4; /* whole, then ".ddd" */
    duration[0] = '.';
    duration[1] = (char)('0' + rest / 100);
    duration[2] = (char)('0' + rest / 10 % 10);
    duration[3] = (char)('0' + rest % 10);
    duration = decimal(duration, whole);
    Py_ssize_t duration_size = duration_end - duration;
    int trace_size = 0, span_size = 0;
    if (trace_id != Py_None) {
        PyObject *high_part = PyNumber_Rshift(trace_id, sixty_four);
        if (high_part == NULL) {
            PyErr_Clear();
            return NULL;
        }
        unsigned long long high = PyLong_AsUnsignedLongLong(high_part); /* < 0: an error */
        Py_DECREF(high_part);
        if (high == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
        hex_digits(trace, high, 16);
        hex_digits(trace + 16, PyLong_AsUnsignedLongLongMask(trace_id), 16);
        trace_size = 32;
        if (span_id != Py_None) {
            unsigned long long value = PyLong_AsUnsignedLongLong(span_id);
            if (value == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                return NULL;
            }
            hex_digits(span, value, 16);
            span_size = 16;
        }
    }

    /* url.path: the target up to its query (or fragment), decoded by url_path when it holds
     * a percent escape. */
    Py_ssize_t path_size = target_size;
    const char *cut = memchr(target_text, '?', (size_t)target_size);
    if (cut == NULL) {
        cut = memchr(target_text, '#', (size_t)target_size);
    }
    if (cut != NULL) {
        path_size = cut - target_text;
    }
    PyObject *decoded = NULL; /* owned, released below */
    const char *path_text = target_text;
    if (memchr(target_text, '%', (size_t)path_size) != NULL) {
        decoded = PyObject_CallOneArg(self->url_path, target);
        if (decoded == NULL) {
            PyErr_Clear();
            return NULL;
        }
        if (!is_ascii(decoded)) {
            Py_DECREF(decoded);
            return NULL;
        }
        path_text = (const char *)PyUnicode_1BYTE_DATA(decoded);
        path_size = PyUnicode_GET_LENGTH(decoded);
    }
    PyObject *stamp;
    int made = stamp_for(self, created, &stamp);
    if (made <= 0) {
        Py_XDECREF(decoded);
        if (made < 0) {
            PyErr_Clear(); /* the fallback calls iso_time again, and says what failed */
        }
        return NULL;
    }

    Piece pieces[MAX_PIECES], *p = pieces;
    LITERAL(p++, "{\"time\": \"");
    text_piece(p++, stamp, 0);
    LITERAL(p++, "\", \"level\": \"info\", \"logger\": \"orchestro.access\", \"message\": \"");
    text_piece(p++, method, 0);
    LITERAL(p++, " ");
    text_piece(p++, target, 1);
    LITERAL(p++, " ");
    *p++ = (Piece){status_text, status_size, 0};
    LITERAL(p++, " ");
    *p++ = (Piece){duration, duration_size, 0};
    LITERAL(p++, "ms \\\"");
    text_piece(p++, agent, 1);
    LITERAL(p++, "\\\"\"");
    text_piece(p++, self->head, 0);
    if (trace_size) {
        LITERAL(p++, ", \"trace_id\": \"");
        *p++ = (Piece){trace, trace_size, 0};
        LITERAL(p++, "\"");
        if (span_size) {
            LITERAL(p++, ", \"span_id\": \"");
            *p++ = (Piece){span, span_size, 0};
            LITERAL(p++, "\"");
        }
    }
    if (request_id != Py_None) {
        LITERAL(p++, ", \"request_id\": \"");
        text_piece(p++, request_id, 1);
        LITERAL(p++, "\"");
    }
    LITERAL(p++, ", \"http.request.method\": \"");
    text_piece(p++, method, 0);
    LITERAL(p++, "\", \"url.path\": \"");
    *p++ = (Piece){path_text, path_size, 1};
    LITERAL(p++, "\", \"http.route\": ");
    text_piece(p++, self->route, 0);
    LITERAL(p++, ", \"http.response.status_code\": ");
    *p++ = (Piece){status_text, status_size, 0};
    LITERAL(p++, ", \"duration_ms\": ");
    *p++ = (Piece){duration, duration_size, 0};
    LITERAL(p++, ", \"client.address\": ");
    if (no_client) {
        LITERAL(p++, "null");
    }
    else {
        LITERAL(p++, "\"");
        text_piece(p++, client, 1);
        LITERAL(p++, "\"");
    }
    text_piece(p++, extra, 0);
    LITERAL(p++, "}");

    Py_ssize_t size = 0;
    for (Piece *q = pieces; q < p; q++) {
        if (q->escape) {
            Py_ssize_t escaped = escaped_size(q->text, q->size);
            q->escape = escaped != q->size; /* nothing to escape: copied as it is */
            size += escaped;
        }
        else {
            size += q->size;
        }
    }
    PyObject *line = PyUnicode_New(size, 127);
    if (line != NULL) {
        char *out = (char *)PyUnicode_1BYTE_DATA(line);
        for (Piece *q = pieces; q < p; q++) {
            if (q->escape) {
                out = write_escaped(out, q->text, q->size);
            }
            else {
                memcpy(out, q->text, (size_t)q->size);
                out += q->size;
            }
        }
    }
    else {
        PyErr_Clear(); /* out of memory: the fallback tries, and raises */
    }
    Py_XDECREF(decoded); /* after the copy: path_text points into it */
    return line;
}

static PyObject *
Lines_make(Lines *self, PyObject *entry)
{
    if (self->fallback == NULL) {
        PyErr_SetString(PyExc_TypeError, "Lines.make: Lines.__init__ was not called");
        return NULL;
    }
    PyObject *line = fast_line(self, entry);
    if (line != NULL) {
        return line;
    }
    return PyObject_CallOneArg(self->fallback, entry);
}

static int
Lines_init(Lines *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"head", "route", "fallback", "iso_time", "url_path", NULL};
    PyObject *head, *route, *fallback, *iso_time, *url_path;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "UUOOO:Lines", names, &head, &route,
                                     &fallback, &iso_time, &url_path)) {
        return -1;
    }
    if (self->fallback != NULL) {
        /* make() reads head and route after calling out to Python (iso_time, url_path):
         * they must not change under it. */
        PyErr_SetString(PyExc_TypeError, "Lines is initialised once");
        return -1;
    }
    Py_XSETREF(self->head, Py_NewRef(head));
    Py_XSETREF(self->route, Py_NewRef(route));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    Py_XSETREF(self->iso_time, Py_NewRef(iso_time));
    Py_XSETREF(self->url_path, Py_NewRef(url_path));
    Py_CLEAR(self->stamp);
    self->ascii = is_ascii(head) && is_ascii(route);
    return 0;
}

static int
Lines_traverse(Lines *self, visitproc visit, void *arg)
{
    Py_VISIT(self->head);
    Py_VISIT(self->route);
    Py_VISIT(self->fallback);
    Py_VISIT(self->iso_time);
    Py_VISIT(self->url_path);
    Py_VISIT(self->stamp);
    return 0;
}

static int
Lines_clear(Lines *self)
{
    Py_CLEAR(self->head);
    Py_CLEAR(self->route);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->iso_time);
    Py_CLEAR(self->url_path);
    Py_CLEAR(self->stamp);
    return 0;
}

static void
Lines_dealloc(Lines *self)
{
    PyObject_GC_UnTrack(self);
    Lines_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Lines_methods[] = {
    {"make", (PyCFunction)Lines_make, METH_O,
     "make(entry)\n--\n\nThe access line of one entry (AccessLines._make's, whichever makes it)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LinesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "orchestro.observability._lines.Lines",
    .tp_doc = PyDoc_STR("Lines(head, route, fallback, iso_time, url_path)\n--\n\n"
                        "The access lines of one route, made in C (see access.AccessLines)."),
    .tp_basicsize = sizeof(Lines),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lines_init,
    .tp_dealloc = (destructor)Lines_dealloc,
    .tp_traverse = (traverseproc)Lines_traverse,
    .tp_clear = (inquiry)Lines_clear,
    .tp_methods = Lines_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "orchestro.observability._lines",
    .m_doc = "The gateway's JSON access line, made in C (see access.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__lines(void)
{
    if (PyType_Ready(&LinesType) < 0) {
        return NULL;
    }
    if (sixty_four == NULL && (sixty_four = PyLong_FromLong(64)) == NULL) {
        return NULL;
    }
    init_escaped();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Lines", (PyObject *)&LinesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
