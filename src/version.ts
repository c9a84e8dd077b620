// The package version (package.json), for `lb --version`, `lb status` and the start log line.

import fs from 'node:fs';

/** Read once from package.json beside dist/ (this file runs as dist/src/version.js). */
export const LB_VERSION = (JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
