// The /explore page of vo_ml: every spectrum of a table at its latent-map position, drawn with
// WebGL (regl-scatterplot) from the Arrow stream of /explore/<table>/points.
//
// A click on a point opens its side panel (preview, tags with their 68% bounds, the k nearest
// neighbours drawn on the map, "why similar", DataLink); a box or lasso becomes ADQL that
// returns the same rows from /tap/sync; a spectrum file dropped on the map is placed by
// /explore/<table>/place with its neighbours and how far to trust them. Everything the service
// answers comes from its public endpoints, as any client would ask them.
import { tableFromIPC } from 'apache-arrow';
import createScatterplot from 'regl-scatterplot';

import { COLORMAPS } from './colormaps.js';
import { parseCsv } from './csv.js';
import { boxRegion, lassoRegion, regionAdql, rowsIn } from './region.js';

const config = JSON.parse(document.getElementById('explore-config').textContent);
const NEIGHBOURS = 10;
// Grey for a point without a value of the colour column: past the last stop of the colour map.
const MISSING = '#b0b0b0';
const ZOOM_STEP = 1.25;
const PAN_STEP = 0.1;
// The colour bar spans these quantiles, so that a few extreme values do not flatten the rest.
const QUANTILES = [0.01, 0.99];
const LABELS = ['teff', 'logg', 'feh'];
// While the view moves, at most this many points are drawn (an even sample), and all of them
// again once it has rested for SETTLE_MS. A software renderer (no GPU: SwiftShader on two
// cores) draws 1 to 2 million points a second besides some 30 ms a frame of its own, so a table
// of 270,000 would move at 5 frames a second and this sample at about 30; the sample keeps the
// shape of the map in view while it moves.
const MOVING_POINTS = 5000;
const SETTLE_MS = 150;
// A selection on the map: the points not in it are faded to this fraction of their opacity
// (0.5 left a box on 270,000 points hard to see where clusters overlap), the points in it drawn
// this many pixels larger.
const INACTIVE_OPACITY = 0.12;
const SELECTED_EXTRA = 2;
const FOCUS_COLOUR = [0, 0, 0, 0.9];
const PLACED_COLOUR = [0.84, 0.15, 0.16, 1];

const state = {
  rows: null, // the Arrow table
  x: null, // Float64Array: ml_x as the database holds it
  y: null,
  centre: [0, 0],
  half: 1, // half the extent of the data, in its units: the map shows [-1, 1] in both axes
  scatterplot: null,
  spatialIndex: null,
  normalised: null, // [Float32Array, Float32Array]: the positions as drawn, in [-1, 1]
  colour: config.colour,
  colourMap: 'viridis',
  region: null,
  regionRows: [],
  lassoing: false,
  sample: null, // the indices drawn while the view moves; null when all are drawn anyway
  stride: 1, // the sample is every stride-th point
  settling: null, // the timer that draws all points again once the view rests
  focus: null, // {index, neighbours: [{index, did, distance}]}
  placed: null, // the answer of /place, with the map indices of its neighbours
};

const ui = buildPage();
load().catch((error) => showStatus(`The map could not be drawn: ${error.message}`));

// --- the page ------------------------------------------------------------------------------

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === 'text') node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function button(id, label, action, title = '') {
  const node = element('button', { id, type: 'button', title }, label);
  node.addEventListener('click', action);
  return node;
}

