// "Where the bytes went": one stacked bar, saved vs kept, as inline SVG (no library).
import { $, formatBytes } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function rect(x, width, cls) {
  const node = document.createElementNS(SVG, "rect");
  node.setAttribute("x", String(x));
  node.setAttribute("y", "0");
  node.setAttribute("width", String(Math.max(0, width)));
  node.setAttribute("height", "40");
  node.setAttribute("class", cls);
  return node;
}

export function drawBytes(bytesIn, bytesOut) {
  const svg = $("bytes-chart");
  svg.replaceChildren();
  const caption = $("bytes-caption");
  if (!bytesIn) {
    svg.append(rect(0, 400, "bar-empty"));
    caption.textContent = "No image finished yet.";
    return;
  }
  const kept = Math.min(bytesOut, bytesIn);
  const keptWidth = (400 * kept) / bytesIn;
  svg.append(rect(0, keptWidth, "bar-kept"), rect(keptWidth, 400 - keptWidth, "bar-saved"));
  const saved = bytesIn - bytesOut;
  const percent = ((100 * saved) / bytesIn).toFixed(1);
  caption.textContent =
    `${formatBytes(bytesIn)} before → ${formatBytes(bytesOut)} after: ` +
    `${formatBytes(Math.max(0, saved))} saved (${percent}%), ${formatBytes(bytesOut)} kept.`;
}
