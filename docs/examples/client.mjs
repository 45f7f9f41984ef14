// Classify a photo with the wastesort API from JavaScript (browser or Node 18+: fetch + FormData).
//   node docs/examples/client.mjs http://127.0.0.1:8000 samples/glass/glass51.jpg
// tests/api/test_api_docs.py runs this file against the app.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";

export async function classify(apiUrl, blob, filename, apiKey) {
  const form = new FormData();
  form.append("file", blob, filename);
  const response = await fetch(`${apiUrl}/predict`, {
    method: "POST",
    body: form,
    headers: apiKey ? { "x-api-key": apiKey } : {},
  });
  const body = await response.json();
  if (!response.ok) {
    // application/problem+json: branch on body.type, show body.detail to people
    throw new Error(`${body.title}: ${body.detail} (${body.type})`);
  }
  return body; // { predicted_class, confidence, all_confidences, decision, model_version, ... }
}

const [apiUrl, path] = process.argv.slice(2);
const blob = new Blob([await readFile(path)], { type: "image/jpeg" });
console.log(JSON.stringify(await classify(apiUrl, blob, basename(path))));
