/* Per-operation spending caps: config parsing, the spend ledger and its snapshot.
 * Knows nothing of wasm or the generated bindings, so it also builds natively for tests.
 * Money is integer nano-USD, like the host's ledger: sums never drift. */
#ifndef OP_CAP_CAPS_H
#define OP_CAP_CAPS_H

#include <stddef.h>
#include <stdint.h>

/* Bounds the memory a chatty agent can make the hook use. */
#define CAPS_MAX_OPERATIONS 4096

typedef struct {
    char *name;       /* NUL-terminated; operation names never contain NUL (they are WIT strings) */
    size_t name_len;
    int64_t nanos;
} caps_entry_t;

typedef struct {
    caps_entry_t *caps;   /* configured caps, except the default */
    size_t ncaps;
    int has_default;      /* `*=X` given */
    int64_t default_cap;
    caps_entry_t *spent;  /* money spent per operation seen so far */
    size_t nspent;
    uint64_t denied;
} caps_t;

void caps_init(caps_t *c);
void caps_free(caps_t *c);

/* Parses `op=usd,op=usd,*=usd` into c's caps (spending is kept). Returns 0, or -1 with a
 * message in err. */
int caps_configure(caps_t *c, const char *config, size_t len, char *err, size_t errlen);

/* Decides a call: 0 = allow; 1 = deny, with the reason in reason. */
int caps_check(caps_t *c, const char *op, size_t oplen, char *reason, size_t reasonlen);

/* Records a settled call's cost. Returns -1 if the table is full (the cost is then not kept). */
int caps_record(caps_t *c, const char *op, size_t oplen, double cost_usd);

/* JSON snapshot of the spending (not the caps: those come from the command line). The caller
 * frees *out. Returns 0, or -1 on allocation failure. */
int caps_snapshot(const caps_t *c, char **out, size_t *outlen);

/* Replaces the spending with a snapshot. On error returns -1 with a message, state untouched. */
int caps_restore(caps_t *c, const char *data, size_t len, char *err, size_t errlen);

/* JSON object of the summary for the audit log: {"denied":N,"spent_usd":{op:usd,...}}. */
int caps_summary(const caps_t *c, char **out, size_t *outlen);

#endif
