// `/review`: the capture queue (uncertain, then feedback disagreements, then the sample), one
// photo at a time; label with a click or a key (1-6 the classes in the model's order, 0 not
// waste, s skip). Each label is a PUT /captures/{id}/label: one label event in the store.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PAGE = 100;
  const QUEUES = {
    uncertain: "uncertain",
    disagreement: "feedback disagrees",
    sample: "random sample",
  };
  const state = { items: [], index: 0, labels: [], total: 0, done: 0, skipped: 0, next: null, busy: false };
  const images = new Map(); // capture id -> object URL (prefetched)

  function query(offset) {
    const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
    const form = new FormData($("filters"));
    for (const name of ["source", "model_version"]) {
      if (form.get(name)) params.set(name, form.get(name));
    }
    if ($("reviewed").checked) params.set("reviewed", "true");
    return `captures?${params}`;
  }

  function fillSelect(select, values) {
    const current = select.value;
    select.replaceChildren(new Option("all", ""));
    for (const value of values) select.append(new Option(value, value));
    select.value = values.includes(current) ? current : "";
  }

  async function load(fresh) {
    if (fresh) {
      Object.assign(state, { items: [], index: 0, done: 0, skipped: 0 });
      for (const url of images.values()) URL.revokeObjectURL(url);
      images.clear();
    }
    $("status").textContent = "";
    try {
      const offset = $("reviewed").checked ? state.done + state.skipped : state.skipped;
      const response = await wastesort.call(query(offset));
      const page = await response.json();
      const seen = new Set(state.items.map((item) => item.id));
      state.items.push(...page.items.filter((item) => !seen.has(item.id)));
      state.labels = page.labels;
      if (fresh) state.total = page.total;
      state.next = page.next_offset;
      fillSelect($("source"), page.sources);
      fillSelect($("model-version"), page.model_versions);
      buildChoices();
      show();
    } catch (error) {
      $("card").hidden = true;
      $("progress").textContent = "Cannot load the captures.";
      $("status").textContent =
        error.status === 401 || error.status === 403
          ? `${error.message} — enter the admin key above.`
          : error.message;
    }
  }

  function buildChoices() {
    const choices = $("choices");
    choices.replaceChildren();
    const classes = state.labels.filter((name) => name !== "not_waste");
    classes.forEach((name, i) => choices.append(choice(String(i + 1), name)));
    choices.append(choice("0", "not_waste"));
    const skip = document.createElement("button");
    skip.type = "button";
    skip.className = "skip-button";
    skip.innerHTML = "<kbd>s</kbd> skip";
    skip.setAttribute("aria-keyshortcuts", "s");
    skip.addEventListener("click", () => advance(false));
    choices.append(skip);
    $("last-key").textContent = String(classes.length);
  }

  function choice(key, name) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.label = name;
    button.dataset.key = key;
    button.setAttribute("aria-keyshortcuts", key);
    const kbd = document.createElement("kbd");
    kbd.textContent = key;
    button.append(kbd, ` ${wastesort.label(name)}`);
    button.addEventListener("click", () => label(name));
    return button;
  }

  async function image(id) {
    if (!images.has(id)) {
      const promise = wastesort
        .call(`captures/${encodeURIComponent(id)}/image`, { headers: { accept: "image/jpeg" } })
        .then((response) => response.blob())
        .then((blob) => URL.createObjectURL(blob));
      images.set(id, promise);
    }
    return images.get(id);
  }

  function current() {
    return state.items[state.index];
  }

  async function show() {
    const progress = `${state.done} labelled, ${state.skipped} skipped of ${state.total}`;
    const item = current();
    if (!item) {
      if (state.next !== null) return load(false);
      $("card").hidden = true;
      $("progress").textContent = `${progress}. Nothing left to review.`;
      return;
    }
    const left = Math.max(0, state.total - state.done - state.skipped);
    $("progress").textContent = `${progress} · ${left} to go`;
    $("queue").textContent = QUEUES[item.queue] || item.queue;
    $("queue").dataset.queue = item.queue;
    $("capture-id").textContent = item.id;
    $("model").textContent = item.model_version;
    $("prediction").textContent =
      `${wastesort.label(item.predicted_class)} (${wastesort.percent(item.confidence)})` +
      (item.decision === "uncertain" ? ", uncertain" : "");
    $("feedback-note").textContent = item.feedback_label
      ? `A caller said: ${wastesort.label(item.feedback_label)}`
      : item.label ? `Labelled before: ${wastesort.label(item.label)}` : "";
    showBars(item.all_confidences, item.predicted_class);
    for (const button of $("choices").querySelectorAll("button[data-label]")) {
      button.classList.toggle("predicted", button.dataset.label === item.predicted_class);
    }
    $("card").hidden = false;
    $("card").dataset.captureId = item.id;
    const photo = $("photo");
    photo.alt = `Capture ${item.id}, predicted ${wastesort.label(item.predicted_class)}`;
    try {
      photo.src = await image(item.id);
    } catch (error) {
      $("status").textContent = `Photo not loaded: ${error.message}`;
    }
    const after = state.items[state.index + 1];
    if (after) image(after.id).catch(() => {});
  }

  function showBars(confidences, top) {
    const bars = $("bars");
    bars.replaceChildren();
    for (const [name, value] of Object.entries(confidences).sort((a, b) => b[1] - a[1])) {
      const li = document.createElement("li");
      if (name === top) li.className = "top";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
      const track = document.createElement("span");
      track.className = "track";
      track.append(fill);
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = wastesort.label(name);
      const number = document.createElement("span");
      number.className = "value";
      number.textContent = wastesort.percent(value);
      li.append(label, track, number);
      bars.append(li);
    }
  }

  async function label(name) {
    const item = current();
    if (!item || state.busy) return;
    state.busy = true;
    try {
      await wastesort.call(`captures/${encodeURIComponent(item.id)}/label`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ label: name }),
      });
      $("status").textContent = "";
      advance(true);
    } catch (error) {
      $("status").textContent = `Not labelled: ${error.message}`;
    } finally {
      state.busy = false;
    }
  }

  function advance(labelled) {
    if (!current()) return;
    if (labelled) state.done += 1;
    else state.skipped += 1;
    state.index += 1;
    show();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, select, textarea")) return;
    if ($("card").hidden) return;
    if (event.key === "s" || event.key === "S") {
      event.preventDefault();
      advance(false);
      return;
    }
    const button = $("choices").querySelector(`button[data-key="${CSS.escape(event.key)}"]`);
    if (button) {
      event.preventDefault();
      label(button.dataset.label);
    }
  });

  wastesort.keyForm($("key-form"), $("key"), () => load(true));
  $("filters").addEventListener("change", () => load(true));
  if (wastesort.key()) load(true);
})();