function buildPage() {
  const main = document.getElementById('explore');
  const colour = element('select', { id: 'colour-column' });
  for (const column of config.columns) {
    const label = column.unit ? `${column.name} (${column.unit})` : column.name;
    colour.append(element('option', { value: column.name, title: column.description, text: label }));
  }
  colour.value = config.colour;
  const colourMap = element('select', { id: 'colour-map' });
  for (const name of Object.keys(COLORMAPS)) colourMap.append(element('option', { value: name, text: name }));
  const modes = element('fieldset', { id: 'mouse-mode' }, element('legend', { text: 'Mouse' }));
  for (const [value, label] of [['pan', 'Pan and zoom'], ['box', 'Box'], ['lasso', 'Lasso']]) {
    const input = element('input', { type: 'radio', name: 'mode', value, id: `mode-${value}` });
    if (value === 'pan') input.checked = true;
    input.addEventListener('change', () => setMouseMode(value));
    modes.append(element('label', { for: `mode-${value}` }, input, ` ${label}`));
  }
  const file = element('input', { type: 'file', id: 'spectrum-file', accept: '.fits,.fit,.fts,.xml,.vot,.votable' });
  file.addEventListener('change', () => file.files[0] && place(file.files[0]));

  const canvas = element('canvas', { id: 'canvas' });
  const tooltip = element('div', { id: 'tooltip', role: 'tooltip', hidden: '' });
  const map = element('div', {
    id: 'map', tabindex: '0', role: 'application', 'aria-roledescription': 'latent map',
    'aria-label': `Latent map of ${config.table}`, 'aria-describedby': 'map-help',
  }, canvas, tooltip, element('div', { id: 'drop-hint', text: 'Drop a FITS or VOTable spectrum to place it on the map' }));
  const colourBar = element('div', { id: 'colour-bar', 'aria-live': 'polite' });
  const help = element('p', {
    id: 'map-help',
    text: 'Drag to pan, wheel to zoom; shift-drag draws a lasso. Keys on the map: + and - zoom, '
      + 'arrows pan, Enter opens the point nearest the centre, Escape clears the selection.',
  });

  const filter = element('input', { id: 'filter', type: 'text', size: '40', placeholder: 'snr > 50', spellcheck: 'false' });
  const adql = element('textarea', { id: 'adql', rows: '5', cols: '80', spellcheck: 'false', 'aria-label': 'ADQL of the selection' });
  const selection = element('section', { id: 'selection', 'aria-labelledby': 'selection-title' },
    element('h2', { id: 'selection-title', text: 'Selection as ADQL' }),
    element('label', { for: 'filter' }, 'Extra condition (ADQL, AND-ed) ', filter),
    adql,
    element('div', { class: 'buttons' },
      button('copy-adql', 'Copy ADQL', copyAdql),
      button('run-adql', 'Run on TAP', runAdql, 'POST the ADQL to /tap/sync and count the rows'),
      button('download-votable', 'Download VOTable', downloadVotable),
      button('select-view', 'Select the view as a box', selectView),
      button('clear-selection', 'Clear selection', clearSelection)),
    element('p', { id: 'selection-status', role: 'status' }));

  const panel = element('aside', { id: 'panel', hidden: '', 'aria-labelledby': 'panel-title' });
  const placed = element('section', { id: 'placed', hidden: '', 'aria-labelledby': 'placed-title' });
  const status = document.getElementById('status');

  main.replaceChildren(
    element('div', { id: 'toolbar' },
      element('label', { for: 'colour-column' }, 'Colour by ', colour),
      element('label', { for: 'colour-map' }, 'Colours ', colourMap),
      modes,
      button('zoom-in', '+', () => zoom(1 / ZOOM_STEP), 'Zoom in (+)'),
      button('zoom-out', '−', () => zoom(ZOOM_STEP), 'Zoom out (-)'),
      button('reset-view', 'Reset view', () => state.scatterplot.zoomToOrigin()),
      element('label', { for: 'spectrum-file', class: 'file' }, 'Place a spectrum ', file)),
    element('div', { id: 'layout' },
      element('div', { id: 'map-column' }, map, colourBar, help, selection, placed),
      panel),
    status);

  colour.addEventListener('change', () => { state.colour = colour.value; recolour(); updateAdql(); });
  colourMap.addEventListener('change', () => { state.colourMap = colourMap.value; recolour(); });
  filter.addEventListener('input', updateAdql);
  map.addEventListener('keydown', mapKey);
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') clearSelection();
  });
  for (const kind of ['dragenter', 'dragover']) {
    map.addEventListener(kind, (event) => { event.preventDefault(); map.classList.add('dropping'); });
  }
  map.addEventListener('dragleave', () => map.classList.remove('dropping'));
  map.addEventListener('drop', (event) => {
    event.preventDefault();
    map.classList.remove('dropping');
    const [dropped] = event.dataTransfer.files;
    if (dropped) place(dropped);
  });
  return { main, map, canvas, tooltip, colourBar, filter, adql, panel, placed, status };
}

