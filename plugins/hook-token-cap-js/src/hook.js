// token-cap: a per-call cap on output tokens for expensive models, plus a model
// deny-list. Hooks may only tighten, so every decision here is allow, deny or a
// lower max-tokens.
//
// Config (`--hook hook-token-cap-js.wasm=CONFIG`): `key=value` pairs joined by `;`
//   max-tokens=N       cap for expensive models (default 512)
//   expensive=P1,P2    model patterns that get the cap (default: gpt-4o,gpt-4.1,claude-sonnet*,claude-opus*,o1*,o3*)
//   deny=P1,P2         model patterns whose calls are refused (default: none)
//   tighten-at=F       once a threshold >= F (fraction of the limit) is crossed,
//                      cap every model, not only expensive ones (default: never)
// A pattern is an exact model name, or a prefix ending in `*`; matching ignores case.

import { log, emit } from 'budget-host:plugin/log@0.1.0';

const DEFAULTS = {
  maxTokens: 512,
  // The pricey tiers of the host's price table; their -mini/-nano/haiku siblings are not.
  expensive: ['gpt-4o', 'gpt-4.1', 'claude-sonnet*', 'claude-opus*', 'o1*', 'o3*'],
  deny: [],
  tightenAt: null,
};

let config = { ...DEFAULTS };
// Run state, kept across checkpoints: counters and whether the cap now covers every model.
let state = { calls: 0, denied: 0, limited: 0, tightened: false };

function parsePatterns(value) {
  return value
    .split(',')
    .map((p) => p.trim().toLowerCase())
    .filter((p) => p.length > 0);
}

export function parseConfig(text) {
  const cfg = { ...DEFAULTS };
  for (const raw of text.split(';')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    if (eq < 0) throw new Error(`token-cap: config entry \`${entry}\` is not key=value`);
    const key = entry.slice(0, eq).trim();
    const value = entry.slice(eq + 1).trim();
    switch (key) {
      case 'max-tokens': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1 || n > 0xffffffff) {
          throw new Error(`token-cap: max-tokens \`${value}\` is not a positive integer`);
        }
        cfg.maxTokens = n;
        break;
      }
      case 'expensive':
        cfg.expensive = parsePatterns(value);
        break;
      case 'deny':
        cfg.deny = parsePatterns(value);
        break;
      case 'tighten-at': {
        const f = Number(value);
        if (value === '' || !Number.isFinite(f) || f <= 0 || f > 1) {
          throw new Error(`token-cap: tighten-at \`${value}\` is not a fraction in (0, 1]`);
        }
        cfg.tightenAt = f;
        break;
      }
      default:
        throw new Error(`token-cap: unknown config key \`${key}\``);
    }
  }
  return cfg;
}

function matches(patterns, model) {
  const m = model.toLowerCase();
  return patterns.some((p) => (p.endsWith('*') ? m.startsWith(p.slice(0, -1)) : m === p));
}

export const policy = {
  onStart(e) {
    try {
      config = parseConfig(e.config);
    } catch (err) {
      // A misconfigured policy must not silently allow: trap, and the host fails closed.
      log('error', err.message);
      throw err;
    }
    log(
      'info',
      `token-cap: cap ${config.maxTokens} tokens on [${config.expensive.join(', ')}]` +
        (config.deny.length ? `, deny [${config.deny.join(', ')}]` : '') +
        (config.tightenAt !== null ? `, all models from ${config.tightenAt * 100}% spent` : ''),
    );
  },

  beforeCall(e) {
    state.calls += 1;
    if (matches(config.deny, e.model)) {
      state.denied += 1;
      return { tag: 'deny', val: `token-cap: model ${e.model} is deny-listed` };
    }
    const capped = state.tightened || matches(config.expensive, e.model);
    if (capped && e.maxTokens > config.maxTokens) {
      state.limited += 1;
      log('info', `token-cap: ${e.operation} on ${e.model}: max tokens ${e.maxTokens} -> ${config.maxTokens}`);
      return { tag: 'limit', val: config.maxTokens };
    }
    return { tag: 'allow' };
  },

  afterCall(_e) {
    return { tag: 'continue' };
  },

  onThreshold(e) {
    log('info', `token-cap: saw threshold ${Math.round(e.threshold * 100)}% at cycle ${e.cycle}`);
    if (config.tightenAt !== null && e.threshold >= config.tightenAt && !state.tightened) {
      state.tightened = true;
      log('warn', `token-cap: ${Math.round(e.threshold * 100)}% of the budget spent; capping every model at ${config.maxTokens} tokens`);
    }
  },

  onInterrupt(_e) {},

  onEnd(e) {
    emit(
      'token_cap_summary',
      JSON.stringify({
        status: e.status,
        calls: state.calls,
        denied: state.denied,
        limited: state.limited,
        tightened: state.tightened,
      }),
    );
  },

  snapshot() {
    return new TextEncoder().encode(JSON.stringify(state));
  },

  restore(bytes) {
    let s;
    try {
      s = JSON.parse(new TextDecoder().decode(bytes));
    } catch (err) {
      throw `token-cap: snapshot is not JSON: ${err.message}`;
    }
    const counters = ['calls', 'denied', 'limited'];
    if (
      s === null ||
      typeof s !== 'object' ||
      !counters.every((k) => Number.isInteger(s[k]) && s[k] >= 0) ||
      typeof s.tightened !== 'boolean'
    ) {
      throw 'token-cap: snapshot does not have the expected fields';
    }
    state = { calls: s.calls, denied: s.denied, limited: s.limited, tightened: s.tightened };
  },
};
