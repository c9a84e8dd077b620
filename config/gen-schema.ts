// Writes config/lb.schema.json from config/schema.ts: `node dist/config/gen-schema.js`.
// With `--check`, writes nothing and exits 1 when the file differs from what it would write.

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { jsonSchemaText } from './schema.js';

/** config/lb.schema.json in the source tree (this file runs as dist/config/gen-schema.js). */
const target = fileURLToPath(new URL('../../config/lb.schema.json', import.meta.url));
const text = jsonSchemaText();

if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch {
    // missing: reported as out of date below
  }
  if (current !== text) {
    console.error(`${target} is out of date: run node dist/config/gen-schema.js`);
    process.exit(1);
  }
  console.log(`${target} is up to date`);
} else {
  writeFileSync(target, text);
  console.log(`wrote ${target}`);
}
