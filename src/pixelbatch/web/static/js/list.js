// Past batches, newest first, paged, filtered by status; each opens its batch view.
import { ApiError, getJson } from "./api.js";
import { $, el, formatDate, pager } from "./dom.js";

const LIMIT = 20;
let showPage = null;

function row(batch) {
  const c = batch.counts;
  const href = `#/batches/${encodeURIComponent(batch.request_id)}`;
  return el(
    "tr",
    {},
    el("td", { text: formatDate(batch.created_at) }),
    el("td", {}, el("a", { href, text: batch.input_filename || batch.request_id })),
    el("td", {}, el("span", { class: "badge", "data-status": batch.status, text: batch.status })),
    el("td", { class: "num", text: `${c.images_done + c.images_failed} / ${c.images_total}` }),
    el(
      "td",
      {},
      el("progress", {
        max: 1,
        value: batch.progress,
        "aria-label": `Progress of ${batch.input_filename}`,
        text: `${Math.round(batch.progress * 100)}%`,
      }),
    ),
  );
}

export async function loadBatches(at = 0) {
  const query = new URLSearchParams({ offset: String(at), limit: String(LIMIT) });
  const status = $("batch-filter").value;
  if (status) query.set("status", status);
  try {
    const page = await getJson(`/api/batches?${query}`);
    $("batch-table").querySelector("tbody").replaceChildren(...page.items.map(row));
    $("batch-empty").hidden = page.total > 0;
    showPage(page);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    document.dispatchEvent(new CustomEvent("api-error", { detail: error }));
  }
}

export function setupList() {
  showPage = pager("batch-pager", loadBatches);
  $("batch-filter").addEventListener("change", () => loadBatches(0));
}
