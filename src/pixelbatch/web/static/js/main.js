// Routes by the URL hash, so a reload (or a server restart) reopens the same view:
//   #/            new batch        #/batches      the batch list
//   #/batches/ID  one batch, watched until it ends
import { apiKey, authRequired, forgetApiKey, getJson, setApiKey, ApiError } from "./api.js";
import { setupBatch, stopWatching, watch } from "./batch.js";
import { $ } from "./dom.js";
import { setupImages } from "./images.js";
import { loadBatches, setupList } from "./list.js";
import { setupUpload } from "./upload.js";

const VIEWS = ["key-view", "upload-view", "list-view", "batch-view"];

function show(view) {
  for (const id of VIEWS) $(id).hidden = id !== view;
  $("forget-key").hidden = !authRequired() || !apiKey();
}

function notice(message) {
  $("notice").textContent = message || "";
  $("notice").hidden = !message;
}

function askForKey(message) {
  stopWatching();
  show("key-view");
  $("key-error").textContent = message || "";
  $("api-key").focus();
}

function route() {
  notice("");
  if (authRequired() && !apiKey()) {
    askForKey();
    return;
  }
  const hash = window.location.hash || "#/";
  const match = hash.match(/^#\/batches\/([0-9a-fA-F-]{36})$/);
  if (match) {
    show("batch-view");
    watch(match[1].toLowerCase());
    return;
  }
  stopWatching();
  if (hash === "#/batches") {
    show("list-view");
    loadBatches(0);
    return;
  }
  show("upload-view");
}

document.addEventListener("api-error", (event) => {
  const error = event.detail;
  if (error.status === 401) {
    forgetApiKey();
    askForKey(`The server refused the key: ${error.message}`);
  } else if (error.status === 404) {
    notice(`Not found: ${error.message}`);
  } else {
    notice(error.message);
  }
});

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  setApiKey(key);
  try {
    await getJson("/api/batches?limit=1");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    forgetApiKey();
    $("key-error").textContent = `That key was refused: ${error.message}`;
    return;
  }
  $("api-key").value = "";
  route();
});

$("forget-key").addEventListener("click", () => {
  forgetApiKey();
  route();
});

setupUpload((id) => {
  window.location.hash = `#/batches/${id}`;
});
setupList();
setupImages();
setupBatch();
window.addEventListener("hashchange", route);
route();
