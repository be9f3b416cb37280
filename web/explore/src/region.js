// A box or lasso drawn on the map, as the rows it holds and as the ADQL that returns them.
//
// The page selects rows with exactly the rule the database applies to the ADQL it shows, on the
// same float64 positions and the same printed numbers: a box is ADQL's BETWEEN (both ends
// included); a lasso is ml_in_polygon, the even-odd crossing count of vo_ml/adql/planar.py (an
// edge counts for y from its lower end up to, not including, its upper end, and a point counts
// when it lies strictly left of it, after a half-open bounding-box test). So the ADQL returns
// the rows the page highlights.

// Significant digits of the printed bounds and vertices: finer than any drawn line, short enough
// to read.
const DIGITS = 7;

// A coordinate as printed in the ADQL and used by the page: rounded once, so both agree.
export function rounded(value) {
  return Number(value.toPrecision(DIGITS));
}

export function boxRegion(xs, ys) {
  return {
    kind: 'box',
    x0: rounded(Math.min(...xs)),
    x1: rounded(Math.max(...xs)),
    y0: rounded(Math.min(...ys)),
    y1: rounded(Math.max(...ys)),
  };
}

export function lassoRegion(vertices) {
  const kept = [];
  for (const [x, y] of vertices.map(([x, y]) => [rounded(x), rounded(y)])) {
    const last = kept[kept.length - 1];
    if (!last || last[0] !== x || last[1] !== y) kept.push([x, y]);
  }
  const [fx, fy] = kept[0];
  const [lx, ly] = kept[kept.length - 1];
  if (kept.length > 1 && fx === lx && fy === ly) kept.pop();
  return { kind: 'lasso', vertices: kept };
}

// The indices of the points (x, y: Float64Array) inside the region.
export function rowsIn(region, x, y) {
  const inside = region.kind === 'box' ? boxTest(region) : polygonTest(region.vertices);
  const found = [];
  for (let i = 0; i < x.length; i++) {
    if (inside(x[i], y[i])) found.push(i);
  }
  return found;
}

function boxTest({ x0, x1, y0, y1 }) {
  return (x, y) => x >= x0 && x <= x1 && y >= y0 && y <= y1;
}

function polygonTest(vertices) {
  const xs = vertices.map((v) => v[0]);
  const ys = vertices.map((v) => v[1]);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const edges = [];
  vertices.forEach(([x1, y1], i) => {
    const [x2, y2] = vertices[(i + 1) % vertices.length];
    if (y1 !== y2) {
      edges.push({ x1, y1, low: Math.min(y1, y2), high: Math.max(y1, y2), slope: (x2 - x1) / (y2 - y1) });
    }
  });
  return (x, y) => {
    if (!(x >= minX && x < maxX && y >= minY && y < maxY)) return false;
    let crossings = 0;
    for (const e of edges) {
      if (y >= e.low && y < e.high && x < e.x1 + (y - e.y1) * e.slope) crossings += 1;
    }
    return crossings % 2 === 1;
  };
}

// The ADQL of the region's rows: the DID first (the page finds its rows by it), then the
// target, the position and the colour column; the filter typed on the page is AND-ed.
export function regionAdql(region, table, columns, filter) {
  const condition = region.kind === 'box'
    ? `ml_x BETWEEN ${region.x0} AND ${region.x1} AND ml_y BETWEEN ${region.y0} AND ${region.y1}`
    : `1 = ml_in_polygon(ml_x, ml_y, '${region.vertices.map((v) => v.join(' ')).join(' ')}')`;
  const extra = filter.trim() ? `\n  AND (${filter.trim()})` : '';
  return `SELECT ${columns.join(', ')}\nFROM ${table}\nWHERE ${condition}${extra}`;
}
