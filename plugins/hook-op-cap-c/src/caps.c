#include "caps.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NANOS_PER_USD 1000000000.0
/* Keeps every sum of nanos far from int64 overflow. */
#define MAX_CAP_USD 1e9

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void caps_init(caps_t *c) { memset(c, 0, sizeof *c); }

static void free_entries(caps_entry_t *e, size_t n) {
    for (size_t i = 0; i < n; i++) free(e[i].name);
    free(e);
}

void caps_free(caps_t *c) {
    free_entries(c->caps, c->ncaps);
    free_entries(c->spent, c->nspent);
    caps_init(c);
}

static caps_entry_t *find(caps_entry_t *e, size_t n, const char *name, size_t len) {
    for (size_t i = 0; i < n; i++)
        if (e[i].name_len == len && memcmp(e[i].name, name, len) == 0) return &e[i];
    return NULL;
}

/* Appends an entry; returns it, or NULL when out of memory. */
static caps_entry_t *push(caps_entry_t **e, size_t *n, const char *name, size_t len, int64_t nanos) {
    caps_entry_t *grown = realloc(*e, (*n + 1) * sizeof **e);
    if (!grown) return NULL;
    *e = grown;
    char *copy = malloc(len + 1);
    if (!copy) return NULL;
    memcpy(copy, name, len);
    copy[len] = '\0';
    caps_entry_t *slot = &(*e)[(*n)++];
    slot->name = copy;
    slot->name_len = len;
    slot->nanos = nanos;
    return slot;
}

static int64_t usd_to_nanos(double usd) { return (int64_t)llround(usd * NANOS_PER_USD); }

static void trim(const char **s, const char **end) {
    while (*s < *end && (**s == ' ' || **s == '\t')) (*s)++;
    while (*end > *s && ((*end)[-1] == ' ' || (*end)[-1] == '\t')) (*end)--;
}

int caps_configure(caps_t *c, const char *config, size_t len, char *err, size_t errlen) {
    caps_entry_t *caps = NULL;
    size_t ncaps = 0;
    int has_default = 0;
    int64_t default_cap = 0;
    const char *p = config, *stop = config + len;
    while (p < stop) {
        const char *comma = memchr(p, ',', (size_t)(stop - p));
        const char *s = p, *e = comma ? comma : stop;
        p = comma ? comma + 1 : stop;
        trim(&s, &e);
        if (s == e) continue;
        const char *eq = NULL;
        for (const char *q = s; q < e; q++)
            if (*q == '=') eq = q; /* last `=`: values never contain one */
        if (!eq) {
            set_err(err, errlen, "op-cap: config entry `%.*s` is not operation=usd", (int)(e - s), s);
            goto fail;
        }
        const char *ks = s, *ke = eq, *vs = eq + 1, *ve = e;
        trim(&ks, &ke);
        trim(&vs, &ve);
        char value[64];
        size_t vlen = (size_t)(ve - vs);
        char *vend = NULL;
        double usd = NAN;
        if (vlen > 0 && vlen < sizeof value) {
            memcpy(value, vs, vlen);
            value[vlen] = '\0';
            usd = strtod(value, &vend);
        }
        if (ks == ke || vend == NULL || *vend != '\0' || !(usd >= 0.0 && usd <= MAX_CAP_USD)) {
            set_err(err, errlen, "op-cap: cap `%.*s` for `%.*s` is not a USD amount in [0, 1e9]",
                    (int)vlen, vs, (int)(ke - ks), ks);
            goto fail;
        }
        if (ke - ks == 1 && *ks == '*') {
            if (has_default) {
                set_err(err, errlen, "op-cap: default cap `*` given twice");
                goto fail;
            }
            has_default = 1;
            default_cap = usd_to_nanos(usd);
        } else if (find(caps, ncaps, ks, (size_t)(ke - ks))) {
            set_err(err, errlen, "op-cap: cap for `%.*s` given twice", (int)(ke - ks), ks);
            goto fail;
        } else if (ncaps >= CAPS_MAX_OPERATIONS || !push(&caps, &ncaps, ks, (size_t)(ke - ks), usd_to_nanos(usd))) {
            set_err(err, errlen, "op-cap: too many caps");
            goto fail;
        }
    }
    free_entries(c->caps, c->ncaps);
    c->caps = caps;
    c->ncaps = ncaps;
    c->has_default = has_default;
    c->default_cap = default_cap;
    return 0;
fail:
    free_entries(caps, ncaps);
    return -1;
}