function showStatus(text) {
  ui.status.textContent = text;
}

// --- the points ------------------------------------------------------------------------------

async function load() {
  const started = performance.now();
  const response = await fetch(config.points);
  if (!response.ok) throw new Error(await errorText(response));
  state.rows = tableFromIPC(new Uint8Array(await response.arrayBuffer()));
  state.x = state.rows.getChild('ml_x').toArray();
  state.y = state.rows.getChild('ml_y').toArray();
  const [nx, ny] = normalised(state.x, state.y);
  state.normalised = [nx, ny];

  const { width, height } = ui.canvas.getBoundingClientRect();
  state.scatterplot = createScatterplot({
    canvas: ui.canvas,
    width,
    height,
    syncEvents: true,
    backgroundColor: '#ffffff',
    pointSize: state.x.length > 50000 ? 2 : 5,
    // A selection stands out on a dense map: its points are drawn on top, opaque, in their own
    // colour and SELECTED_EXTRA pixels larger, the others faded to INACTIVE_OPACITY of theirs.
    // (With colorBy set, regl-scatterplot draws selected points in their own colour whatever
    // pointColorActive says.) No outlines (pointOutlineWidth 0): only more pixels to draw.
    pointSizeSelected: SELECTED_EXTRA,
    pointOutlineWidth: 0,
    pointColorHover: '#e0e0e0',
    opacity: 0.85,
    opacityInactiveScale: INACTIVE_OPACITY,
    colorBy: 'valueA',
    lassoColor: [0.1, 0.1, 0.1, 1],
    annotationLineWidth: 2,
    actionKeyMap: { lasso: 'shift', merge: 'cmd' },
    deselectOnEscape: false,
  });
  subscribe(state.scatterplot);
  if (state.x.length > MOVING_POINTS) {
    const stride = Math.ceil(state.x.length / MOVING_POINTS);
    state.stride = stride;
    state.sample = Array.from({ length: Math.ceil(state.x.length / stride) }, (_, i) => i * stride);
  }
  state.scatterplot.subscribe('draw', () => {
    ui.main.dataset.firstPaintMs = performance.now().toFixed(0);
    ui.main.setAttribute('aria-busy', 'false');
    showStatus(`${state.x.length.toLocaleString('en')} spectra; points loaded and drawn in `
      + `${(performance.now() - started).toFixed(0)} ms.`);
  }, 1);
  await state.scatterplot.draw({ x: nx, y: ny, valueA: colourValues() }, { zDataType: 'continuous' });
  state.spatialIndex = state.scatterplot.get('spatialIndex');
  drawColourBar();
  updateAdql();
}

// Map positions in [-1, 1], the same scale on both axes, so the map keeps its shape.
function normalised(x, y) {
  const range = (values) => {
    let low = Infinity;
    let high = -Infinity;
    for (const v of values) { if (v < low) low = v; if (v > high) high = v; }
    return [low, high];
  };
  const [x0, x1] = range(x);
  const [y0, y1] = range(y);
  state.centre = [(x0 + x1) / 2, (y0 + y1) / 2];
  state.half = (Math.max(x1 - x0, y1 - y0) / 2 || 1) * 1.05;
  const nx = new Float32Array(x.length);
  const ny = new Float32Array(y.length);
  for (let i = 0; i < x.length; i++) {
    nx[i] = (x[i] - state.centre[0]) / state.half;
    ny[i] = (y[i] - state.centre[1]) / state.half;
  }
  return [nx, ny];
}

const toData = ([u, v]) => [state.centre[0] + u * state.half, state.centre[1] + v * state.half];
const toMap = ([x, y]) => [(x - state.centre[0]) / state.half, (y - state.centre[1]) / state.half];

function colourScale() {
  const values = state.rows.getChild(state.colour).toArray();
  const finite = Float32Array.from(values.filter(Number.isFinite)).sort();
  const [low, high] = QUANTILES.map((q) => finite[Math.floor(q * (finite.length - 1))]);
  return { values, low, high, missing: finite.length < values.length };
}

