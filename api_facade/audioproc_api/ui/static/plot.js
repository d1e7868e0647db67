// Reading .npy files and drawing small interactive SVG plots, for the item page.
// A plot's drawn geometry maps back to its data through the svg's data-* attributes
// (data-x-min/-max, data-y-min/-max, data-left/-top/-width/-height), which the browser
// tests use to check that what is drawn is the artifact.
"use strict";

const Plot = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const H = 220, M = { left: 56, right: 12, top: 12, bottom: 30 };
  // The drawing is as wide as its place on the page (within these bounds), so that its text
  // stays readable at phone width instead of shrinking with the picture.
  const MIN_W = 320, MAX_W = 760;
  const MAX_POINTS = 4000;  // longer series are thinned (min and max of each bucket kept)

  const TYPES = {
    "<f4": Float32Array, "<f8": Float64Array, "<i2": Int16Array, "<i4": Int32Array,
    "<u2": Uint16Array, "<u4": Uint32Array, "|u1": Uint8Array, "|b1": Uint8Array, "|i1": Int8Array,
  };

  /** The numbers of a little-endian .npy file (NumPy format 1.0 to 3.0), flattened in C order:
   *  {dtype, shape, values: Float64Array}. */
  function parseNpy(buffer) {
    const bytes = new Uint8Array(buffer);
    if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.slice(1, 6)) !== "NUMPY") throw new Error("not a .npy file");
    const view = new DataView(buffer);
    const major = bytes[6];
    const start = major === 1 ? 10 : 12;
    const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
    const header = new TextDecoder("latin1").decode(bytes.slice(start, start + headerLength));
    const dtype = /'descr':\s*'([^']+)'/.exec(header)[1];
    const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    if (/'fortran_order':\s*True/.test(header) && shape.length > 1) throw new Error("Fortran-order arrays are not read");
    const data = buffer.slice(start + headerLength);
    let values;
    if (dtype === "<i8") values = Float64Array.from(new BigInt64Array(data), Number);
    else if (TYPES[dtype]) values = Float64Array.from(new TYPES[dtype](data));
    else throw new Error(`dtype ${dtype} is not read`);
    return { dtype, shape, values };
  }

  function node(tag, attrs = {}, text) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = text;
    return n;
  }

  /** [lo, hi] of the finite values, widened about its middle to at least `minSpan`. */
  function extent(arrays, fallback, minSpan = 0) {
    let lo = Infinity, hi = -Infinity;
    for (const a of arrays) for (const v of a) if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
    if (lo === Infinity) [lo, hi] = fallback;
    const span = Math.max(minSpan, hi - lo, 1e-9);
    const middle = (lo + hi) / 2;
    return hi - lo >= span ? [lo, hi] : [middle - span / 2, middle + span / 2];
  }

  function ticks(lo, hi, count) {
    const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / count)));
    const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= count) || step * 10;
    const out = [];
    for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-9; v += nice) out.push(+v.toPrecision(6));
    return out;
  }

  /**
   * A plot in a <figure>: `series` are {name, x: Float64Array (s), y: Float64Array, kind:
   * "line"|"area"|"bars"}; `markers` are x positions drawn as vertical lines (class "marker");
   * `width` is the width on the page in CSS pixels; `yMinSpan` the least span of the y axis.
   * Points with a non-finite y are gaps. Hover or arrow keys show the nearest value.
   */
  function draw({ id, title, yLabel, unit, xLabel = "time (s)", series = [], markers = [], markerName = "beat",
                  xRange = null, yRange = null, yMinSpan = 0, width = 640 }) {
    const W = Math.max(MIN_W, Math.min(MAX_W, Math.round(width)));
    const xs = xRange || extent([...series.map((s) => s.x), markers], [0, 1]);
    const ys = yRange || extent(series.map((s) => s.kind === "area" ? [...s.y, ...s.y.map((v) => -v)] : s.y), [0, 1],
      yMinSpan);
    const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
    const px = (x) => M.left + (x - xs[0]) / (xs[1] - xs[0]) * pw;
    const py = (y) => M.top + ph - (y - ys[0]) / (ys[1] - ys[0]) * ph;
    const svg = node("svg", {
      viewBox: `0 0 ${W} ${H}`, role: "img", tabindex: 0, id, class: "plot",
      "aria-label": `${title}. Use the left and right arrow keys to read values.`,
      "data-x-min": xs[0], "data-x-max": xs[1], "data-y-min": ys[0], "data-y-max": ys[1],
      "data-left": M.left, "data-top": M.top, "data-width": pw, "data-height": ph,
    });
    for (const t of ticks(ys[0], ys[1], 4)) {
      svg.append(node("line", { x1: M.left, x2: M.left + pw, y1: py(t), y2: py(t), class: "grid" }));
      svg.append(node("text", { x: M.left - 6, y: py(t) + 4, class: "tick", "text-anchor": "end" }, String(t)));
    }
    for (const t of ticks(xs[0], xs[1], 6)) {
      svg.append(node("text", { x: px(t), y: H - 12, class: "tick", "text-anchor": "middle" }, String(t)));
    }
    svg.append(node("text", { x: M.left + pw / 2, y: H - 1, class: "axis", "text-anchor": "middle" }, xLabel));
    svg.append(node("text", { x: 12, y: M.top + ph / 2, class: "axis", "text-anchor": "middle",
      transform: `rotate(-90 12 ${M.top + ph / 2})` }, yLabel));
    for (const [index, s] of series.entries()) {
      const cls = `series s${index}`;
      if (s.kind === "bars") {
        const width = Math.max(1, pw / s.x.length * 0.7);
        const zero = py(Math.max(ys[0], Math.min(ys[1], 0)));
        s.y.forEach((v, i) => svg.append(node("rect", {
          x: px(s.x[i]) - width / 2, y: Math.min(zero, py(v)), width, height: Math.abs(py(v) - zero),
          class: `${cls} bar`, "data-value": v,
        })));
        continue;
      }
      const points = thin(s.x, s.y);
      if (s.kind === "area") {
        const top = points.map(([x, y]) => `${px(x).toFixed(2)},${py(y).toFixed(2)}`);
        const bottom = points.slice().reverse().map(([x, y]) => `${px(x).toFixed(2)},${py(-y).toFixed(2)}`);
        svg.append(node("polygon", { points: top.concat(bottom).join(" "), class: `${cls} area`, "data-name": s.name }));
        continue;
      }
      for (const run of runs(points)) {
        svg.append(node("polyline", { points: run.map(([x, y]) => `${px(x).toFixed(3)},${py(y).toFixed(3)}`).join(" "),
          class: `${cls} line`, "data-name": s.name }));
      }
    }
    for (const m of markers) {
      svg.append(node("line", { x1: px(m), x2: px(m), y1: M.top, y2: M.top + ph, class: "marker", "data-x": m }));
    }
    const cursor = node("line", { y1: M.top, y2: M.top + ph, class: "cursor", visibility: "hidden" });
    svg.append(cursor);

    const readout = AP.el("output", { class: "readout", for: id, "aria-live": "polite", text: "\u00a0" });
    const main = series[0];
    let at = -1;
    function show(index) {
      if (!main || !main.x.length) return;
      at = Math.max(0, Math.min(main.x.length - 1, index));
      const x = main.x[at], y = main.y[at];
      cursor.setAttribute("x1", px(x)); cursor.setAttribute("x2", px(x)); cursor.setAttribute("visibility", "visible");
      const value = Number.isFinite(y) ? `${+y.toPrecision(4)} ${unit}` : "none";
      const near = markers.length ? `; nearest ${markerName} ${nearest(markers, x).toFixed(2)} s` : "";
      readout.textContent = `${main.kind === "bars" ? `#${at}` : `${(+x.toFixed(2))} s`}: ${value}${near}`;
    }
    svg.addEventListener("pointermove", (event) => {
      const box = svg.getBoundingClientRect();
      const x = xs[0] + ((event.clientX - box.left) / box.width * W - M.left) / pw * (xs[1] - xs[0]);
      if (main) show(nearestIndex(main.x, x));
    });
    svg.addEventListener("keydown", (event) => {
      if (!main) return;
      const step = event.shiftKey ? Math.max(1, Math.round(main.x.length / 20)) : 1;
      if (event.key === "ArrowRight") show(at + step);
      else if (event.key === "ArrowLeft") show(at < 0 ? 0 : at - step);
      else if (event.key === "Home") show(0);
      else if (event.key === "End") show(main.x.length - 1);
      else return;
      event.preventDefault();
    });
    return AP.el("figure", { class: "figure" }, AP.el("figcaption", { text: title }), svg, readout);
  }

  /** Points [x, y]; above MAX_POINTS, the min and max of each bucket in x order. */
  function thin(x, y) {
    const n = x.length;
    if (n <= MAX_POINTS) return Array.from(x, (v, i) => [v, y[i]]);
    const bucket = Math.ceil(n / (MAX_POINTS / 2));
    const out = [];
    for (let start = 0; start < n; start += bucket) {
      let lo = start, hi = start;
      for (let i = start; i < Math.min(n, start + bucket); i++) {
        if (!(y[i] >= y[lo])) lo = i;
        if (!(y[i] <= y[hi])) hi = i;
      }
      for (const i of lo < hi ? [lo, hi] : [hi, lo]) out.push([x[i], y[i]]);
    }
    return out;
  }

  /** Runs of points with finite y (gaps break the line). */
  function runs(points) {
    const out = [[]];
    for (const p of points) {
      if (Number.isFinite(p[1])) out[out.length - 1].push(p);
      else if (out[out.length - 1].length) out.push([]);
    }
    return out.filter((r) => r.length);
  }

  function nearestIndex(sorted, x) {
    let lo = 0, hi = sorted.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (sorted[mid] < x) lo = mid + 1; else hi = mid; }
    return lo > 0 && Math.abs(sorted[lo - 1] - x) < Math.abs(sorted[lo] - x) ? lo - 1 : lo;
  }

  function nearest(sorted, x) { return sorted[nearestIndex(sorted, x)]; }

  return { parseNpy, draw };
})();
