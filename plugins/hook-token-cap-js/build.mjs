// Builds hook-token-cap-js.wasm from src/hook.js against the repo's wit/ (world `hook`).
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { componentize } from '@bytecodealliance/componentize-js';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, 'hook-token-cap-js.wasm');

const { component } = await componentize({
  sourcePath: join(here, 'src', 'hook.js'),
  witPath: join(here, '..', '..', 'wit'),
  worldName: 'hook',
  // Hooks get no network, clocks or entropy: keep only stdio so JS errors reach stderr
  // (a pure component traps silently). Random is then deterministic, which a policy wants anyway.
  disableFeatures: ['http', 'fetch-event', 'clocks', 'random'],
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