// Each point's colour as regl-scatterplot's continuous value: the quantile range onto the
// stops of the colour map, a missing value onto the grey after them.
function colourValues() {
  const { values, low, high } = colourScale();
  const stops = COLORMAPS[state.colourMap].length;
  const top = (stops - 1) / stops;
  const span = high > low ? high - low : 1;
  const mapped = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    mapped[i] = Number.isFinite(v) ? Math.min(Math.max((v - low) / span, 0), 1) * top : 1;
  }
  state.scatterplot?.set({ pointColor: [...COLORMAPS[state.colourMap], MISSING] });
  return mapped;
}

async function recolour() {
  const [x, y] = state.normalised;
  await state.scatterplot.draw({ x, y, valueA: colourValues() },
    { zDataType: 'continuous', spatialIndex: state.spatialIndex });
  showSelection();
  drawColourBar();
}

function drawColourBar() {
  const { low, high, missing } = colourScale();
  const column = config.columns.find((c) => c.name === state.colour);
  const stops = COLORMAPS[state.colourMap];
  const gradient = stops.map((c, i) => `${c} ${((100 * i) / (stops.length - 1)).toFixed(1)}%`).join(', ');
  const format = (v) => (Number.isFinite(v) ? Number(v.toPrecision(4)).toString() : '–');
  ui.colourBar.replaceChildren(
    element('span', { class: 'title', text: `${column.name}${column.unit ? ` (${column.unit})` : ''}` }),
    element('span', { class: 'low', text: `≤ ${format(low)}` }),
    element('span', { class: 'ramp', style: `background: linear-gradient(to right, ${gradient})`, role: 'img', 'aria-label': `${state.colourMap} colour scale from ${format(low)} to ${format(high)}` }),
    element('span', { class: 'high', text: `≥ ${format(high)}` }),
    ...(missing ? [element('span', { class: 'missing', style: `--missing: ${MISSING}`, text: 'no value' })] : []),
  );
}

// --- events of the map -----------------------------------------------------------------------

function subscribe(plot) {
  plot.subscribe('view', thinWhileMoving);
  plot.subscribe('pointover', showTooltip);
  plot.subscribe('pointout', () => { ui.tooltip.hidden = true; });
  plot.subscribe('lassoStart', () => { state.lassoing = true; });
  plot.subscribe('lassoEnd', ({ coordinates }) => {
    state.lassoing = false;
    const points = coordinates.map(toData);
    const rectangle = plot.get('lassoType') === 'rectangle';
    if (rectangle) setRegion(boxRegion(points.map((p) => p[0]), points.map((p) => p[1])));
    else if (points.length >= 3) setRegion(lassoRegion(points));
    else showSelection();
  });
  plot.subscribe('select', ({ points }) => {
    if (state.lassoing) return;
    if (points.length === 1) focusPoint(points[0]);
    showSelection();
  });
  plot.subscribe('deselect', () => {
    if (!state.lassoing) clearSelection();
  });
}

// regl-scatterplot keeps the array it is given and splices out of it, one point at a time, the
// points filtered out: it gets a copy, cut to the drawn sample while the view moves.
function showSelection() {
  const moving = state.sample && state.settling !== null;
  const rows = moving ? state.regionRows.filter((i) => i % state.stride === 0) : state.regionRows.slice();
  state.scatterplot.select(rows, { preventEvent: true });
}

// Draw the sample while the view moves, and every point once it rests; the selection, which
// regl-scatterplot narrows to the drawn points, is given back then.
function thinWhileMoving() {
  if (!state.sample) return;
  const plot = state.scatterplot;
  if (state.settling === null) plot.filter(state.sample, { preventEvent: true });
  clearTimeout(state.settling);
  state.settling = setTimeout(async () => {
    state.settling = null;
    await plot.unfilter({ preventEvent: true });
    showSelection();
  }, SETTLE_MS);
}

