// mrseg review: the case list, three planes with the label overlay, and decisions by key.
// Slices come from the server as raw values (float32 image, uint8/uint16 labels) already in
// display order (patient right on screen left); windowing, overlay and hover happen here.
"use strict";

const PLANES = ["axial", "coronal", "sagittal"];
const state = {
  cases: [], shown: [], current: null, meta: null, slices: {}, index: {}, active: "axial",
  low: 0, high: 1, opacity: 0.45, hidden: new Set(), overlay: true, colors: {}, names: {}, openedAt: 0,
};
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["X-Review-Token"] = token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function caseUrl(name, rest = "") { return `/api/cases/${encodeURIComponent(name)}${rest}`; }

// ---- case list -------------------------------------------------------------------------------

async function loadCases() {
  const data = await (await api("/api/cases")).json();
  state.cases = data.cases;
  $("folder").textContent = `${data.folder} (${data.kind})`;
  renderList();
}

function sortCases(rows) {
  const mode = $("sort").value;
  const copy = rows.slice();
  if (mode === "name") copy.sort((a, b) => a.case.localeCompare(b.case));
  if (mode === "uncertainty") copy.sort((a, b) => (b.uncertainty ?? -1) - (a.uncertainty ?? -1));
  if (mode === "undecided") copy.sort((a, b) => (a.decision ? 1 : 0) - (b.decision ? 1 : 0));
  return copy; // "worst": the server's order (failures, QC score, uncertainty)
}

function renderList() {
  const text = $("filter").value.trim().toLowerCase();
  const show = $("show").value;
  state.shown = sortCases(state.cases).filter((row) => {
    if (show === "undecided" && row.decision) return false;
    if (show === "flagged" && !row.flags.length) return false;
    if (["accept", "flag", "reject"].includes(show) && row.decision !== show) return false;
    if (!text) return true;
    return [row.case, row.status, row.decision, ...row.flags].join(" ").toLowerCase().includes(text);
  });
  const body = document.querySelector("#cases tbody");
  body.replaceChildren(...state.shown.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.case = row.case;
    if (state.current === row.case) tr.className = "current";
    const cells = [row.case, row.status, row.flags.length ? `${row.flags.length} (${row.score})` : "",
      row.uncertainty == null ? "" : row.uncertainty.toFixed(3), row.decision];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = value;
      if (i === 1 && !row.viewable) td.className = "failed";
      if (i === 2 && row.flags.length) { td.className = "bad"; td.title = row.flags.join("\n"); }
      if (i === 4 && value) td.className = `decision-${value}`;
      tr.appendChild(td);
    });
    tr.addEventListener("click", () => openCase(row.case));
    return tr;
  }));
  const decided = state.cases.filter((row) => row.decision).length;
  $("progress").textContent = `${decided} of ${state.cases.length} decided`;
}

// ---- one case --------------------------------------------------------------------------------

async function openCase(name) {
  state.current = name;
  state.openedAt = performance.now();
  const viewer = $("viewer");
  viewer.dataset.case = name;
  viewer.dataset.rendered = "";
  renderList();
  document.querySelector("#cases tr.current")?.scrollIntoView({ block: "nearest" });
  const row = state.cases.find((r) => r.case === name);
  $("case-name").textContent = name;
  $("case-status").textContent = row ? row.status : "";
  $("note").value = row?.decision_note || "";
  showDecision(row);
  if (!row || !row.viewable) {
    state.meta = null;
    PLANES.forEach((plane) => { const c = $(plane); c.width = 1; c.height = 1; });
    $("flags").replaceChildren();
    $("case-note").textContent = row ? `nothing to show: ${row.status}${row.note ? ": " + row.note : ""}` : "";
    $("classes").querySelector("tbody").replaceChildren();
    viewer.dataset.rendered = name;
    return;
  }
  let meta;
  try {
    meta = await (await api(caseUrl(name))).json();
  } catch (error) {
    $("case-note").textContent = `cannot open: ${error.message}`;
    return;
  }
  if (state.current !== name) return;
  state.meta = meta;
  state.names = {};
  state.colors = {};
  meta.classes.forEach((c) => { state.names[c.value] = c.name; state.colors[c.value] = c.color; });
  const [i, j, k] = meta.centre;
  state.index = { axial: k, coronal: j, sagittal: i };
  setWindow(meta.window[0], meta.window[1], true);
  renderDetails(meta);
  await Promise.all(PLANES.map((plane) => fetchPlane(plane)));
  if (state.current !== name) return;
  viewer.dataset.rendered = name;
  window.lastOpenMs = performance.now() - state.openedAt;
  warmNeighbour(1);
}

function warmNeighbour(step) {
  const at = state.shown.findIndex((r) => r.case === state.current);
  const next = state.shown[at + step];
  if (next && next.viewable) api(caseUrl(next.case, "/warm")).catch(() => {});
}

