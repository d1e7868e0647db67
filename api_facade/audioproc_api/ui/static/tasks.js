// The tasks list: newest first, paged (?limit=, default 50), filtered by status (?status=);
// while a task on the page is unfinished the page polls the API every POLL_MS and updates
// the rows in place.
"use strict";

(() => {
  const POLL_MS = 2000;
  const API_PAGE = 500;  // the most GET /tasks returns at once
  const params = new URLSearchParams(location.search);
  const pageSize = Math.max(1, Math.min(5000, parseInt(params.get("limit") || "50", 10) || 50));
  const filter = document.getElementById("status-filter");
  filter.value = params.get("status") || "";
  const body = document.querySelector("#tasks tbody");
  const cursors = [null];  // cursor of each page shown so far; the last is the current page's
  let next = null;
  let timer = null;

  /** One page of `pageSize` tasks from as many API pages as that takes. */
  async function fetchPage(cursor) {
    const tasks = [];
    let at = cursor;
    do {
      const query = new URLSearchParams({ order: "newest", limit: String(Math.min(API_PAGE, pageSize - tasks.length)) });
      if (filter.value) query.set("status", filter.value);
      if (at) query.set("cursor", at);
      const page = await AP.json(`/tasks?${query}`);
      tasks.push(...page.tasks);
      at = page.next_cursor;
    } while (at && tasks.length < pageSize);
    return { tasks, next: at };
  }

  /** A progress bar of plain elements: a thousand native <progress> widgets take Chromium
   *  about a second to lay out (bench/ui.py). */
  function meter(task) {
    const fill = AP.el("span", { class: "fill" });
    fill.style.width = `${(100 * task.progress).toFixed(1)}%`;  // CSSOM: allowed by the CSP
    return AP.el("span", {
      class: "meter", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": String(Math.floor(100 * task.progress)), "aria-label": `Progress of ${task.task_id}`,
    }, fill);
  }

  function row(task) {
    const { el } = AP;
    const pending = Math.max(0, task.total - task.succeeded - task.failed - task.running);
    const finished = AP.FINISHED.has(task.status);
    const cancel = finished ? "" : el("button", {
      type: "button", class: "cancel", "data-task": task.task_id, "aria-label": `Cancel task ${task.task_id}`,
      text: "Cancel",
    });
    if (cancel) cancel.addEventListener("click", () => cancelTask(task.task_id));
    return el("tr", { "data-task": task.task_id, "data-status": task.status },
      el("td", { "data-label": "Task" }, el("a", { href: `${AP.root}/ui/tasks/${encodeURIComponent(task.task_id)}`, text: task.task_id })),
      el("td", { "data-label": "Status" }, el("span", { class: `badge ${task.status}`, text: task.status })),
      el("td", { "data-label": "Progress" }, meter(task), el("span", { class: "pct", text: AP.percent(task.progress) })),
      el("td", { "data-label": "Items", class: "counts" },
        el("span", { class: "ok", title: "succeeded", text: `${task.succeeded} ok` }), " · ",
        el("span", { class: "bad", title: "failed", text: `${task.failed} failed` }), " · ",
        el("span", { title: "running", text: `${task.running} running` }), " · ",
        el("span", { title: "pending", text: `${pending} pending` })),
      el("td", { "data-label": "Device", text: task.device }),
      el("td", { "data-label": "Age" }, el("time", { datetime: task.created_at, text: AP.age(task.created_at) })),
      el("td", { "data-label": "Submitter", text: task.submitter || "—" }),
      el("td", { "data-label": "" }, cancel));
  }

  async function cancelTask(taskId) {
    if (!confirm(`Cancel task ${taskId}? Its queued items will not run and it will be forgotten.`)) return;
    try {
      await AP.json(`/tasks/${encodeURIComponent(taskId)}`, { method: "DELETE" });
      AP.status(`Task ${taskId} cancelled.`);
    } catch (error) {
      AP.status(`Could not cancel ${taskId}: ${error.message}`, true);
    }
    load();
  }

  async function load() {
    clearTimeout(timer);
    let page;
    performance.mark("ap:fetch");
    try {
      page = await fetchPage(cursors[cursors.length - 1]);
      performance.mark("ap:fetched");
    } catch (error) {
      AP.status(error.message, true);
      return;
    }
    // Rebuilt in one go; keyboard focus stays on the same control of the same task.
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("tr[data-task]");
    const focusKey = focused ? [focused.dataset.task, document.activeElement.tagName] : null;
    body.replaceChildren(...page.tasks.map(row));
    if (focusKey) {
      const again = body.querySelector(`tr[data-task="${CSS.escape(focusKey[0])}"] ${focusKey[1].toLowerCase()}`);
      if (again) again.focus();
    }
    document.getElementById("empty").hidden = page.tasks.length > 0;
    next = page.next;
    document.getElementById("older").disabled = !next;
    document.getElementById("newer").disabled = cursors.length < 2;
    const live = page.tasks.some((t) => !AP.FINISHED.has(t.status));
    document.getElementById("live").textContent = live ? "updating live" : "";
    performance.mark("ap:drawn");  // bench/ui.py reads fetch, drawing and paint times from these marks
    const count = String(page.tasks.length);
    // after the next frame is painted: what a person sees
    requestAnimationFrame(() => setTimeout(() => { performance.mark("ap:painted"); document.body.dataset.loaded = count; }));
    if (live) timer = setTimeout(load, POLL_MS);
  }

  filter.addEventListener("change", () => {
    const url = new URL(location.href);
    if (filter.value) url.searchParams.set("status", filter.value); else url.searchParams.delete("status");
    history.replaceState(null, "", url);
    cursors.splice(1);
    load();
  });
  document.getElementById("older").addEventListener("click", () => { cursors.push(next); load(); });
  document.getElementById("newer").addEventListener("click", () => { cursors.pop(); load(); });
  AP.onReady(load);
})();
