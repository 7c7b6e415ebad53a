/* Native unit tests for the cap logic: `make polyglot-test`, or
 * cc -o caps-test tests/caps_test.c src/caps.c -lm && ./caps-test */
#include "../src/caps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;

#define CHECK(cond)                                                   \
    do {                                                              \
        checks++;                                                     \
        if (!(cond)) {                                                \
            failures++;                                               \
            fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
        }                                                             \
    } while (0)

static int configure(caps_t *c, const char *cfg) {
    char err[256];
    return caps_configure(c, cfg, strlen(cfg), err, sizeof err);
}

static int check(caps_t *c, const char *op, char *reason) {
    return caps_check(c, op, strlen(op), reason, 256);
}

static void test_config(void) {
    caps_t c;
    caps_init(&c);
    CHECK(configure(&c, "") == 0 && c.ncaps == 0 && !c.has_default);
    CHECK(configure(&c, " llm_call_cycle_3 = 0.01 , *=0.02,") == 0);
    CHECK(c.ncaps == 1 && c.caps[0].nanos == 10000000 && c.has_default && c.default_cap == 20000000);
    const char *bad[] = {"x", "x=", "=1", "x=-1", "x=1e10", "x=nan", "x=1usd", "*=1,*=2", "a=1,a=2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(configure(&c, bad[i]) == -1);
    }
    /* A failed configure keeps the previous caps. */
    CHECK(c.ncaps == 1 && c.has_default);
    caps_free(&c);
}

static void test_decisions(void) {
    caps_t c;
    char reason[256];
    caps_init(&c);
    CHECK(configure(&c, "llm_call_cycle_3=0.01,*=0.02") == 0);
    CHECK(check(&c, "llm_call_cycle_3", reason) == 0);
    CHECK(caps_record(&c, "llm_call_cycle_3", 16, 0.006) == 0);
    CHECK(check(&c, "llm_call_cycle_3", reason) == 0);
    CHECK(caps_record(&c, "llm_call_cycle_3", 16, 0.004) == 0);
    /* exactly at the cap: spent >= cap denies */
    CHECK(check(&c, "llm_call_cycle_3", reason) == 1);
    CHECK(strstr(reason, "llm_call_cycle_3 has spent $0.010000 of its $0.010000 cap") != NULL);
    CHECK(caps_record(&c, "other", 5, 0.019) == 0);
    CHECK(check(&c, "other", reason) == 0);
    CHECK(caps_record(&c, "other", 5, 0.001) == 0);
    CHECK(check(&c, "other", reason) == 1);
    CHECK(c.denied == 2);

    /* No default: unlisted operations are never capped. */
    CHECK(configure(&c, "x=0") == 0);
    CHECK(check(&c, "other", reason) == 0);
    CHECK(check(&c, "x", reason) == 1);
    caps_free(&c);
}

static void test_snapshot_round_trip(void) {
    caps_t c, d;
    char err[256], reason[256];
    caps_init(&c);
    caps_init(&d);
    CHECK(configure(&c, "*=0.01") == 0);
    CHECK(configure(&d, "*=0.01") == 0);
    caps_record(&c, "plain", 5, 0.25);
    caps_record(&c, "quo\"te\\ \n\x01 \xc3\xa9", 12, 0.125);
    check(&c, "plain", reason);
    char *snap;
    size_t len;
    CHECK(caps_snapshot(&c, &snap, &len) == 0);
    CHECK(caps_restore(&d, snap, len, err, sizeof err) == 0);
    CHECK(d.nspent == 2 && d.denied == 1);
    CHECK(d.spent[1].name_len == 12 && memcmp(d.spent[1].name, "quo\"te\\ \n\x01 \xc3\xa9", 12) == 0);
    CHECK(d.spent[1].nanos == 125000000);
    char *again;
    size_t again_len;
    CHECK(caps_snapshot(&d, &again, &again_len) == 0);
    CHECK(again_len == len && memcmp(snap, again, len) == 0);
    CHECK(check(&d, "plain", reason) == 1);
    free(snap);
    free(again);

    const char *ok = " { \"spent\" : { \"\\u00e9\\ud83d\\ude00\" : 7 } , \"denied\":0,\"version\":1 } ";
    CHECK(caps_restore(&d, ok, strlen(ok), err, sizeof err) == 0);
    CHECK(d.nspent == 1 && strcmp(d.spent[0].name, "\xc3\xa9\xf0\x9f\x98\x80") == 0 && d.spent[0].nanos == 7);

    const char *bad[] = {
        "", "[]", "{", "{}", "{\"version\":2,\"denied\":0,\"spent\":{}}",
        "{\"version\":1,\"denied\":0}", "{\"version\":1,\"denied\":-1,\"spent\":{}}",
        "{\"version\":1,\"denied\":0,\"spent\":{\"a\":1,\"a\":2}}",
        "{\"version\":1,\"denied\":0,\"spent\":{\"a\":9223372036854775808}}",
        "{\"version\":1,\"denied\":0,\"spent\":{\"a\":01}}",
        "{\"version\":1,\"denied\":0,\"spent\":{\"\\u0000\":1}}",
        "{\"version\":1,\"denied\":0,\"spent\":{\"\\ud800\":1}}",
        "{\"version\":1,\"denied\":0,\"spent\":{},\"extra\":1}",
        "{\"version\":1,\"denied\":0,\"spent\":{}} x",
        "{\"version\":1,\"version\":1,\"denied\":0,\"spent\":{}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = caps_restore(&d, bad[i], strlen(bad[i]), err, sizeof err);
        CHECK(rc == -1);
        if (rc != -1) fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
    /* Rejected snapshots leave the state alone. */
    CHECK(d.nspent == 1 && d.spent[0].nanos == 7);

    char *sum;
    CHECK(caps_summary(&c, &sum, &len) == 0);
    CHECK(strstr(sum, "\"plain\":0.250000000") && strstr(sum, "\"total_usd\":0.375000000") &&
          strstr(sum, "\"denied\":1"));
    free(sum);
    caps_free(&c);
    caps_free(&d);
}

static void test_table_bound(void) {
    caps_t c;
    char reason[256], op[32];
    caps_init(&c);
    CHECK(configure(&c, "*=1") == 0);
    int recorded = 0;
    for (int i = 0; i < CAPS_MAX_OPERATIONS; i++) {
        int n = snprintf(op, sizeof op, "op%d", i);
        recorded += caps_record(&c, op, (size_t)n, 0.001) == 0;
    }
    CHECK(recorded == CAPS_MAX_OPERATIONS);
    CHECK(caps_record(&c, "one-more", 8, 0.001) == -1);
    CHECK(check(&c, "one-more", reason) == 1);
    CHECK(check(&c, "op7", reason) == 0);
    caps_free(&c);
}

int main(void) {
    test_config();
    test_decisions();
    test_snapshot_round_trip();
    test_table_bound();
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures != 0;
}
