#!/usr/bin/env node
// Entry point for the `lb` command: runs the compiled CLI (npm run build writes dist/).
import('../dist/src/cli.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/src/cli.js')) {
    console.error('lb: dist/ is missing; run `npm run build` (or `npm ci`, which builds) first');
    process.exit(1);
  }
  throw err;
});
