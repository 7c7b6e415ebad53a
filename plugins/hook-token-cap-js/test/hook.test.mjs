// Runs the built component (not the source) under jco's JS runtime for components,
// with a recording fake of the host's `log` interface. `npm test` after `node build.mjs`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { transpile } from '@bytecodealliance/jco';

const here = dirname(fileURLToPath(import.meta.url));
// Inside the package, so the transpiled code resolves node_modules/@bytecodealliance/preview2-shim.
const out = join(here, '.out');

const wasm = await readFile(join(here, '..', 'hook-token-cap-js.wasm'));
const { files } = await transpile(wasm, { name: 'hook', map: { 'budget-host:plugin/log@0.1.0': './log.js' } });
await rm(out, { recursive: true, force: true });
globalThis.hookLog = [];

// Each copy is a separate ES module, so a separate component instance: a trap poisons only its own.
async function load(copy) {
  const dir = join(out, copy);
  for (const [name, bytes] of Object.entries(files)) {
    await mkdir(dirname(join(dir, name)), { recursive: true });
    await writeFile(join(dir, name), bytes);
  }
  await writeFile(
    join(dir, 'log.js'),
    `export function log(level, message) { globalThis.hookLog.push({ level, message }); }
     export function emit(event, data) { globalThis.hookLog.push({ event, data: JSON.parse(data) }); }`,
  );
  return (await import(pathToFileURL(join(dir, 'hook.js')).href)).policy;
}

const policy = await load('main');
const start = (config) =>
  policy.onStart({ agent: 'essay', task: 't', config, limitUsd: 1, spentUsd: 0, resumed: false, cycle: 1 });
const call = (model, maxTokens) => ({
  agent: 'essay', operation: 'llm_call_cycle_1', model, cycle: 1, messages: 2, requestBytes: 100n,
  inputTokensBound: 100, maxTokens, reserveUsd: 0.01, spentUsd: 0, limitUsd: 1, fuelUsed: 0n, calls: 0,
});
const fresh = () => policy.restore(new TextEncoder().encode('{"calls":0,"denied":0,"limited":0,"tightened":false}'));

test('caps expensive models, denies deny-listed ones, leaves the rest alone', () => {
  fresh();
  start('max-tokens=64;expensive=big*,gpt-4o;deny=evil');
  assert.deepEqual(policy.beforeCall(call('big-model', 400)), { tag: 'limit', val: 64 });
  assert.deepEqual(policy.beforeCall(call('GPT-4o', 400)), { tag: 'limit', val: 64 });
  assert.deepEqual(policy.beforeCall(call('gpt-4o-mini', 400)), { tag: 'allow' });
  assert.deepEqual(policy.beforeCall(call('big-model', 64)), { tag: 'allow' }, 'never raises or repeats');
  const denied = policy.beforeCall(call('Evil', 400));
  assert.equal(denied.tag, 'deny');
  assert.match(denied.val, /Evil is deny-listed/);
  assert.deepEqual(policy.afterCall({
    agent: 'essay', operation: 'o', model: 'm', cycle: 1, usage: { inputTokens: 1, outputTokens: 2, cachedTokens: 0 },
    reservedUsd: 0.1, costUsd: 0.05, spentUsd: 0.05, limitUsd: 1, fuelUsed: 0n, calls: 1, latencyMs: 3n,
  }), { tag: 'continue' });
});

test('a threshold at tighten-at caps every model, and that survives snapshot/restore', () => {
  fresh();
  start('max-tokens=100;expensive=big;tighten-at=0.8');
  policy.onThreshold({ agent: 'essay', threshold: 0.5, spentUsd: 0.5, limitUsd: 1, cycle: 2 });
  assert.deepEqual(policy.beforeCall(call('small', 400)), { tag: 'allow' });
  policy.onThreshold({ agent: 'essay', threshold: 0.8, spentUsd: 0.8, limitUsd: 1, cycle: 3 });
  assert.deepEqual(policy.beforeCall(call('small', 400)), { tag: 'limit', val: 100 });
  const snap = policy.snapshot();
  assert.deepEqual(JSON.parse(new TextDecoder().decode(snap)), { calls: 2, denied: 0, limited: 1, tightened: true });
  fresh();
  assert.deepEqual(policy.beforeCall(call('small', 400)), { tag: 'allow' });
  policy.restore(snap);
  assert.deepEqual(policy.beforeCall(call('small', 400)), { tag: 'limit', val: 100 });
});

test('restore refuses garbage with an error and keeps its state', () => {
  fresh();
  start('expensive=big;max-tokens=10');
  for (const bad of ['garbage', '[]', '{"calls":-1,"denied":0,"limited":0,"tightened":false}', '{"calls":1}']) {
    assert.throws(() => policy.restore(new TextEncoder().encode(bad)), /token-cap: snapshot/);
  }
  assert.deepEqual(policy.beforeCall(call('big', 11)), { tag: 'limit', val: 10 });
});

test('on-end emits a JSON summary', () => {
  fresh();
  start('deny=x');
  policy.beforeCall(call('x', 10));
  globalThis.hookLog = [];
  policy.onEnd({ agent: 'essay', status: 'completed', spentUsd: 0.1, limitUsd: 1, calls: 1, cycles: 1 });
  assert.deepEqual(globalThis.hookLog, [
    { event: 'token_cap_summary', data: { status: 'completed', calls: 1, denied: 1, limited: 0, tightened: false } },
  ]);
});

test('a bad config traps (the host then fails closed)', async () => {
  for (const [i, bad] of ['max-tokens=0', 'max-tokens=1.5', 'tighten-at=2', 'colour=red', 'deny'].entries()) {
    const p = await load(`bad${i}`);
    const start = () => p.onStart({ agent: 'e', task: 't', config: bad, limitUsd: 1, spentUsd: 0, resumed: false, cycle: 1 });
    assert.throws(start, /unreachable/, bad);
  }
});
