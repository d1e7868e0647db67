// The submit form: one input URI, the extractors this deployment can run, a device. It posts
// to POST /process and shows the API's own validation messages (422) next to the form.
"use strict";

(() => {
  const form = document.getElementById("submit-form");
  const errors = document.getElementById("errors");
  const uri = document.getElementById("input-uri");
  const videoId = document.getElementById("video-id");
  let defaults = [];

  /** A video id from the file name: what VIDEO_ID_PATTERN allows, at most 128 characters. */
  function idFromUri(text) {
    const name = decodeURIComponent(text.split(/[?#]/)[0].split("/").pop() || "");
    const stem = name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[^A-Za-z0-9]+/, "");
    return stem.slice(0, 128) || "item";
  }

  async function loadExtractors() {
    const box = document.getElementById("extractors");
    let list;
    try {
      list = (await AP.json("/extractors")).available;
    } catch (error) {
      box.replaceChildren(AP.el("legend", { text: "Extractors" }), AP.el("p", { class: "error", text: error.message }));
      return;
    }
    defaults = list.filter((e) => e.default && e.available).map((e) => e.name);
    box.replaceChildren(AP.el("legend", { text: "Extractors" }), ...list.map((e) => {
      const id = `extractor-${e.name}`;
      return AP.el("div", { class: "check" },
        AP.el("input", { type: "checkbox", id, name: "extractors", value: e.name, checked: e.default && e.available,
          disabled: !e.available, "aria-describedby": `${id}-help` }),
        AP.el("label", { for: id, text: `${e.name} ${e.version}` }),
        AP.el("small", { id: `${id}-help`, class: "muted", text: e.available ? e.description : `unavailable: ${e.reason}` }));
    }));
  }

  function showErrors(message) {
    errors.replaceChildren(AP.el("h2", { text: "The request was refused" }),
      ...message.split("\n").map((line) => AP.el("p", { text: line })));
    errors.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.hidden = true;
    const chosen = [...form.querySelectorAll("input[name=extractors]:checked")].map((box) => box.value);
    const body = { input_uri: uri.value.trim(), video_id: videoId.value.trim() || idFromUri(uri.value.trim()) };
    const same = chosen.length === defaults.length && chosen.every((name) => defaults.includes(name));
    if (!same) body.extractors = chosen;  // an empty list is refused by the API, with its message
    const device = document.getElementById("device").value;
    if (device !== "auto") body.use_gpu = device === "gpu";
    try {
      const accepted = await AP.json("/process", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      });
      location.assign(`${AP.root}/ui/tasks/${encodeURIComponent(accepted.task_id)}`);
    } catch (error) {
      showErrors(error.message);
      errors.focus();
    }
  });
  errors.tabIndex = -1;
  AP.onReady(loadExtractors);
})();
