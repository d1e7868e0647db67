// One item: the manifest for a person (facts, each extractor's features) and plots drawn
// from its .npy artifacts: waveform envelope with the beat grid, short-term loudness, the
// f0 contour (voiced frames only) and the MFCC means.
"use strict";

(() => {
  const { taskId, videoId } = document.body.dataset;
  const base = `/results/${encodeURIComponent(taskId)}/${encodeURIComponent(videoId)}`;
  // Time of element i of a series, as the extractors document them (seconds).
  const LOUDNESS_HOP_S = 0.1, SHORT_TERM_CENTRE_S = 1.5, PITCH_HOP_S = 0.01;

  async function artifact(manifest, extractor, name) {
    const record = manifest.extractors.find((r) => r.name === extractor && r.status === "ok");
    const file = record && record.artifacts[name];
    if (!file) return null;
    const response = await AP.request(`${base}/artifacts/${encodeURIComponent(file)}`);
    if (!response.ok) throw new AP.ApiError(response.status, await response.json().catch(() => null));
    return Plot.parseNpy(await response.arrayBuffer()).values;
  }

  function times(n, hop, first) { return Float64Array.from({ length: n }, (_, i) => first + i * hop); }

  function formatValue(value) {
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(+value.toPrecision(5));
    if (Array.isArray(value)) {
      const head = value.slice(0, 6).map(formatValue).join(", ");
      return `[${head}${value.length > 6 ? `, … (${value.length} values)` : ""}]`;
    }
    if (value === null) return "—";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function features(manifest) {
    const { el } = AP;
    return manifest.extractors.map((record) => {
      const rows = Object.entries(record.features).map(([name, value]) =>
        el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: formatValue(value) })));
      const artifacts = Object.entries(record.artifacts).map(([name, file]) =>
        el("li", {}, AP.apiLink(`${base}/artifacts/${encodeURIComponent(file)}`, name, file)));
      return el("section", { class: "extractor", "data-extractor": record.name },
        el("h3", { text: `${record.name} ${record.version}` }),
        el("p", { class: "muted", text: `${record.status} on ${record.device} in ${Math.round(record.duration_ms)} ms` +
          (record.sample_rate ? ` at ${record.sample_rate} Hz` : "") }),
        record.error ? el("p", { class: "error-text", text: record.error }) : "",
        ...record.notes.map((note) => el("p", { class: "note", text: note })),
        rows.length ? el("table", { class: "features" }, el("tbody", {}, ...rows)) : "",
        artifacts.length ? el("ul", { class: "artifacts" }, ...artifacts) : "");
    });
  }

  async function plots(manifest) {
    const duration = manifest.audio.duration_s;
    const [envelope, beats, shortTerm, f0, voiced] = await Promise.all([
      artifact(manifest, "loudness", "peak_envelope"),
      artifact(manifest, "tempo", "beats"),
      artifact(manifest, "loudness", "short_term_lufs"),
      artifact(manifest, "pitch", "f0_hz"),
      artifact(manifest, "pitch", "voiced"),
    ]);
    const out = [];
    const timeRange = [0, Math.max(duration, 1e-3)];
    const width = document.getElementById("plots").clientWidth;
    if (envelope || beats) {
      out.push(Plot.draw({
        id: "plot-waveform", title: `Waveform envelope (100 ms peaks)${beats ? ` with ${beats.length} beats` : ""}`,
        yLabel: "amplitude", unit: "", width, xRange: timeRange, yRange: [-1, 1], markers: beats ? Array.from(beats) : [],
        series: envelope ? [{ name: "peak_envelope", kind: "area", x: times(envelope.length, LOUDNESS_HOP_S, LOUDNESS_HOP_S / 2), y: envelope }] : [],
      }));
    }
    if (shortTerm) {
      out.push(Plot.draw({
        id: "plot-loudness", title: "Short-term loudness (3 s windows, at their centres)", yLabel: "LUFS", unit: "LUFS",
        width, yMinSpan: 12, xRange: timeRange, series: [{ name: "short_term_lufs", kind: "line", x: times(shortTerm.length, LOUDNESS_HOP_S, SHORT_TERM_CENTRE_S), y: shortTerm }],
      }));
    }
    if (f0) {
      const y = f0.map((v, i) => (voiced && !voiced[i]) || !(v > 0) ? NaN : v);
      const share = voiced ? Math.round(100 * voiced.reduce((a, b) => a + b, 0) / Math.max(1, voiced.length)) : null;
      out.push(Plot.draw({
        id: "plot-pitch", title: `f0 contour, voiced frames only${share === null ? "" : ` (${share} % voiced)`}`,
        yLabel: "Hz", unit: "Hz", width, yMinSpan: 50, xRange: timeRange, series: [{ name: "f0_hz", kind: "line", x: times(f0.length, PITCH_HOP_S, 0), y }],
      }));
    }
    const mfcc = manifest.extractors.find((r) => r.name === "mfcc" && r.status === "ok");
    if (mfcc && Array.isArray(mfcc.features.mfcc_mean)) {
      const means = Float64Array.from(mfcc.features.mfcc_mean);
      out.push(Plot.draw({
        id: "plot-mfcc", title: "MFCC means", yLabel: "mean", unit: "", xLabel: "coefficient", width,
        xRange: [-0.5, means.length - 0.5], series: [{ name: "mfcc_mean", kind: "bars", x: means.map((_, i) => i), y: means }],
      }));
    }
    return out;
  }

  function fact(list, name, value) {
    if (value === null || value === undefined || value === "") return;
    list.append(AP.el("dt", { text: name }), AP.el("dd", { text: String(value) }));
  }

  async function load() {
    let manifest;
    try {
      manifest = await AP.json(base);
    } catch (error) {
      AP.status(error.status === 404 ? `No item ${videoId} in task ${taskId} (or not yours).` : error.message, true);
      return;
    }
    const summary = document.getElementById("summary");
    summary.replaceChildren();
    const source = manifest.audio.source;
    fact(summary, "Input", manifest.input_uri);
    fact(summary, "Duration", `${manifest.audio.duration_s.toFixed(2)} s`);
    fact(summary, "Source audio", `${source.codec}, ${source.sample_rate} Hz, ${source.channels} channel(s)` +
      (source.container ? ` in ${source.container}` : ""));
    fact(summary, "Device", manifest.device);
    fact(summary, "Created", new Date(manifest.created_at).toLocaleString());
    fact(summary, "Errors", manifest.errors.join("; "));
    const manifestLink = AP.apiLink(base, "manifest.json", `${videoId}.manifest.json`);
    summary.append(AP.el("dt", { text: "Manifest" }), AP.el("dd", {}, manifestLink));
    document.getElementById("features").replaceChildren(...features(manifest));
    try {
      document.getElementById("plots").replaceChildren(...await plots(manifest));
    } catch (error) {
      AP.status(`Plots could not be drawn: ${error.message}`, true);
    }
    document.body.dataset.loaded = "1";
  }

  AP.onReady(load);
})();
