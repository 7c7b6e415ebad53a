/* op-cap: the `policy` export of world `hook`, wiring the generated C bindings
 * (hook.h, from `wit-tool c-bindings`) to the cap logic in caps.c.
 *
 * Ownership, as wit-bindgen-c defines it: event arguments belong to us and are freed
 * here; strings and lists we return must be malloc'd, the generated post-return
 * functions free them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caps.h"
#include "hook.h"

static caps_t caps;
static int caps_ready;

static caps_t *state(void) {
    if (!caps_ready) {
        caps_init(&caps);
        caps_ready = 1;
    }
    return &caps;
}

static void log_line(budget_host_plugin_log_level_t level, const char *msg) {
    hook_string_t s = {(uint8_t *)msg, strlen(msg)};
    budget_host_plugin_log_log(level, &s);
}

/* Returns a malloc'd copy (what the post-return functions free). */
static hook_string_t owned(const char *s) {
    hook_string_t out;
    hook_string_dup(&out, s);
    if (!out.ptr && *s) abort();
    return out;
}

void exports_budget_host_plugin_policy_on_start(exports_budget_host_plugin_policy_start_event_t *e) {
    char err[512];
    if (caps_configure(state(), (const char *)e->config.ptr, e->config.len, err, sizeof err) != 0) {
        /* A misconfigured cap must not silently allow: trap, and the host fails closed. */
        log_line(BUDGET_HOST_PLUGIN_TYPES_LEVEL_ERROR, err);
        abort();
    }
    char msg[160];
    snprintf(msg, sizeof msg, "op-cap: %zu operation cap(s)%s", caps.ncaps,
             caps.has_default ? " and a default cap for every other operation" : ", other operations uncapped");
    log_line(BUDGET_HOST_PLUGIN_TYPES_LEVEL_INFO, msg);
    exports_budget_host_plugin_policy_start_event_free(e);
}

void exports_budget_host_plugin_policy_before_call(exports_budget_host_plugin_policy_call_event_t *e,
                                                   exports_budget_host_plugin_policy_call_decision_t *ret) {
    char reason[512];
    if (caps_check(state(), (const char *)e->operation.ptr, e->operation.len, reason, sizeof reason)) {
        ret->tag = BUDGET_HOST_PLUGIN_TYPES_CALL_DECISION_DENY;
        ret->val.deny = owned(reason);
    } else {
        ret->tag = BUDGET_HOST_PLUGIN_TYPES_CALL_DECISION_ALLOW;
    }
    exports_budget_host_plugin_policy_call_event_free(e);
}

void exports_budget_host_plugin_policy_after_call(exports_budget_host_plugin_policy_cost_event_t *e,
                                                  exports_budget_host_plugin_policy_after_decision_t *ret) {
    if (caps_record(state(), (const char *)e->operation.ptr, e->operation.len, e->cost_usd) != 0) {
        log_line(BUDGET_HOST_PLUGIN_TYPES_LEVEL_WARN, "op-cap: operation table full; cost not tracked");
    }
    ret->tag = BUDGET_HOST_PLUGIN_TYPES_AFTER_DECISION_CONTINUE;
    exports_budget_host_plugin_policy_cost_event_free(e);
}

void exports_budget_host_plugin_policy_on_threshold(exports_budget_host_plugin_policy_threshold_event_t *e) {
    exports_budget_host_plugin_policy_threshold_event_free(e);
}

void exports_budget_host_plugin_policy_on_interrupt(exports_budget_host_plugin_policy_interrupt_event_t *e) {
    exports_budget_host_plugin_policy_interrupt_event_free(e);
}

void exports_budget_host_plugin_policy_on_end(exports_budget_host_plugin_policy_end_event_t *e) {
    char *json;
    size_t len;
    if (caps_summary(state(), &json, &len) == 0) {
        hook_string_t event = {(uint8_t *)"op_cap_summary", strlen("op_cap_summary")};
        hook_string_t data = {(uint8_t *)json, len};
        budget_host_plugin_log_emit(&event, &data);
        free(json);
    }
    exports_budget_host_plugin_policy_end_event_free(e);
}

void exports_budget_host_plugin_policy_snapshot(hook_list_u8_t *ret) {
    char *json;
    size_t len;
    /* Out of memory here would silently lose state: trap instead. */
    if (caps_snapshot(state(), &json, &len) != 0) abort();
    ret->ptr = (uint8_t *)json;
    ret->len = len;
}

bool exports_budget_host_plugin_policy_restore(hook_list_u8_t *bytes, hook_string_t *err) {
    char msg[256];
    int rc = caps_restore(state(), (const char *)bytes->ptr, bytes->len, msg, sizeof msg);
    hook_list_u8_free(bytes);
    if (rc != 0) {
        *err = owned(msg);
        return false;
    }
    return true;
}