function rowText(index, name) {
  const column = state.rows.getChild(name);
  if (!column) return null;
  const value = column.get(index);
  if (value === null || (typeof value === 'number' && !Number.isFinite(value))) return null;
  return typeof value === 'number' ? Number(value.toPrecision(4)).toString() : String(value);
}

function showTooltip(index) {
  const [sx, sy] = state.scatterplot.getScreenPosition(index);
  const lines = [rowText(index, 'target_name') || rowText(index, 'obs_publisher_did')];
  for (const name of [...LABELS, state.colour]) {
    const text = rowText(index, name);
    if (text !== null && !lines.includes(`${name} ${text}`)) lines.push(`${name} ${text}`);
  }
  ui.tooltip.replaceChildren(...lines.map((line) => element('div', { text: line })));
  ui.tooltip.style.left = `${sx + 12}px`;
  ui.tooltip.style.top = `${sy + 12}px`;
  ui.tooltip.hidden = false;
}

function setMouseMode(mode) {
  state.scatterplot.set({
    mouseMode: mode === 'pan' ? 'panZoom' : 'lasso',
    lassoType: mode === 'box' ? 'rectangle' : 'freeform',
  });
}

// --- keyboard --------------------------------------------------------------------------------

function zoom(factor) {
  const plot = state.scatterplot;
  plot.zoomToLocation(plot.get('cameraTarget'), plot.get('cameraDistance') * factor);
}

function pan(dx, dy) {
  const plot = state.scatterplot;
  const distance = plot.get('cameraDistance');
  const [tx, ty] = plot.get('cameraTarget');
  plot.zoomToLocation([tx + dx * distance * PAN_STEP, ty + dy * distance * PAN_STEP], distance);
}

const KEYS = {
  '+': () => zoom(1 / ZOOM_STEP),
  '=': () => zoom(1 / ZOOM_STEP),
  '-': () => zoom(ZOOM_STEP),
  ArrowLeft: () => pan(-1, 0),
  ArrowRight: () => pan(1, 0),
  ArrowUp: () => pan(0, 1),
  ArrowDown: () => pan(0, -1),
  Enter: () => focusPoint(nearestTo(state.scatterplot.get('cameraTarget'))),
};

function mapKey(event) {
  const action = KEYS[event.key];
  if (action && state.scatterplot) {
    event.preventDefault();
    action();
  }
}

function nearestTo([u, v]) {
  const [nx, ny] = state.normalised;
  let best = 0;
  let bestDistance = Infinity;
  for (let i = 0; i < nx.length; i++) {
    const d = (nx[i] - u) ** 2 + (ny[i] - v) ** 2;
    if (d < bestDistance) { best = i; bestDistance = d; }
  }
  return best;
}

// The part of the map in view, in map coordinates: the camera looks at its target from its
// distance, the width stretched by the canvas's aspect ratio.
function viewBounds() {
  const plot = state.scatterplot;
  const [tx, ty] = plot.get('cameraTarget');
  const distance = plot.get('cameraDistance');
  const { width, height } = ui.canvas.getBoundingClientRect();
  const aspect = width / height;
  return [[tx - distance * aspect, ty - distance], [tx + distance * aspect, ty + distance]];
}

// --- selection and ADQL ----------------------------------------------------------------------

function setRegion(region) {
  state.region = region;
  state.regionRows = rowsIn(region, state.x, state.y);
  showSelection();
  updateAdql();
  selectionStatus(`${state.regionRows.length.toLocaleString('en')} points selected by the ${region.kind}.`);
}

function selectView() {
  const corners = viewBounds().map(toData);
  setRegion(boxRegion(corners.map((p) => p[0]), corners.map((p) => p[1])));
}

function clearSelection() {
  state.region = null;
  state.regionRows = [];
  state.scatterplot?.select([], { preventEvent: true });
  updateAdql();
  selectionStatus('');
}

function selectionStatus(text) {
  const status = document.getElementById('selection-status');
  status.textContent = text;
  status.dataset.selected = String(state.regionRows.length);
}

function selectedColumns() {
  return ['obs_publisher_did', ...(config.hasTarget ? ['target_name'] : []), 'ml_x', 'ml_y',
    ...(state.colour ? [state.colour] : [])];
}

