// The images of one batch: a paged table (50 a page, so a 50,000-image batch is fine), lazy
// thumbnails of the outputs, bytes before → after, failure reasons, and the before/after view.
import { ApiError, getBlob, getJson, localFileUrl } from "./api.js";
import { $, el, formatBytes, pager } from "./dom.js";

const LIMIT = 50;
let batchId = null;
let offset = 0;
let showPage = null;
let beforeUrl = null;

function bytesCell(image) {
  if (image.bytes_in === null || image.bytes_in === undefined) return el("td", { text: "–" });
  if (image.bytes_out === null || image.bytes_out === undefined) {
    return el("td", { text: formatBytes(image.bytes_in) });
  }
  const saved = image.bytes_in ? (100 * (image.bytes_in - image.bytes_out)) / image.bytes_in : 0;
  // Never a bigger file: the source kept (metadata stripped), or a growth that was asked for.
  let note = ` (−${saved.toFixed(0)}%)`;
  if (image.kept_original) note = ` (−${saved.toFixed(0)}%, original kept)`;
  else if (image.grew) note = ` (+${(-saved).toFixed(0)}%, grew)`;
  return el(
    "td",
    { class: "num" },
    `${formatBytes(image.bytes_in)} → ${formatBytes(image.bytes_out)}`,
    el("span", { class: "saved", text: note }),
  );
}

function thumbCell(image) {
  const src = localFileUrl(image.output_url);
  if (!src) return el("td", { text: "–" });
  return el(
    "td",
    {},
    el("img", {
      class: "thumb",
      src,
      loading: "lazy",
      decoding: "async",
      width: 64,
      height: 64,
      alt: `Output of ${image.product_name}, image ${image.position}`,
    }),
  );
}

function detailCell(image) {
  if (image.status === "FAILED") {
    return el(
      "td",
      { class: "reason" },
      el("strong", { text: image.error_code || "failed" }),
      el("span", { text: image.error_message || "" }),
    );
  }
  if (image.status === "DONE") {
    return el(
      "td",
      {},
      el("button", {
        type: "button",
        class: "small",
        text: "Before / after",
        "aria-label": `Compare before and after: row ${image.row}, image ${image.position}`,
        onclick: () => openCompare(image),
      }),
    );
  }
  return el("td", { text: "" });
}

function row(image) {
  return el(
    "tr",
    { "data-status": image.status },
    el("td", { class: "num", text: image.row }),
    el("td", { text: image.serial }),
    el(
      "td",
      { class: "product" },
      el("span", { class: "name", text: image.product_name }),
      el("span", { class: "url", text: image.input_url }),
    ),
    thumbCell(image),
    el("td", {}, el("span", { class: "badge", "data-status": image.status, text: image.status })),
    bytesCell(image),
    detailCell(image),
  );
}

export async function loadImages(id, at = offset) {
  if (id !== batchId) return;
  const status = $("image-filter").value;
  const query = new URLSearchParams({ offset: String(at), limit: String(LIMIT) });
  if (status) query.set("status", status);
  try {
    const page = await getJson(`/api/batches/${encodeURIComponent(id)}/images?${query}`);
    if (id !== batchId) return;
    offset = page.offset;
    $("image-table").querySelector("tbody").replaceChildren(...page.items.map(row));
    showPage(page);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
}

export function resetImages(id) {
  batchId = id;
  offset = 0;
  $("image-table").querySelector("tbody").replaceChildren();
}

async function openCompare(image) {
  const dialog = $("compare");
  $("compare-name").textContent = `${image.product_name} — row ${image.row}, image ${image.position}`;
  $("before-caption").textContent = `Before (original): ${formatBytes(image.bytes_in)}`;
  $("after-caption").textContent = `After (pixelbatch): ${formatBytes(image.bytes_out)}`;
  $("before-error").textContent = "";
  $("after-image").src = localFileUrl(image.output_url) || "";
  const before = $("before-image");
  before.removeAttribute("src");
  dialog.showModal();
  try {
    const blob = await getBlob(
      `/api/batches/${encodeURIComponent(batchId)}/images/${image.image_id}/original`,
    );
    if (beforeUrl) URL.revokeObjectURL(beforeUrl);
    beforeUrl = URL.createObjectURL(blob);
    before.src = beforeUrl;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    $("before-error").textContent = `The original is not available: ${error.message}`;
  }
}

export function setupImages() {
  showPage = pager("image-pager", (at) => loadImages(batchId, at));
  $("image-filter").addEventListener("change", () => loadImages(batchId, 0));
  $("compare-close").addEventListener("click", () => $("compare").close());
}