int caps_check(caps_t *c, const char *op, size_t oplen, char *reason, size_t reasonlen) {
    const caps_entry_t *cap = find(c->caps, c->ncaps, op, oplen);
    if (!cap && !c->has_default) return 0;
    int64_t limit = cap ? cap->nanos : c->default_cap;
    const caps_entry_t *spent = find(c->spent, c->nspent, op, oplen);
    if (!spent && c->nspent >= CAPS_MAX_OPERATIONS) {
        /* A capped operation we could not track afterwards: refuse rather than run uncapped. */
        c->denied++;
        set_err(reason, reasonlen, "op-cap: more than %d distinct operations; cannot track `%.*s`",
                CAPS_MAX_OPERATIONS, (int)oplen, op);
        return 1;
    }
    int64_t so_far = spent ? spent->nanos : 0;
    if (so_far < limit) return 0;
    c->denied++;
    set_err(reason, reasonlen, "op-cap: operation %.*s has spent $%.6f of its $%.6f cap", (int)oplen, op,
            (double)so_far / NANOS_PER_USD, (double)limit / NANOS_PER_USD);
    return 1;
}

int caps_record(caps_t *c, const char *op, size_t oplen, double cost_usd) {
    int64_t nanos = (isfinite(cost_usd) && cost_usd > 0.0) ? usd_to_nanos(fmin(cost_usd, MAX_CAP_USD)) : 0;
    caps_entry_t *e = find(c->spent, c->nspent, op, oplen);
    if (!e) {
        if (c->nspent >= CAPS_MAX_OPERATIONS) return -1;
        e = push(&c->spent, &c->nspent, op, oplen, 0);
        if (!e) return -1;
    }
    e->nanos = (e->nanos > INT64_MAX - nanos) ? INT64_MAX : e->nanos + nanos;
    return 0;
}

/* ---- a growable byte buffer for JSON output ---- */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} sb_t;

