// Building elements from data: always text nodes, never HTML parsed from data.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

export function setText(id, value) {
  $(id).textContent = value === null || value === undefined ? "" : String(value);
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 || value >= 100 ? 0 : 1)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function formatDate(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

// A pager over an API list: {offset, limit, total}; calls load(offset) on a move.
export function pager(id, load) {
  const box = $(id);
  const [prev, label, next] = [
    box.querySelector('[data-page="prev"]'),
    box.querySelector("span"),
    box.querySelector('[data-page="next"]'),
  ];
  let state = { offset: 0, limit: 50, total: 0 };
  prev.addEventListener("click", () => load(Math.max(0, state.offset - state.limit)));
  next.addEventListener("click", () => load(state.offset + state.limit));
  return (page) => {
    state = page;
    const last = Math.min(page.total, page.offset + page.limit);
    label.textContent = page.total
      ? `${page.offset + 1}–${last} of ${page.total}`
      : "none";
    prev.disabled = page.offset <= 0;
    next.disabled = last >= page.total;
  };
}
