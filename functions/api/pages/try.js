// `/`: send a photo to /predict, show the decision, the confidences and the time it took;
// "this was actually …" sends /feedback (by capture id when the photo was captured, else the photo).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("photo-form");
  const input = $("photo");
  const status = $("status");
  let last = null; // {file, answer}

  wastesort.keyForm($("key-form"), $("key"), () => {
    status.textContent = "Key saved for this tab.";
  });
  if (!wastesort.key()) $("key-box").open = false;

  function showBars(confidences, decision) {
    const bars = $("bars");
    bars.replaceChildren();
    const entries = Object.entries(confidences).sort((a, b) => b[1] - a[1]);
    for (const [name, value] of entries) {
      const li = document.createElement("li");
      if (name === decision) li.className = "top";
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = wastesort.label(name);
      const track = document.createElement("span");
      track.className = "track";
      track.setAttribute("role", "img");
      track.setAttribute("aria-label", `${wastesort.label(name)} ${wastesort.percent(value)}`);
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${Math.max(0, Math.min(1, value)) * 100}%`;
      track.append(fill);
      const number = document.createElement("span");
      number.className = "value";
      number.textContent = wastesort.percent(value);
      li.append(label, track, number);
      bars.append(li);
    }
    const select = $("actual");
    select.replaceChildren();
    for (const name of [...Object.keys(confidences), "not_waste"]) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = wastesort.label(name);
      select.append(option);
    }
  }

  async function classify(file) {
    if (!file) return;
    status.textContent = "Classifying…";
    const body = new FormData();
    body.append("file", file);
    const started = performance.now();
    try {
      const response = await wastesort.call("predict", { method: "POST", body });
      const answer = await response.json();
      const took = performance.now() - started;
      last = { file, answer };
      $("preview").src = URL.createObjectURL(file);
      $("decision").textContent = wastesort.label(answer.decision);
      $("decision").dataset.decision = answer.decision;
      $("meta").textContent =
        `${wastesort.percent(answer.confidence)} sure it is ${wastesort.label(answer.predicted_class)} · ` +
        `model ${answer.model_version} · ${Math.round(took)} ms (${Math.round(answer.latency_ms)} ms on the server)`;
      showBars(answer.all_confidences, answer.decision);
      $("result").hidden = false;
      status.textContent = `Goes in: ${wastesort.label(answer.decision)}.`;
    } catch (error) {
      status.textContent = `Could not classify the photo: ${error.message}`;
    }
  }

  input.addEventListener("change", () => classify(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    form.addEventListener(name, (event) => {
      event.preventDefault();
      form.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    form.addEventListener(name, () => form.classList.remove("over"));
  }
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    classify(event.dataTransfer.files[0]);
  });
  form.addEventListener("submit", (event) => event.preventDefault());

  $("feedback-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!last) return;
    const label = $("actual").value;
    const captureId = last.answer.capture_id;
    let options;
    if (captureId) {
      options = {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ capture_id: captureId, label }),
      };
    } else {
      const body = new FormData();
      body.append("file", last.file);
      body.append("label", label);
      options = { method: "POST", body };
    }
    try {
      await wastesort.call("feedback", options);
      status.textContent = `Thank you: recorded as ${wastesort.label(label)}.`;
    } catch (error) {
      status.textContent = `Feedback not sent: ${error.message}`;
    }
  });
})();
