#!/usr/bin/env node
// Command-line face for the official Solidity compiler built to WebAssembly (npm package `solc`).
//
// py-solc-x and brownie drive a native `solc` binary through two calls only: `--version` and
// `--standard-json` (input on stdin, output on stdout, imports resolved under --base-path,
// --include-path and --allow-paths). This adapter answers exactly those, so `brownie compile` works on
// machines where no native compiler can be installed. Anything else is refused loudly rather than
// half-supported (e.g. `--combined-json`: use the standard-JSON interface).
'use strict';

const fs = require('fs');
const path = require('path');

const projectRoot = path.resolve(__dirname, '..');
const solc = require(path.join(projectRoot, 'node_modules', 'solc'));

function fail(message) {
  process.stderr.write(`solc-adapter: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { version: false, standardJson: false, basePath: null, includePaths: [], allowPaths: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${arg} needs a value`);
      i += 1;
      return argv[i];
    };
    if (arg === '--version') opts.version = true;
    else if (arg === '--standard-json') opts.standardJson = true;
    else if (arg === '--base-path') opts.basePath = value();
    else if (arg === '--include-path') opts.includePaths.push(value());
    else if (arg === '--allow-paths') opts.allowPaths.push(...value().split(',').filter(Boolean));
    else if (arg === '--no-color' || arg === '--pretty-json') continue;
    else fail(`unsupported argument ${arg} (only --version and --standard-json are implemented)`);
  }
  return opts;
}

function realOrResolved(p) {
  try {
    return fs.realpathSync(p);
  } catch (err) {
    return path.resolve(p);
  }
}

function makeImportCallback(opts) {
  const roots = [opts.basePath || process.cwd(), ...opts.includePaths].map(realOrResolved);
  const allowed = [...roots, ...opts.allowPaths.map(realOrResolved)];
  const isAllowed = (file) => allowed.some((dir) => file === dir || file.startsWith(dir + path.sep));

  return function findImport(importPath) {
    const candidates = path.isAbsolute(importPath)
      ? [importPath]
      : roots.map((root) => path.join(root, importPath));
    for (const candidate of candidates) {
      if (!fs.existsSync(candidate)) continue;
      const file = realOrResolved(candidate);
      if (!isAllowed(file)) {
        return { error: `${importPath} resolves outside the allowed paths` };
      }
      return { contents: fs.readFileSync(file, 'utf8') };
    }
    return { error: `File not found: ${importPath} (searched ${roots.join(', ')})` };
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.version) {
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return;
  }
  if (!opts.standardJson) fail('nothing to do: pass --version or --standard-json');
  const input = fs.readFileSync(0, 'utf8');
  const output = solc.compile(input, { import: makeImportCallback(opts) });
  process.stdout.write(output);
}

main();
