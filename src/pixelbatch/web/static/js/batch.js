// One batch: live progress by polling the status API, the byte chart, and the actions
// (download the output CSV, retry failed images, cancel, delete).
import { ApiError, deleteResource, getBlob, getJson, postJson } from "./api.js";
import { drawBytes } from "./chart.js";
import { $, el, formatDuration, setText } from "./dom.js";
import { loadImages, resetImages } from "./images.js";

const ACTIVE = new Set(["PENDING", "PROCESSING"]);
const POLL_MS = 1000;

let current = null; // the batch id being watched
let timer = null;
let lastStatus = null;
let unreachable = false; // the message says so; cleared once the server answers again

function rate(status) {
  // Images per second over the batch's run, from the server's own timestamps, so that a
  // reload (or a restart) does not reset it.
  const processed = status.counts.images_done + status.counts.images_failed;
  if (!status.started_at || !processed) return null;
  const start = Date.parse(status.started_at);
  const end = Date.parse(status.finished_at || status.updated_at);
  const seconds = (end - start) / 1000;
  return seconds > 0 ? processed / seconds : null;
}

function render(status) {
  const c = status.counts;
  setText("batch-file", status.input_filename);
  setText("batch-id", `request id ${status.request_id}`);
  setText("stat-status", status.status);
  $("stat-status").dataset.status = status.status;
  $("stat-priority-box").hidden = !status.priority;
  setText("stat-priority", status.priority || "");
  setText("stat-done", `${c.images_done} of ${c.images_total}`);
  setText("stat-failed", c.images_failed);
  setText("stat-pending", c.images_pending);
  $("progress-bar").value = status.progress;
  $("progress-bar").textContent = `${Math.round(status.progress * 100)}%`;
  const perSecond = rate(status);
  setText("stat-rate", perSecond ? `${perSecond.toFixed(1)} images/s` : "–");
  const active = ACTIVE.has(status.status);
  setText(
    "stat-eta",
    !active ? "finished" : perSecond ? formatDuration(c.images_pending / perSecond) : "–",
  );
  $("download-csv").disabled = !status.output_csv;
  $("retry-failed").disabled = active || c.images_failed === 0;
  $("cancel-batch").disabled = !active;
  $("delete-batch").disabled = false;
  drawBytes(status.bytes_in, status.bytes_out);
  const summary = $("error-summary");
  summary.replaceChildren(
    ...status.errors.map((e) =>
      el("li", {}, el("strong", { text: `${e.count} × ${e.code}` }), `: ${e.example}`),
    ),
  );
}

async function poll(id) {
  if (id !== current) return;
  try {
    const status = await getJson(`/api/status/${encodeURIComponent(id)}`);
    if (id !== current) return;
    const wasActive = lastStatus && ACTIVE.has(lastStatus.status);
    const changed =
      !lastStatus ||
      lastStatus.counts.images_done !== status.counts.images_done ||
      lastStatus.counts.images_failed !== status.counts.images_failed ||
      lastStatus.status !== status.status;
    lastStatus = status;
    render(status);
    if (unreachable) setText("action-message", "");
    unreachable = false;
    if (changed && (wasActive || !ACTIVE.has(status.status))) loadImages(id);
    // A batch has settled when it is final *and* its output CSV is written: the finaliser
    // runs just after the last image (or the cancel), so keep polling until then.
    if (ACTIVE.has(status.status) || !status.output_csv) {
      timer = setTimeout(() => poll(id), POLL_MS);
    }
  } catch (error) {
    if (id !== current) return;
    if (error instanceof ApiError && error.status !== 0 && error.status < 500) {
      document.dispatchEvent(new CustomEvent("api-error", { detail: error }));
      return;
    }
    // The server is restarting or unreachable: keep trying, slower.
    unreachable = true;
    setText("action-message", "Server unreachable; retrying…");
    timer = setTimeout(() => poll(id), POLL_MS * 3);
  }
}

export function watch(id) {
  clearTimeout(timer);
  current = id;
  lastStatus = null;
  resetImages(id);
  loadImages(id);
  poll(id);
}

export function stopWatching() {
  clearTimeout(timer);
  current = null;
}

async function act(label, fn) {
  setText("action-message", `${label}…`);
  try {
    const message = await fn();
    setText("action-message", message);
    clearTimeout(timer);
    poll(current);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    setText("action-message", `${label} failed: ${error.message}`);
  }
}

async function download() {
  const blob = await getBlob(`/api/batches/${encodeURIComponent(current)}/output.csv`);
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: `${current}-output.csv`, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return "Output CSV downloaded.";
}

export function setupBatch() {
  $("download-csv").addEventListener("click", () => act("Download", download));
  $("retry-failed").addEventListener("click", () =>
    act("Retry", async () => {
      const r = await postJson(`/api/batches/${encodeURIComponent(current)}/retry`);
      return `${r.requeued} image(s) queued again.`;
    }),
  );
  $("cancel-batch").addEventListener("click", () => {
    if (!window.confirm("Cancel this batch? Images not yet processed will not be.")) return;
    act("Cancel", async () => {
      await postJson(`/api/batches/${encodeURIComponent(current)}/cancel`);
      return "Batch cancelled.";
    });
  });
  $("delete-batch").addEventListener("click", async () => {
    const question = "Delete this batch? Its rows, output images and CSVs are removed for good.";
    if (!window.confirm(question)) return;
    const id = current;
    setText("action-message", "Delete…");
    try {
      await deleteResource(`/api/batches/${encodeURIComponent(id)}`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      setText("action-message", `Delete failed: ${error.message}`);
      return;
    }
    stopWatching();
    window.location.hash = "#/batches";
  });
}
