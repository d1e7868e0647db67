// Shared by every page of /ui: API calls with the session's token, the token prompt,
// small DOM helpers. Data are always inserted as text (textContent), never as HTML.
"use strict";

const AP = (() => {
  const root = document.body.dataset.root || "";
  const TOKEN_KEY = "audioproc.token";
  let reload = () => {};

  class ApiError extends Error {
    constructor(status, body) {
      super(describe(status, body));
      this.status = status;
      this.body = body;
    }
  }

  /** A person's reading of an error body: a 422's `detail` list becomes "field: message" lines. */
  function describe(status, body) {
    const detail = body && body.detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => {
        const where = (d.loc || []).filter((p) => p !== "body" && p !== "query").join(".");
        return where ? `${where}: ${d.msg}` : d.msg;
      }).join("\n");
    }
    return typeof detail === "string" ? detail : `HTTP ${status}`;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  async function request(path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    const current = token();
    if (current) headers.Authorization = `Bearer ${current}`;
    const response = await fetch(root + path, Object.assign({}, options, { headers }));
    if (response.status === 401) {
      askToken(current ? "That token was refused. Enter another." : "This service needs a token.");
      throw new ApiError(401, { detail: "a token is needed" });
    }
    return response;
  }

  async function json(path, options) {
    const response = await request(path, options);
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  function askToken(message) {
    const panel = document.getElementById("token-panel");
    document.getElementById("token-message").textContent = message;
    panel.hidden = false;
    document.getElementById("token-input").focus();
  }

  function setupToken() {
    const form = document.getElementById("token-form");
    const forget = document.getElementById("token-forget");
    forget.hidden = !token();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("token-input");
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      input.value = "";
      document.getElementById("token-panel").hidden = true;
      forget.hidden = false;
      reload();
    });
    forget.addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      forget.hidden = true;
      reload();
    });
  }

  /** An element with attributes (`text` sets its text) and children (nodes or strings). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function status(message, isError = false) {
    const line = document.getElementById("page-status");
    line.textContent = message;
    line.classList.toggle("error", isError);
  }

  function age(iso) {
    if (!iso) return "";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  function percent(fraction) { return `${Math.floor(fraction * 100)} %`; }

  const FINISHED = new Set(["completed", "failed"]);

  /** Links to API resources: with a token, fetched with it and opened as a blob. */
  function apiLink(path, text, download) {
    const link = el("a", { href: root + path, text });
    link.addEventListener("click", async (event) => {
      if (!token()) return;  // tokens off: a plain link works
      event.preventDefault();
      const response = await request(path);
      const url = URL.createObjectURL(await response.blob());
      const open = el("a", { href: url, download: download || null, target: "_blank" });
      open.click();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    });
    return link;
  }

  function onReady(load) {
    reload = load;
    setupToken();
    load();
  }

  return { root, ApiError, request, json, el, status, age, percent, FINISHED, apiLink, onReady, token };
})();
