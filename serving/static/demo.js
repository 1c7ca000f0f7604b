// Upload an image to POST /v1/detect and draw the returned boxes on a canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const status = (text, isError = false) => {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
};
const colour = (label) => `hsl(${Math.round((label * 0.618033988749895 % 1) * 360)}, 85%, 50%)`;

async function loadModels() {
  const response = await fetch("/v1/models");
  const body = await response.json();
  for (const m of body.models.filter((m) => m.task === "detection")) {
    const option = new Option(`${m.name} (${m.backend})`, m.name, m.name === body.default, m.name === body.default);
    $("model").add(option);
  }
}

function draw(bitmap, result) {
  const canvas = $("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const line = Math.max(1, Math.round(Math.max(bitmap.width, bitmap.height) / 400));
  ctx.lineWidth = line;
  ctx.font = `${Math.max(10, Math.round(Math.max(bitmap.width, bitmap.height) / 60))}px sans-serif`;
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
  const file = $("file").files[0];
  if (!file) return;
  status(`Detecting in ${file.name}…`);
  const params = new URLSearchParams({ model: $("model").value, score_threshold: $("threshold").value });
  try {
    const response = await fetch(`/v1/detect?${params}`, {
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    });
    const body = await response.json();
    if (!response.ok) {
      status(`Error ${response.status}: ${body.error ? body.error.message : response.statusText}`, true);
      return;
    }
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    draw(bitmap, body);
    status(`${body.detections.length} detections by ${body.model.name} in ${body.timings.total_ms.toFixed(0)} ms ` +
           `(${body.image.width}x${body.image.height}).`);
  } catch (error) {
    status(`Request failed: ${error}`, true);
  }
}

$("file").addEventListener("change", detect);
$("threshold").addEventListener("change", detect);
$("model").addEventListener("change", detect);
loadModels().catch((error) => status(`Could not list models: ${error}`, true));
