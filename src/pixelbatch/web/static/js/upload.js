// The upload form: a CSV and its options to POST /api/upload; the CSV's problems, as the
// API lists them by row and column, shown under the form before anything runs.
import { ApiError, postForm } from "./api.js";
import { $, el } from "./dom.js";

function showProblems(error) {
  const box = $("upload-errors");
  const table = $("problem-table");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  $("upload-error-message").textContent = error.message;
  const details = error.details;
  let rows = [];
  if (details && Array.isArray(details.problems)) {
    rows = details.problems.map((p) => [p.row ?? "", p.column ?? "", p.message, p.value ?? ""]);
  } else if (Array.isArray(details)) {
    rows = details.map((p) => ["", p.field ?? "", p.message ?? "", ""]);
  }
  for (const cells of rows) {
    body.append(el("tr", {}, ...cells.map((c) => el("td", { text: c }))));
  }
  table.hidden = rows.length === 0;
  box.hidden = false;
}

function formData(form) {
  const data = new FormData();
  const file = $("csv-file").files[0];
  data.append("file", file, file.name);
  const quality = $("quality").value.trim();
  if (quality) data.append("quality", quality);
  else data.append("relative_quality", $("relative-quality").value.trim());
  data.append("output_format", $("output-format").value);
  for (const [id, name] of [["max-width", "max_width"], ["max-height", "max_height"]]) {
    const value = $(id).value.trim();
    if (value) data.append(name, value);
  }
  if ($("keep-metadata").checked) data.append("keep_metadata", "true");
  const webhook = $("webhook-url").value.trim();
  if (webhook) data.append("webhook_url", webhook);
  // The API refuses unknown fields; "normal" is its default, so only a change is sent.
  const priority = $("priority");
  if (priority.value !== "normal") data.append("priority", priority.value);
  return data;
}

export function setupUpload(onCreated) {
  const form = $("upload-form");
  const zone = $("drop-zone");
  const input = $("csv-file");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("upload-errors").hidden = true;
    if (!input.files.length) {
      showProblems(new ApiError(0, { message: "Choose a CSV file first." }));
      input.focus();
      return;
    }
    const button = $("upload-button");
    button.disabled = true;
    try {
      const created = await postForm("/api/upload", formData(form));
      form.reset();
      onCreated(created.request_id);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showProblems(error);
      $("upload-errors").focus?.();
    } finally {
      button.disabled = false;
    }
  });
}