static void sb_put(sb_t *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->buf, cap);
        if (!grown) {
            b->oom = 1;
            return;
        }
        b->buf = grown;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_printf(sb_t *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_json_string(sb_t *b, const char *s, size_t n) {
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            sb_put(b, esc, 2);
        } else if (ch < 0x20) {
            sb_printf(b, "\\u%04x", ch);
        } else {
            sb_put(b, (const char *)&ch, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int sb_finish(sb_t *b, char **out, size_t *outlen) {
    if (b->oom || !b->buf) {
        free(b->buf);
        return -1;
    }
    *out = b->buf;
    *outlen = b->len;
    return 0;
}

int caps_snapshot(const caps_t *c, char **out, size_t *outlen) {
    sb_t b = {0};
    sb_printf(&b, "{\"version\":1,\"denied\":%llu,\"spent\":{", (unsigned long long)c->denied);
    for (size_t i = 0; i < c->nspent; i++) {
        if (i) sb_put(&b, ",", 1);
        sb_json_string(&b, c->spent[i].name, c->spent[i].name_len);
        sb_printf(&b, ":%lld", (long long)c->spent[i].nanos);
    }
    sb_put(&b, "}}", 2);
    return sb_finish(&b, out, outlen);
}

int caps_summary(const caps_t *c, char **out, size_t *outlen) {
    sb_t b = {0};
    int64_t total = 0;
    sb_printf(&b, "{\"denied\":%llu,\"spent_usd\":{", (unsigned long long)c->denied);
    for (size_t i = 0; i < c->nspent; i++) {
        if (i) sb_put(&b, ",", 1);
        sb_json_string(&b, c->spent[i].name, c->spent[i].name_len);
        sb_printf(&b, ":%.9f", (double)c->spent[i].nanos / NANOS_PER_USD);
        total = (total > INT64_MAX - c->spent[i].nanos) ? INT64_MAX : total + c->spent[i].nanos;
    }
    sb_printf(&b, "},\"total_usd\":%.9f}", (double)total / NANOS_PER_USD);
    return sb_finish(&b, out, outlen);
}

/* ---- a strict parser for exactly the snapshot's shape ---- */

typedef struct {
    const char *p, *end;
} lex_t;

static void ws(lex_t *l) {
    while (l->p < l->end && (*l->p == ' ' || *l->p == '\t' || *l->p == '\n' || *l->p == '\r')) l->p++;
}

static int eat(lex_t *l, char ch) {
    ws(l);
    if (l->p < l->end && *l->p == ch) {
        l->p++;
        return 1;
    }
    return 0;
}

static int hex4(lex_t *l, unsigned *out) {
    if (l->end - l->p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = *l->p++;
        v <<= 4;
        if (ch >= '0' && ch <= '9') v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F') v |= (unsigned)(ch - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(sb_t *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    sb_put(b, u, n);
}

/* Reads a JSON string into b (NUL-terminated, may be empty). */
static int json_string(lex_t *l, sb_t *b) {
    b->len = 0;
    sb_put(b, "", 0);
    if (!eat(l, '"')) return -1;
    while (l->p < l->end) {
        unsigned char ch = (unsigned char)*l->p++;
        if (ch == '"') return b->oom ? -1 : 0;
        if (ch < 0x20) return -1;
        if (ch != '\\') {
            sb_put(b, (const char *)&ch, 1);
            continue;
        }
        if (l->p >= l->end) return -1;
        char esc = *l->p++;
        const char *simple = strchr("\"\\/bfnrt", esc);
        if (esc != '\0' && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            sb_put(b, &map[simple - "\"\\/bfnrt"], 1);
        } else if (esc == 'u') {
            unsigned cp, lo;
            if (hex4(l, &cp)) return -1;
            if (cp >= 0xD800 && cp < 0xDC00) {
                if (l->end - l->p < 2 || l->p[0] != '\\' || l->p[1] != 'u') return -1;
                l->p += 2;
                if (hex4(l, &lo) || lo < 0xDC00 || lo > 0xDFFF) return -1;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return -1;
            }
            if (cp == 0) return -1; /* names are NUL-free */
            put_utf8(b, cp);
        } else {
            return -1;
        }
    }
    return -1;
}

static int json_uint(lex_t *l, uint64_t max, uint64_t *out) {
    ws(l);
    uint64_t v = 0;
    const char *start = l->p;
    while (l->p < l->end && *l->p >= '0' && *l->p <= '9') {
        unsigned d = (unsigned)(*l->p++ - '0');
        if (v > (max - d) / 10) return -1;
        v = v * 10 + d;
    }
    if (l->p == start || (l->p - start > 1 && *start == '0')) return -1;
    *out = v;
    return 0;
}

int caps_restore(caps_t *c, const char *data, size_t len, char *err, size_t errlen) {
    lex_t l = {data, data + len};
    sb_t key = {0};
    caps_entry_t *spent = NULL;
    size_t nspent = 0;
    uint64_t version = 0, denied = 0;
    int seen_version = 0, seen_denied = 0, seen_spent = 0;
    const char *what = "not a JSON object";

    if (!eat(&l, '{')) goto fail;
    if (!eat(&l, '}')) {
        do {
            what = "malformed key";
            if (json_string(&l, &key) || !eat(&l, ':')) goto fail;
            if (strcmp(key.buf, "version") == 0 && !seen_version) {
                what = "bad version";
                if (json_uint(&l, UINT64_MAX, &version) || version != 1) goto fail;
                seen_version = 1;
            } else if (strcmp(key.buf, "denied") == 0 && !seen_denied) {
                what = "bad denied count";
                if (json_uint(&l, UINT64_MAX, &denied)) goto fail;
                seen_denied = 1;
            } else if (strcmp(key.buf, "spent") == 0 && !seen_spent) {
                what = "bad spent object";
                if (!eat(&l, '{')) goto fail;
                if (!eat(&l, '}')) {
                    do {
                        uint64_t nanos;
                        if (json_string(&l, &key) || !eat(&l, ':') || json_uint(&l, INT64_MAX, &nanos)) goto fail;
                        if (find(spent, nspent, key.buf, key.len) || nspent >= CAPS_MAX_OPERATIONS) goto fail;
                        if (!push(&spent, &nspent, key.buf, key.len, (int64_t)nanos)) goto fail;
                    } while (eat(&l, ','));
                    if (!eat(&l, '}')) goto fail;
                }
                seen_spent = 1;
            } else {
                what = "unknown or repeated key";
                goto fail;
            }
        } while (eat(&l, ','));
        what = "malformed object";
        if (!eat(&l, '}')) goto fail;
    }
    ws(&l);
    what = "trailing data";
    if (l.p != l.end) goto fail;
    what = "missing fields";
    if (!seen_version || !seen_denied || !seen_spent) goto fail;

    free_entries(c->spent, c->nspent);
    c->spent = spent;
    c->nspent = nspent;
    c->denied = denied;
    free(key.buf);
    return 0;
fail:
    set_err(err, errlen, "op-cap: snapshot rejected: %s at byte %zu", what, (size_t)(l.p - data));
    free_entries(spent, nspent);
    free(key.buf);
    return -1;
}
