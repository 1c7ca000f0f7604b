// Send a photo (a file, or a packaged sample) to POST /v1/detect and draw the returned boxes on a canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const status = (text, isError = false) => {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
};
const colour = (label) => `hsl(${Math.round((label * 0.618033988749895 % 1) * 360)}, 85%, 50%)`;
let models = {};
let current = null; // the last photo sent: {blob, name}

async function loadModels() {
  const response = await fetch("/v1/models");
  const body = await response.json();
  for (const m of body.models.filter((m) => m.task === "detection")) {
    models[m.name] = m;
    $("model").add(new Option(`${m.name} (${m.backend})`, m.name, m.name === body.default, m.name === body.default));
  }
  describe();
}

function describe() {
  const m = models[$("model").value];
  if (!m) {
    $("about").textContent = "No detection model is served.";
    return;
  }
  const preview = m.categories.slice(0, 8).join(", ") + (m.categories.length > 8 ? ", …" : "");
  $("about").textContent = `${m.name} (${m.arch || m.task}, ${m.backend}) finds ${m.categories.length} ` +
    `${m.categories.length === 1 ? "class" : "classes"}: ${preview}${preview.endsWith("…") ? "" : "."}`;
  $("class-list").textContent = m.categories.join(", ");
}

function clearResult() {
  const canvas = $("canvas");
  canvas.width = canvas.height = 0;
  delete canvas.dataset.detections;
  $("detections").replaceChildren();
}

function draw(bitmap, result) {
  const canvas = $("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const line = Math.max(1, Math.round(Math.max(bitmap.width, bitmap.height) / 400));
  ctx.lineWidth = line;
  ctx.font = `${Math.max(12, Math.round(Math.max(bitmap.width, bitmap.height) / 35))}px sans-serif`;
  ctx.textBaseline = "bottom";
  const list = $("detections");
  list.replaceChildren();
  for (const d of result.detections) {
    const [x1, y1, x2, y2] = d.box;
    ctx.strokeStyle = ctx.fillStyle = colour(d.label);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.name} ${d.score.toFixed(2)}`;
    const width = ctx.measureText(text).width + 2 * line;
    ctx.fillRect(x1, y1 - parseInt(ctx.font) - line, width, parseInt(ctx.font) + line);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x1 + line, y1);
    const item = document.createElement("li");
    item.textContent = `${text} [${d.box.map((v) => v.toFixed(0)).join(", ")}]`;
    list.append(item);
  }
  canvas.dataset.detections = String(result.detections.length);
}

async function detect() {
  if (!current) return;
  status(`Detecting in ${current.name}…`);
  const params = new URLSearchParams({ model: $("model").value, score_threshold: $("threshold").value });
  try {
    const response = await fetch(`/v1/detect?${params}`, {
      method: "POST", body: current.blob,
      headers: { "Content-Type": current.blob.type || "application/octet-stream" },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      clearResult();
      status(`Could not detect in ${current.name}: ${body.error ? body.error.message : response.statusText} ` +
             `(HTTP ${response.status}).`, true);
      return;
    }
    const bitmap = await createImageBitmap(current.blob, { imageOrientation: "from-image" });
    draw(bitmap, body);
    status(`${body.detections.length} detections by ${body.model.name} in ${body.timings.total_ms.toFixed(0)} ms ` +
           `(${body.image.width}x${body.image.height}).`);
  } catch (error) {
    clearResult();
    status(`Could not detect in ${current.name}: ${error}`, true);
  }
}

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) {
    current = { blob: file, name: file.name };
    detect();
  }
});
for (const button of document.querySelectorAll("button[data-sample]")) {
  button.addEventListener("click", async () => {
    const response = await fetch(button.dataset.sample);
    current = { blob: await response.blob(), name: `the ${button.textContent} sample` };
    detect();
  });
}
$("threshold").addEventListener("input", () => {
  $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
});
$("threshold").addEventListener("change", detect);
$("model").addEventListener("change", () => {
  describe();
  detect();
});
loadModels().catch((error) => status(`Could not list models: ${error}`, true));
