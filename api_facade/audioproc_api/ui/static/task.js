// One task: its facts, progress (polled while unfinished), cancel, and its items with
// failures first, each linking to its page, its manifest and its artifacts.
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
