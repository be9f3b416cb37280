// Builds the /explore page into vo_ml/service/static/explore/: one script (explore.js, every
// npm dependency bundled and minified) and one style sheet, with LICENSES.txt beside them: the
// licence text (and NOTICE, where there is one) of each npm package the bundle holds, found from
// esbuild's list of the files it read. A package under a GPL licence stops the build: the
// bundle ships inside the BSD-licensed Python package. Run with `npm run build`.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { build } from 'esbuild';

const OUT = '../../vo_ml/service/static/explore';
const LICENCE_FILE = /^(licen[cs]e|notice|copying)(\.md|\.txt)?$/i;

const result = await build({
  entryPoints: ['src/explore.js', 'src/explore.css'],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2020',
  legalComments: 'none',
  metafile: true,
  outdir: OUT,
  logLevel: 'info',
});

// node_modules/<name> or node_modules/@scope/<name> of every bundled file, and the packages
// these depend on: regl-scatterplot's own build already holds its dependencies (gl-matrix,
// earcut, dom-2d-camera...), which esbuild then never reads from their folders.
const packages = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/^(.*?node_modules\/(?:@[^/]+\/)?[^/]+)\//);
  if (match) addWithDependencies(match[1]);
}

function addWithDependencies(folder) {
  if (packages.has(folder)) return;
  packages.add(folder);
  const meta = JSON.parse(readFileSync(join(folder, 'package.json'), 'utf8'));
  for (const name of Object.keys(meta.dependencies || {})) {
    // Type declarations are not code: nothing of them is in the bundle.
    if (name.startsWith('@types/')) continue;
    const nested = join(folder, 'node_modules', name);
    addWithDependencies(existsSync(nested) ? nested : join('node_modules', name));
  }
}

const sections = [];
for (const folder of [...packages].sort()) {
  const meta = JSON.parse(readFileSync(join(folder, 'package.json'), 'utf8'));
  if (/GPL/i.test(meta.license || '')) {
    throw new Error(`${meta.name} is under ${meta.license}; it cannot ship in the bundle`);
  }
  const texts = readdirSync(folder).filter((name) => LICENCE_FILE.test(name))
    .map((name) => readFileSync(join(folder, name), 'utf8').trim());
  if (!texts.length) throw new Error(`${meta.name} has no licence file to ship`);
  sections.push(`${meta.name} ${meta.version} (${meta.license})\n${'='.repeat(72)}\n\n${texts.join('\n\n')}`);
}
// Code a package copied into its own files, with no package of its own to read the licence from.
sections.push(`kdbush 4.0.2 (ISC), copied into regl-scatterplot (src/kdbush-class.js)
${'='.repeat(72)}

ISC License

Copyright (c) 2018, Vladimir Agafonkin

Permission to use, copy, modify, and/or distribute this software for any purpose
with or without fee is hereby granted, provided that the above copyright notice
and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND ISC DISCLAIMS ALL WARRANTIES WITH REGARD TO
THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS.
IN NO EVENT SHALL ISC BE LIABLE FOR ANY SPECIAL, DIRECT, INDIRECT, OR
CONSEQUENTIAL DAMAGES OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS OF USE, DATA
OR PROFITS, WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION,
ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.`);
const header = 'Third-party software bundled in explore.js, built from web/explore by '
  + '`npm run build`:\neach package with its licence as it ships it.\n\n';
writeFileSync(join(OUT, 'LICENSES.txt'), `${header}${sections.join('\n\n\n')}\n`);
console.log(`${sections.length} packages, their licences in ${OUT}/LICENSES.txt`);
