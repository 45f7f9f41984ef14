// Shared by both pages: the key typed once (session storage, this tab only) and API calls.
// Every URL is relative, so the pages work at / and behind an API Gateway stage (/prod/).
"use strict";

const KEY_STORE = "wastesort.key";

const wastesort = {
  key() {
    return sessionStorage.getItem(KEY_STORE) || "";
  },

  setKey(value) {
    if (value) sessionStorage.setItem(KEY_STORE, value);
    else sessionStorage.removeItem(KEY_STORE);
  },

  // fetch() with the key (as x-api-key: API Gateway checks it, the app checks admin keys).
  async call(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = wastesort.key();
    if (key) headers.set("x-api-key", key);
    const response = await fetch(path, { ...options, headers });
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try {
        const problem = await response.json();
        detail = problem.detail || problem.title || detail;
      } catch (_) {
        // not a problem document (e.g. the gateway's own 403): keep the status line
      }
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    return response;
  },

  // Wire a key form: prefill from session storage, save on submit, then call `onSave`.
  keyForm(form, input, onSave) {
    input.value = wastesort.key();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      wastesort.setKey(input.value.trim());
      if (onSave) onSave();
    });
  },

  percent(value) {
    return `${(value * 100).toFixed(1)}%`;
  },

  label(name) {
    return name === "not_waste" ? "not waste" : name.replace(/_/g, " ");
  },
};
