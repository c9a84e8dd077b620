// The npm package as an operator gets it (`npm pack`, then `npm install -g lb-*.tgz`): the file list npm
// would pack from the current build (with scripts off, so the build is not redone under the other tests),
// and what the shipped code imports at runtime.
//
// Contract (README "Install"): the package holds the compiled daemon, CLI and bench harness, the example
// config, the JSON Schema, deploy/, docs and LICENSE; no compiled tests and no source maps (it ships no .ts
// sources for them to point to); and every package the shipped code imports is a dependency, not a
// devDependency, since an installed package has no devDependencies.

import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { ROOT } from './helpers/lb.js';

interface PackFile { path: string }

async function packList(): Promise<string[]> {
  const out = await new Promise<string>((resolve, reject) =>
    execFile('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`npm pack --dry-run: ${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
  const [pack] = JSON.parse(out) as Array<{ files: PackFile[] }>;
  return pack!.files.map((f) => f.path);
}

/** Bare specifiers of the static imports and re-exports (tsc writes each at the start of a line), dynamic
 * imports and require() calls of one compiled file. Specifiers that are not package names (text in strings
 * that looks like an import) are dropped. */
function importsOf(text: string): string[] {
  // Comments first: "... from 'data' events" in a doc comment is not an import.
  const source = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|\s)\/\/.*$/gm, '$1');
  const found: string[] = [];
  for (const re of [
    /^\s*(?:import|export)\b[^'";]*?\bfrom\s*['"]([^'"]+)['"]/gm,
    /^\s*import\s*['"]([^'"]+)['"]/gm,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ]) {
    for (const m of source.matchAll(re)) found.push(m[1]!);
  }
  return found.filter((s) => /^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*(\/|$)/.test(s) && !s.startsWith('node:'));
}

/** `@scope/name/sub` -> `@scope/name`, `name/sub` -> `name`. */
const packageName = (spec: string): string => spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/');

t.test('npm pack ships the daemon, its docs and LICENSE, without tests or source maps', async (t) => {
  t.ok(fs.existsSync(path.join(ROOT, 'dist', 'test')), 'precondition: the full build (with tests and maps) is in dist/');
  const files = await packList();
  for (const want of ['LICENSE', 'README.md', 'bin/lb.js', 'dist/src/cli.js', 'dist/src/daemon/worker-main.js', 'dist/bench/cli.js', 'lb.example.toml', 'config/lb.schema.json', 'deploy/lb.service', 'docs/SPEC.md']) {
    t.ok(files.includes(want), `ships ${want}`);
  }
  t.same(files.filter((f) => f.startsWith('dist/test/') || f.startsWith('test/')), [], 'no tests');
  t.same(files.filter((f) => f.endsWith('.map')), [], 'no source maps');
  t.same(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')), [], 'no TypeScript sources');
  // Declarations ship only for the plugin interface (`lb/algorithm`), when the package build made them.
  t.same(files.filter((f) => f.endsWith('.d.ts') && !f.startsWith('dist/algorithms/')), [], 'declarations only for dist/algorithms (the plugin types)');
  t.ok(files.some((f) => f.startsWith('bench/scenarios/') && f.endsWith('.toml')), 'the shipped bench scenarios');
});

t.test('LICENSE is the MIT licence package.json names', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { license: string };
  t.equal(pkg.license, 'MIT');
  const text = fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8');
  t.match(text, /^MIT License\n\nCopyright \(c\) the lb authors\n/);
  t.match(text, /THE SOFTWARE IS PROVIDED "AS IS"/);
});

t.test('every package the shipped code imports is a runtime dependency', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const deps = new Set(Object.keys(pkg.dependencies));
  const builtins = new Set(builtinModules);
  const files = (await packList()).filter((f) => f.endsWith('.js') || f.endsWith('.mjs'));
  const wrong = new Map<string, string>();
  let seen = 0;
  for (const file of files) {
    for (const spec of importsOf(fs.readFileSync(path.join(ROOT, file), 'utf8'))) {
      const name = packageName(spec);
      if (builtins.has(name)) continue;
      seen++;
      if (!deps.has(name)) wrong.set(name, file);
    }
  }
  t.ok(seen > 0, `found package imports in ${files.length} shipped files`);
  t.ok(deps.has('autocannon'), 'autocannon (lb bench scenarios) is a dependency');
  t.same(Object.fromEntries(wrong), {}, 'imported but not in "dependencies" (package: first file importing it)');
});
