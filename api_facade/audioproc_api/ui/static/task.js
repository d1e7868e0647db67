// One task: its facts, progress (polled while unfinished), cancel, and its items with
// failures first, each linking to its page, its manifest and its artifacts. On the kubernetes
// backend also the AudioJob's Jobs and Events (GET /tasks/{id}/backend), each section shown
// only when it has rows.
"use strict";

(() => {
  const POLL_MS = 1500;
  const ITEMS_PAGE = 1000;  // the most GET /status returns at once
  const taskId = document.body.dataset.taskId;
  const path = `/status/${encodeURIComponent(taskId)}`;
  const ORDER = { failed: 0, processing: 1, pending: 2, completed: 3 };
  let timer = null;

  async function fetchTask() {
    const task = await AP.json(`${path}?items_limit=${ITEMS_PAGE}`);
    const items = task.items;
    let offset = task.items_next_offset;
    while (offset !== null && offset !== undefined) {
      const more = await AP.json(`${path}?items_limit=${ITEMS_PAGE}&items_offset=${offset}`);
      items.push(...more.items);
      offset = more.items_next_offset;
    }
    return task;
  }

  function fact(list, name, value) {
    if (value === null || value === undefined || value === "") return;
    list.append(AP.el("dt", { text: name }), AP.el("dd", { text: String(value) }));
  }

  function itemRow(task, item) {
    const { el } = AP;
    const base = `/results/${encodeURIComponent(task.task_id)}/${encodeURIComponent(item.video_id)}`;
    const results = item.status === "completed"
      ? el("span", {}, el("a", { href: `${AP.root}/ui/tasks/${encodeURIComponent(task.task_id)}/${encodeURIComponent(item.video_id)}`, text: "features" }),
        " · ", AP.apiLink(base, "manifest", `${item.video_id}.manifest.json`))
      : "";
    return el("tr", { "data-video": item.video_id, "data-status": item.status },
      el("td", { "data-label": "Item" }, el("span", { class: "id", text: item.video_id }), el("br"),
        el("small", { class: "muted uri", text: item.input_uri })),
      el("td", { "data-label": "Status" }, el("span", { class: `badge ${item.status}`, text: item.status })),
      el("td", { "data-label": "Device", text: item.device || "—" }),
      el("td", { "data-label": "Error", class: "error-text", text: item.error || "" }),
      el("td", { "data-label": "Results" }, results));
  }

  function jobRow(job) {
    const { el } = AP;
    return el("tr", { "data-job": job.name },
      el("td", { "data-label": "Job", class: "id", text: job.name }),
      el("td", { "data-label": "Completions", text: job.completions ?? "—" }),
      el("td", { "data-label": "Succeeded", text: job.succeeded }),
      el("td", { "data-label": "Failed", text: job.failed }),
      el("td", { "data-label": "Active", text: job.active }),
      el("td", { "data-label": "Suspended", text: job.suspended ? "yes" : "no" }));
  }

  function eventRow(event) {
    const { el } = AP;
    const seen = event.last_at ? `${AP.age(event.last_at)} ago` : "—";
    return el("tr", { "data-reason": event.reason || "" },
      el("td", { "data-label": "Last seen", text: seen, title: event.last_at || "" }),
      el("td", { "data-label": "Type", text: event.type || "" }),
      el("td", { "data-label": "Reason", text: event.reason || "" }),
      el("td", { "data-label": "Count", text: event.count }),
      el("td", { "data-label": "Message", class: "error-text", text: event.message || "" }));
  }

  function fillSection(name, rows) {
    document.querySelector(`#${name} tbody`).replaceChildren(...rows);
    document.getElementById(`${name}-section`).hidden = rows.length === 0;
  }

  // The AudioJob's Jobs and Events; the sections stay hidden when the call fails (an older
  // facade, RBAC without them) or there is nothing to show yet.
  async function loadClusterObjects() {
    if (document.body.dataset.backend !== "kubernetes") return;
    let objects;
    try {
      objects = await AP.json(`/tasks/${encodeURIComponent(taskId)}/backend`);
    } catch {
      return;
    }
    const name = `${objects.namespace}/${objects.audiojob}`;
    document.getElementById("jobs-audiojob").textContent = name;
    fillSection("jobs", objects.jobs.map(jobRow));
    fillSection("events", objects.events.map(eventRow));
  }

  async function load() {
    clearTimeout(timer);
    let task;
    try {
      task = await fetchTask();
    } catch (error) {
      AP.status(error.status === 404 ? `No task ${taskId} (or not yours).` : error.message, true);
      return;
    }
    const summary = document.getElementById("summary");
    summary.replaceChildren();
    fact(summary, "Status", task.status);
    if (document.body.dataset.backend === "kubernetes") {
      fact(summary, "AudioJob", task.task_id);
      fact(summary, "Phase", task.phase);
    }
    fact(summary, "Kind", task.kind);
    fact(summary, "Device", task.device);
    fact(summary, "Items", `${task.total}: ${task.succeeded} ok, ${task.failed} failed, ${task.running} running`);
    fact(summary, "Created", task.created_at ? `${new Date(task.created_at).toLocaleString()} (${AP.age(task.created_at)} ago)` : "");
    fact(summary, "Submitter", task.submitter);
    fact(summary, "Request id", task.request_id);
    fact(summary, "Error", task.error);
    document.getElementById("progress").value = task.progress;
    document.getElementById("progress-text").textContent = AP.percent(task.progress);
    const finished = AP.FINISHED.has(task.status);
    document.getElementById("cancel").hidden = finished;
    const items = [...task.items].sort((a, b) => (ORDER[a.status] - ORDER[b.status]) || (a.index - b.index));
    document.querySelector("#items tbody").replaceChildren(...items.map((item) => itemRow(task, item)));
    await loadClusterObjects();
    document.body.dataset.status = task.status;
    if (!finished) timer = setTimeout(load, POLL_MS);
  }

  document.getElementById("cancel").addEventListener("click", async () => {
    if (!confirm(`Cancel task ${taskId}? Its queued items will not run and it will be forgotten.`)) return;
    try {
      await AP.json(`/tasks/${encodeURIComponent(taskId)}`, { method: "DELETE" });
      clearTimeout(timer);
      AP.status(`Task ${taskId} cancelled.`);
      document.getElementById("cancel").hidden = true;
      document.body.dataset.status = "cancelled";
    } catch (error) {
      AP.status(`Could not cancel: ${error.message}`, true);
    }
  });
  AP.onReady(load);
})();