function updateAdql() {
  ui.adql.value = state.region
    ? regionAdql(state.region, config.table, [...new Set(selectedColumns())], ui.filter.value)
    : '';
}

async function tapSync(query, format) {
  const body = new URLSearchParams({
    REQUEST: 'doQuery', LANG: 'ADQL', QUERY: query, RESPONSEFORMAT: format,
    MAXREC: String(Math.max(state.x.length, 1)),
  });
  const response = await fetch(`${config.root}/tap/sync`, { method: 'POST', body });
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

async function copyAdql() {
  ui.adql.select();
  try {
    await navigator.clipboard.writeText(ui.adql.value);
    selectionStatus('ADQL copied.');
  } catch {
    document.execCommand('copy');
  }
}

// Run the ADQL as shown and highlight the rows it returns: with an extra condition these are
// fewer than the map selected, and the page says whether they are the same rows.
async function runAdql() {
  const query = ui.adql.value.trim();
  if (!query) { selectionStatus('Select a box or lasso first.'); return; }
  selectionStatus('Running…');
  try {
    const rows = parseCsv(await (await tapSync(query, 'csv')).text());
    const found = rows.map((row) => indexOfDid(row.obs_publisher_did)).filter((i) => i >= 0).sort((a, b) => a - b);
    const selected = new Set(state.regionRows);
    const same = found.length === selected.size && found.every((i) => selected.has(i));
    selectionStatus(`${rows.length.toLocaleString('en')} rows from TAP; `
      + (same ? 'the same rows as the map selection.' : `the map selection has ${selected.size.toLocaleString('en')}; the rows TAP returned are highlighted.`));
    const status = document.getElementById('selection-status');
    status.dataset.rows = String(rows.length);
    status.dataset.same = String(same);
    state.scatterplot.select(found, { preventEvent: true });
  } catch (error) {
    selectionStatus(`The query failed: ${error.message}`);
  }
}

async function downloadVotable() {
  const query = ui.adql.value.trim();
  if (!query) { selectionStatus('Select a box or lasso first.'); return; }
  try {
    const blob = await (await tapSync(query, 'votable')).blob();
    const link = element('a', { href: URL.createObjectURL(blob), download: 'selection.vot' });
    document.body.append(link);
    link.click();
    link.remove();
    URL.revokeObjectURL(link.href);
  } catch (error) {
    selectionStatus(`The download failed: ${error.message}`);
  }
}

// --- a point and its neighbours --------------------------------------------------------------

// The row of a publisher DID: the points come sorted by DID, so a binary search decodes some
// twenty strings, not the whole column.
function indexOfDid(did) {
  const column = state.rows.getChild('obs_publisher_did');
  let low = 0;
  let high = column.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const value = column.get(middle);
    if (value === did) return middle;
    if (value < did) low = middle + 1;
    else high = middle - 1;
  }
  return -1;
}

const datalink = (path, parameters) => `${config.root}/datalink/${path}?${new URLSearchParams(parameters)}`;