function renderDetails(meta) {
  const flags = $("flags");
  flags.replaceChildren(...meta.flags.map((text) => { const li = document.createElement("li"); li.textContent = text; return li; }));
  if (!meta.flags.length) flags.innerHTML = "<li>none</li>";
  $("case-note").textContent = meta.note || "";
  const body = $("classes").querySelector("tbody");
  body.replaceChildren(...meta.classes.map((c) => {
    const tr = document.createElement("tr");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !state.hidden.has(c.name);
    box.addEventListener("change", () => {
      if (box.checked) state.hidden.delete(c.name); else state.hidden.add(c.name);
      drawAll();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${c.color.join(",")})`;
    const name = document.createElement("td");
    name.append(box, swatch, document.createTextNode(c.name));
    const volume = document.createElement("td");
    volume.textContent = c.volume_ml == null ? "" : `${c.volume_ml.toFixed(1)} ml`;
    tr.append(name, volume);
    return tr;
  }));
}

async function fetchPlane(plane) {
  const name = state.current;
  const index = state.index[plane];
  const query = `/slice?plane=${plane}&index=${index}`;
  const [image, labels] = await Promise.all([api(caseUrl(name, query + "&layer=image")),
    api(caseUrl(name, query + "&layer=labels"))]);
  const rows = Number(image.headers.get("X-Rows"));
  const columns = Number(image.headers.get("X-Columns"));
  const pixels = new Float32Array(await image.arrayBuffer());
  const kind = labels.headers.get("X-Dtype") === "uint16" ? Uint16Array : Uint8Array;
  const values = new kind(await labels.arrayBuffer());
  if (state.current !== name || state.index[plane] !== index) return;
  state.slices[plane] = { rows, columns, pixels, values,
    rowSpacing: Number(image.headers.get("X-Row-Spacing")), columnSpacing: Number(image.headers.get("X-Column-Spacing")) };
  $(`${plane}-index`).textContent = `${index + 1} / ${state.meta.counts[plane]}`;
  draw(plane);
}

function draw(plane) {
  const cut = state.slices[plane];
  if (!cut) return;
  const canvas = $(plane);
  if (canvas.width !== cut.columns || canvas.height !== cut.rows) {
    canvas.width = cut.columns;
    canvas.height = cut.rows;
  }
  // physical aspect: a millimetre is as wide as it is high on screen
  const widthMm = cut.columns * cut.columnSpacing;
  const heightMm = cut.rows * cut.rowSpacing;
  const box = Math.min(canvas.parentElement.clientWidth || 360, 520);
  const scale = Math.min(box / widthMm, box / heightMm);
  canvas.style.width = `${Math.round(widthMm * scale)}px`;
  canvas.style.height = `${Math.round(heightMm * scale)}px`;
  const context = canvas.getContext("2d");
  const picture = context.createImageData(cut.columns, cut.rows);
  const out = picture.data;
  const low = state.low;
  const span = Math.max(state.high - state.low, 1e-6);
  const alpha = state.overlay ? state.opacity : 0;
  const hidden = new Set();
  for (const [value, name] of Object.entries(state.names)) if (state.hidden.has(name)) hidden.add(Number(value));
  for (let p = 0, q = 0; p < cut.pixels.length; p++, q += 4) {
    let gray = ((cut.pixels[p] - low) / span) * 255;
    gray = gray < 0 ? 0 : gray > 255 ? 255 : gray;
    const label = cut.values[p];
    if (label && alpha > 0 && !hidden.has(label)) {
      const color = state.colors[label] || [255, 255, 0];
      out[q] = gray * (1 - alpha) + color[0] * alpha;
      out[q + 1] = gray * (1 - alpha) + color[1] * alpha;
      out[q + 2] = gray * (1 - alpha) + color[2] * alpha;
    } else {
      out[q] = out[q + 1] = out[q + 2] = gray;
    }
    out[q + 3] = 255;
  }
  context.putImageData(picture, 0, 0);
}

function drawAll() { PLANES.forEach(draw); }

// ---- window, level, overlay ------------------------------------------------------------------

function setWindow(low, high, resetSliders) {
  state.low = low;
  state.high = high;
  if (resetSliders && state.meta) {
    const [min, max] = state.meta.range;
    const span = Math.max(max - min, 1);
    const width = $("window-width");
    const level = $("window-level");
    width.min = span / 200; width.max = span; width.value = high - low;
    level.min = min; level.max = max; level.value = (high + low) / 2;
  }
}

function onWindowSlider() {
  const width = Number($("window-width").value);
  const level = Number($("window-level").value);
  setWindow(level - width / 2, level + width / 2, false);
  drawAll();
}

function onPreset() {
  const presets = { soft: [400, 40], lung: [1500, -600], bone: [1800, 400] };
  const choice = $("preset").value;
  if (choice === "auto" && state.meta) setWindow(state.meta.window[0], state.meta.window[1], true);
  else if (presets[choice]) {
    const [width, level] = presets[choice];
    setWindow(level - width / 2, level + width / 2, false);
    $("window-width").value = width; $("window-level").value = level;
  }
  drawAll();
}

// ---- navigation in the volume ----------------------------------------------------------------

function moveSlice(plane, step) {
  if (!state.meta) return;
  const count = state.meta.counts[plane];
  const index = Math.min(count - 1, Math.max(0, state.index[plane] + step));
  if (index === state.index[plane]) return;
  state.index[plane] = index;
  fetchPlane(plane);
}

function pixelAt(canvas, event) {
  const cut = state.slices[canvas.dataset.plane];
  if (!cut) return null;
  const rect = canvas.getBoundingClientRect();
  const column = Math.floor(((event.clientX - rect.left) / rect.width) * cut.columns);
  const row = Math.floor(((event.clientY - rect.top) / rect.height) * cut.rows);
  if (column < 0 || row < 0 || column >= cut.columns || row >= cut.rows) return null;
  return { cut, column, row };
}

function onHover(event) {
  const hit = pixelAt(event.target, event);
  if (!hit) { $("hover").innerHTML = "&nbsp;"; return; }
  const p = hit.row * hit.cut.columns + hit.column;
  const label = hit.cut.values[p];
  const value = hit.cut.pixels[p];
  $("hover").textContent = `${label ? state.names[label] || `label ${label}` : "background"} · value ${value.toFixed(1)}`;
}

function onClick(event) {
  // centre the other two planes on the clicked point
  const plane = event.target.dataset.plane;
  const hit = pixelAt(event.target, event);
  if (!hit || !state.meta) return;
  setActive(plane);
  const top = state.meta.counts.axial - 1;
  if (plane === "axial") { state.index.sagittal = hit.column; state.index.coronal = hit.row; }
  if (plane === "coronal") { state.index.sagittal = hit.column; state.index.axial = top - hit.row; }
  if (plane === "sagittal") { state.index.coronal = hit.column; state.index.axial = top - hit.row; }
  PLANES.filter((p) => p !== plane).forEach(fetchPlane);
}

function setActive(plane) {
  state.active = plane;
  PLANES.forEach((p) => $(p).parentElement.classList.toggle("active", p === plane));
}

// ---- decisions -------------------------------------------------------------------------------

function showDecision(row) {
  ["accept", "flag", "reject"].forEach((d) => $(d).classList.toggle(`decision-${d}`, row?.decision === d));
  $("decision-state").textContent = row?.decision ? `decided: ${row.decision}` : "";
}

async function decide(decision) {
  const name = state.current;
  if (!name) return;
  const note = $("note").value;
  try {
    const response = await api(caseUrl(name, "/decision"), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ decision, note }),
    });
    const made = await response.json();
    const row = state.cases.find((r) => r.case === name);
    if (row) { row.decision = made.decision; row.decision_note = made.note; }
    showDecision(row);
    $("decision-state").textContent = made.effect ? `${made.decision}: ${made.effect}` : (made.decision ? `decided: ${made.decision}` : "");
    renderList();
    if (decision !== "clear") step(1);
  } catch (error) {
    $("decision-state").textContent = `not saved: ${error.message}`;
  }
}

function step(direction) {
  if (!state.shown.length) return;
  const at = state.shown.findIndex((r) => r.case === state.current);
  const next = state.shown[Math.min(state.shown.length - 1, Math.max(0, at + direction))];
  if (next && next.case !== state.current) openCase(next.case);
}

// ---- wiring ----------------------------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" && event.target.type !== "range" && event.target.type !== "checkbox") {
    if (event.key === "Enter" || event.key === "Escape") event.target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const keys = {
    j: () => step(1), k: () => step(-1), a: () => decide("accept"), f: () => decide("flag"),
    r: () => decide("reject"), n: () => $("note").focus(), o: () => { state.overlay = !state.overlay; drawAll(); },
    ArrowUp: () => moveSlice(state.active, 1), ArrowDown: () => moveSlice(state.active, -1),
    "1": () => setActive("axial"), "2": () => setActive("coronal"), "3": () => setActive("sagittal"),
    "?": () => alert("j/k next/previous case · a accept · f flag · r reject · n type a note · o overlay on/off\n"
      + "↑/↓ or the mouse wheel: slices · 1/2/3 axial/coronal/sagittal · click: centre the other planes"),
  };
  const action = keys[event.key];
  if (action) { event.preventDefault(); action(); }
});

PLANES.forEach((plane) => {
  const canvas = $(plane);
  canvas.addEventListener("mousemove", onHover);
  canvas.addEventListener("click", onClick);
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    setActive(plane);
    moveSlice(plane, event.deltaY < 0 ? 1 : -1);
  }, { passive: false });
});
$("filter").addEventListener("input", renderList);
$("sort").addEventListener("change", renderList);
$("show").addEventListener("change", renderList);
$("window-width").addEventListener("input", onWindowSlider);
$("window-level").addEventListener("input", onWindowSlider);
$("preset").addEventListener("change", onPreset);
$("opacity").addEventListener("input", (event) => { state.opacity = Number(event.target.value); drawAll(); });
document.querySelectorAll("#decide button").forEach((button) => {
  button.addEventListener("click", () => decide(button.dataset.decision));
});
setActive("axial");

loadCases().then(() => {
  if (state.shown.length) openCase(state.shown[0].case);
}).catch((error) => { $("folder").textContent = `cannot list cases: ${error.message}`; });