async function focusPoint(index) {
  const started = performance.now();
  const did = state.rows.getChild('obs_publisher_did').get(index);
  state.focus = { index, neighbours: [] };
  drawMarks();
  const panel = ui.panel;
  panel.hidden = false;
  delete panel.dataset.neighboursMs;
  const title = rowText(index, 'target_name') || did;
  const list = element('ol', { id: 'neighbours' });
  const why = element('figure', { id: 'why', hidden: '' });
  panel.replaceChildren(
    element('h2', { id: 'panel-title', text: title }),
    element('p', { class: 'did', text: did }),
    element('p', {},
      element('a', { href: datalink('links', { ID: did }), target: '_blank', rel: 'noopener', text: 'DataLink of this spectrum' })),
    element('table', { id: 'tags' }),
    element('h3', { text: `${NEIGHBOURS} nearest in the latent space` }),
    list,
    why,
    element('h3', { text: 'Preview' }),
    button('close-panel', 'Close', closePanel),
  );
  try {
    const answer = await fetch(datalink('similar', { ID: did, K: String(NEIGHBOURS), RESPONSEFORMAT: 'csv' }));
    if (!answer.ok) throw new Error(await errorText(answer));
    if (state.focus?.index !== index) return;
    state.focus.neighbours = parseCsv(await answer.text()).map((row) => ({
      did: row.obs_publisher_did, distance: Number(row.latent_distance), index: indexOfDid(row.obs_publisher_did),
    }));
    drawMarks();
    list.replaceChildren(...state.focus.neighbours.map((n) => neighbourItem(did, n, why)));
    panel.dataset.neighboursMs = (performance.now() - started).toFixed(0);
  } catch (error) {
    list.replaceChildren(element('li', { text: `No neighbours: ${error.message}` }));
  }
  // The preview may be drawn for the first time now (a model run): asked after the neighbours.
  panel.insertBefore(element('img', {
    id: 'preview', src: datalink('preview', { ID: did }), alt: `Spectrum ${did} with the model's reconstruction`,
  }), document.getElementById('close-panel'));
  showDetails(did);
}

function neighbourItem(did, neighbour, figure) {
  const name = neighbour.index >= 0 ? rowText(neighbour.index, 'target_name') || neighbour.did : neighbour.did;
  const show = button('', name, () => neighbour.index >= 0 && focusPoint(neighbour.index),
    `Open ${neighbour.did}`);
  const explain = button('', 'why similar?', () => {
    figure.hidden = false;
    figure.replaceChildren(
      element('img', { src: datalink('why', { ID: did, REF: neighbour.did, RESPONSEFORMAT: 'image/png' }), alt: `Why ${did} and ${neighbour.did} are similar` }),
      element('figcaption', { text: `Why similar: ${did} and ${neighbour.did}, by wavelength window` }));
  });
  return element('li', { 'data-did': neighbour.did }, show, ` d = ${neighbour.distance.toPrecision(3)} `, explain);
}

// The row's labels and tags (with their 68% intervals) from TAP, as a table.
async function showDetails(did) {
  const bounds = config.bounds.flatMap((b) => [b.name, b.lo, b.hi]);
  const names = [...new Set([...config.columns.map((c) => c.name), ...bounds])];
  const query = `SELECT ${names.join(', ')} FROM ${config.table} WHERE obs_publisher_did = '${did.replaceAll("'", "''")}'`;
  const table = document.getElementById('tags');
  try {
    const [row] = parseCsv(await (await tapSync(query, 'csv')).text());
    if (!row || !table) return;
    const withBounds = new Map(config.bounds.map((b) => [b.name, b]));
    const shown = new Set(config.bounds.flatMap((b) => [b.lo, b.hi]));
    const format = (text) => (text === '' || text === undefined ? '–' : Number(Number(text).toPrecision(4)).toString());
    const lines = names.filter((name) => !shown.has(name)).map((name) => {
      const bound = withBounds.get(name);
      const unit = config.columns.find((c) => c.name === name)?.unit || '';
      const interval = bound && row[bound.lo] !== '' ? ` [${format(row[bound.lo])}, ${format(row[bound.hi])}]` : '';
      return element('tr', {}, element('th', { scope: 'row', text: name }),
        element('td', { text: `${format(row[name])}${interval} ${unit}`.trim() }));
    });
    table.replaceChildren(element('caption', { text: 'Values; tags with their 68% interval' }), ...lines);
  } catch (error) {
    table.replaceChildren(element('caption', { text: `No values: ${error.message}` }));
  }
}

function closePanel() {
  state.focus = null;
  ui.panel.hidden = true;
  drawMarks();
  ui.map.focus();
}

// --- a dropped spectrum ----------------------------------------------------------------------

async function place(file) {
  const body = new FormData();
  body.append('SPECTRUM', file, file.name);
  ui.placed.hidden = false;
  ui.placed.replaceChildren(element('h2', { id: 'placed-title', text: `Placing ${file.name}…` }));
  try {
    const response = await fetch(config.place, { method: 'POST', body });
    if (!response.ok) throw new Error(await errorText(response));
    const answer = await response.json();
    answer.neighbours = answer.neighbours.map((n) => ({ ...n, index: indexOfDid(n.obs_publisher_did) }));
    state.placed = answer;
    drawMarks();
    const figure = (value, digits) => (value === null || value === undefined ? '–' : Number(value).toPrecision(digits));
    ui.placed.replaceChildren(
      element('h2', { id: 'placed-title', text: `${file.name} on the map` }),
      element('dl', {},
        element('dt', { text: 'Map position' }),
        element('dd', { id: 'placed-position', 'data-ml-x': String(answer.ml_x), 'data-ml-y': String(answer.ml_y), text: `${figure(answer.ml_x, 4)}, ${figure(answer.ml_y, 4)}` }),
        element('dt', { text: 'Coverage of the model grid' }), element('dd', { id: 'placed-coverage', text: figure(answer.coverage, 3) }),
        element('dt', { text: 'Typicality (% of archive spectra as far from their nearest)' }),
        element('dd', { id: 'placed-typicality', text: figure(answer.typicality, 3) })),
      element('ul', { class: 'warnings' }, ...(answer.warnings || []).map((w) => element('li', { text: w }))),
      element('h3', { text: 'Nearest archive spectra' }),
      element('ol', { id: 'placed-neighbours' }, ...answer.neighbours.map((n) => element('li', { 'data-did': n.obs_publisher_did },
        button('', n.index >= 0 ? rowText(n.index, 'target_name') || n.obs_publisher_did : n.obs_publisher_did,
          () => n.index >= 0 && focusPoint(n.index)),
        ` d = ${figure(n.distance, 3)}`))),
      button('clear-placed', 'Remove from the map', () => { state.placed = null; ui.placed.hidden = true; drawMarks(); }));
  } catch (error) {
    ui.placed.replaceChildren(element('h2', { id: 'placed-title', text: `${file.name} could not be placed` }),
      element('p', { class: 'error', text: error.message }));
  }
}

// --- marks on the map: the focused point, a placed spectrum, their neighbours ----------------

function star(centre, neighbours, colour) {
  const size = 0.012 * state.scatterplot.get('cameraDistance');
  const [cx, cy] = centre;
  const marks = [{ vertices: [[cx - size, cy], [cx, cy + size], [cx + size, cy], [cx, cy - size], [cx - size, cy]], lineColor: colour, lineWidth: 3 }];
  for (const [nx, ny] of neighbours) {
    marks.push({ vertices: [[cx, cy], [nx, ny]], lineColor: colour, lineWidth: 1 });
    marks.push({ x1: nx - size / 2, y1: ny - size / 2, x2: nx + size / 2, y2: ny + size / 2, lineColor: colour, lineWidth: 2 });
  }
  return marks;
}

function drawMarks() {
  const [nx, ny] = state.normalised;
  const at = (index) => [nx[index], ny[index]];
  const marks = [];
  if (state.focus) {
    const near = state.focus.neighbours.filter((n) => n.index >= 0).map((n) => at(n.index));
    marks.push(...star(at(state.focus.index), near, FOCUS_COLOUR));
  }
  if (state.placed) {
    const near = state.placed.neighbours.filter((n) => n.index >= 0).map((n) => at(n.index));
    marks.push(...star(toMap([state.placed.ml_x, state.placed.ml_y]), near, PLACED_COLOUR));
  }
  state.scatterplot.drawAnnotations(marks);
}

// --- errors ----------------------------------------------------------------------------------

// What a refusal says: the QUERY_STATUS of a DALI error document, a JSON message, or the text.
async function errorText(response) {
  const text = await response.text();
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('xml')) {
    const info = new DOMParser().parseFromString(text, 'application/xml')
      .querySelector('INFO[name="QUERY_STATUS"]');
    if (info) return info.textContent.trim();
  }
  if (type.includes('json')) {
    try {
      const parsed = JSON.parse(text);
      return parsed.message || parsed.error || text;
    } catch {
      return text;
    }
  }
  return `${response.status} ${response.statusText}: ${text.slice(0, 200)}`;
}
