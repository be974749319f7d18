"use strict";
// The clinician page: upload, show each slice with its Grad-CAM overlay, the probability against the threshold,
// and the model card. Plain JS, no library; images arrive as base64 PNGs in the JSON answer and are decoded with
// createImageBitmap, so the page loads nothing from anywhere (the server's CSP is default-src 'self').

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("asemble-token") || "", info: null, names: [], result: null,
                index: 0, bitmaps: new Map() };
const MAP_LABELS = { fused: "fused (all branches)", wide_resnet: "wide residual CNN", convnext: "ConvNeXt",
                     vit: "Vision Transformer", last_conv: "last convolution" };

// A token in the address (#token=...) is never sent to the server as part of the URL; it is kept for this tab.
if (location.hash.startsWith("#token=")) {
  state.token = decodeURIComponent(location.hash.slice(7));
  sessionStorage.setItem("asemble-token", state.token);
  history.replaceState(null, "", location.pathname);
}

function authHeaders() { return state.token ? { Authorization: `Bearer ${state.token}` } : {}; }
function fmt(x, digits = 3) { return Number(x).toFixed(digits); }
function interval(block) {
  return block ? `${fmt(block.estimate)} (${fmt(block.ci_low)}-${fmt(block.ci_high)})` : "n/a";
}
function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}
function showMessage(text) { $("message").textContent = text; }
function mib(bytes) { return (bytes / 1048576).toFixed(1); }

// "file 3" in a server line becomes the name of the third file sent: names stay in this page.
function withNames(line) {
  return line.replace(/\bfiles? (\d+)(?:-(\d+))?/g, (match, a, b) => {
    const first = state.names[Number(a) - 1];
    if (!first) return match;
    if (b) return `${match} (${first} ... ${state.names[Number(b) - 1] || ""})`;
    return `${match} (${first})`;
  });
}

async function loadCard() {
  const response = await fetch("/api/model", { headers: authHeaders() });
  if (response.status === 401) {
    $("token-box").hidden = false;
    $("card-body").textContent = "This server needs its access token.";
    return;
  }
  if (!response.ok) { $("card-body").textContent = `The model card could not be loaded (${response.status}).`; return; }
  state.info = await response.json();
  $("token-box").hidden = true;
  renderLimits(state.info.limits);
  renderCard(state.info);
  $("banner-phantom").hidden = !state.info.card.training_data.synthetic_phantom;
}

function renderLimits(limits) {
  $("limits").textContent = `Limits per upload: ${mib(limits.request_bytes)} MiB, ${limits.files} files, ` +
    `${limits.slices} slices, images of at most ${limits.side}x${limits.side} pixels, at most ` +
    `${(limits.file_pixels / 1e6).toFixed(1)} million pixels in one file (e.g. 64 slices of 512x512), and ` +
    `${limits.seconds} s per request.`;
}

function renderCard(info) {
  const card = info.card, body = $("card-body");
  body.textContent = "";
  const grid = el("div", undefined, { class: "card-grid" });
  const arch = card.architecture, data = card.training_data;
  const facts = [
    ["Model", `${arch.model} / ${arch.preset} / ${arch.variant}, ${arch.parameters.toLocaleString("en")} parameters`],
    ["Input", `${arch.input}, classes: ${arch.classes.join(", ")}`],
    ["Checkpoint", `step ${arch.checkpoint_step}`],
    ["Training data", `${data.dataset}` + (data.splits ? ` (${Object.entries(data.splits).map(
      ([k, v]) => `${k} ${v}`).join(", ")} slices)` : "") + (data.synthetic_phantom ? ": a synthetic phantom" : "")],
    ["Decision threshold", `${fmt(info.threshold.value)}: ${info.threshold.how}`],
    ["Code", `served from commit ${card.commit.serving_code}; trained at ` +
      (card.commit.training || "a commit the workdir does not record")],
  ];
  const dl = el("dl");
  for (const [k, v] of facts) { dl.append(el("dt", k), el("dd", v)); }
  grid.append(dl);
  body.append(grid);

  body.append(el("h3", "Test and external evaluations"));
  if (!card.evaluations.length) {
    body.append(el("p", `No evaluation report was found in ${card.eval_dir}.`));
  } else {
    const wrap = el("div", undefined, { class: "table-scroll" });
    const table = el("table");
    const head = el("tr");
    for (const h of ["dataset / split", "role", "patients (slices)", "threshold", "AUC (95% CI)", "sensitivity",
                     "specificity", "patient AUC (mean probability)"]) head.append(el("th", h, { scope: "col" }));
    table.append(head);
    for (const e of card.evaluations) {
      for (const [name, block] of Object.entries(e.slice_level)) {
        const row = el("tr");
        const cells = [`${e.dataset} / ${e.split}` + (e.same_checkpoint ? "" : ` (step ${e.step}, not this checkpoint)`),
          e.role, `${e.n_patients} (${e.n_slices})`, `${name === "youden" ? "Youden" : name} = ${fmt(block.threshold)}`,
          interval(block.auc), interval(block.recall), interval(block.specificity),
          e.patient_level ? interval(e.patient_level.auc) : "n/a"];
        for (const c of cells) row.append(el("td", c));
        table.append(row);
      }
    }
    wrap.append(table);
    body.append(wrap);
    body.append(el("p", "95% confidence intervals: percentile bootstrap over patients. Thresholds were chosen on " +
      "the validation split and applied unchanged.", { class: "hint" }));
  }
  body.append(el("h3", "Grad-CAM localisation check"));
  if (!card.localization.length) {
    body.append(el("p", "No localisation check was run for this model: whether its maps point at lesions is unknown."));
  } else {
    for (const loc of card.localization) {
      const t = loc.trained || {};
      body.append(el("p", `${loc.file}: ${loc.layer} map, ${loc.n_slices} lesion slices from ${loc.n_patients} ` +
        `patients: pointing game ${interval(t.pointing_game)}, heat inside the lesion ${interval(t.heat_inside)}, ` +
        `pixel AUC ${interval(t.pixel_auc)}.`));
      for (const [name, block] of Object.entries(loc.differences)) {
        body.append(el("p", `${name}: pointing game ${interval(block.pointing_game)}.`, { class: "hint" }));
      }
    }
  }
}

// Files from a drop: folders are walked (webkitGetAsEntry), hidden files and DICOMDIR indexes left out.
async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry())
    .filter(Boolean);
  if (!entries.length) return [...dataTransfer.files];
  const files = [];
  async function walk(entry, path) {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      files.push({ file, name: path + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${path}${entry.name}/`);
      }
    }
  }
  for (const entry of entries) await walk(entry, "");
  return files;
}

function usable(items) {
  return items.map((item) => (item instanceof File ? { file: item, name: item.webkitRelativePath || item.name } : item))
    .filter(({ name }) => !name.split("/").some((part) => part.startsWith(".")) &&
            name.split("/").pop().toUpperCase() !== "DICOMDIR");
}

function refuseBeforeSending(items) {
  const limits = state.info && state.info.limits;
  if (!items.length) return "No file to upload (hidden files and DICOMDIR indexes are left out).";
  if (!limits) return null;
  if (items.length > limits.files) {
    return `Refused: ${items.length} files, more than the limit of ${limits.files} files per upload.`;
  }
  const total = items.reduce((sum, { file }) => sum + file.size, 0);
  if (total > limits.request_bytes) {
    return `Refused: the upload is ${mib(total)} MiB, larger than the limit of ${mib(limits.request_bytes)} MiB ` +
      "per request.";
  }
  return null;
}

function upload(rawItems) {
  const items = usable(rawItems);
  const refusal = refuseBeforeSending(items);
  showMessage(refusal || "");
  if (refusal) return;
  state.names = items.map(({ name }) => name);
  const form = new FormData();
  for (const { file } of items) form.append("files", file, "upload");  // the real name stays here
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/classify");
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.responseType = "json";
  $("progress-box").hidden = false;
  $("progress").value = 0;
  $("progress-text").textContent = "Uploading...";
  xhr.upload.onprogress = (event) => {
    if (event.lengthComputable) {
      $("progress").value = (100 * event.loaded) / event.total;
      $("progress-text").textContent = `Uploading... ${Math.round((100 * event.loaded) / event.total)}%`;
    }
  };
  xhr.upload.onload = () => {
    $("progress").removeAttribute("value");  // indeterminate while the model works
    $("progress-text").textContent = "Classifying...";
  };
  xhr.onerror = () => { $("progress-box").hidden = true; showMessage("The upload failed: the server could not be reached or closed the connection."); };
  xhr.onload = () => {
    $("progress-box").hidden = true;
    const answer = xhr.response || {};
    if (xhr.status !== 200) {
      const lines = [answer.error || `The server answered ${xhr.status}.`, ...(answer.errors || [])];
      showMessage(`Refused (${xhr.status}): ` + [...new Set(lines)].map(withNames).join(" | "));
      if (xhr.status === 401) $("token-box").hidden = false;
      return;
    }
    showResult(answer);
  };
  xhr.send(form);
}

function bytesOf(base64) { return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)); }
async function bitmap(base64) {
  if (!state.bitmaps.has(base64)) {
    state.bitmaps.set(base64, createImageBitmap(new Blob([bytesOf(base64)], { type: "image/png" })));
  }
  return state.bitmaps.get(base64);
}

// OpenCV's JET colour map (what the command-line overlays use), as its piecewise-linear formula.
function jet(v) {
  const c = (x) => Math.max(0, Math.min(1, x));
  return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))];
}
async function heatCanvas(base64) {
  const image = await bitmap(base64);
  const canvas = document.createElement("canvas");
  canvas.width = image.width; canvas.height = image.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const [r, g, b] = jet(pixels.data[i] / 255);
    pixels.data[i] = 255 * r; pixels.data[i + 1] = 255 * g; pixels.data[i + 2] = 255 * b; pixels.data[i + 3] = 255;
  }
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

function showResult(answer) {
  state.result = answer;
  state.index = 0;
  state.bitmaps.clear();
  $("result").hidden = false;
  const slices = answer.slices;
  const branch = $("branch");
  branch.textContent = "";
  const names = Object.keys(slices[0].maps).sort((a, b) => (a === "fused" ? -1 : b === "fused" ? 1 : 0));
  for (const name of names) branch.append(el("option", MAP_LABELS[name] || name, { value: name }));
  $("slice-box").hidden = slices.length < 2;
  $("slice").max = String(slices.length - 1);
  $("slice").value = "0";
  const strip = $("strip");
  strip.textContent = "";
  slices.forEach((s, k) => {
    const bar = el("div", undefined, { class: "bar", title: `slice ${k + 1}: ${fmt(s.probability)}` });
    bar.style.height = `${Math.max(2, 100 * s.probability)}%`;
    bar.addEventListener("click", () => { $("slice").value = String(k); selectSlice(k); });
    strip.append(bar);
  });
  const line = el("div", undefined, { class: "threshold" });
  line.style.bottom = `${100 * answer.threshold.value}%`;
  strip.append(line);
  const study = answer.study;
  $("study").textContent = `Whole upload: mean probability of ${answer.positive_class} over ${study.n_slices} ` +
    `slice${study.n_slices === 1 ? "" : "s"}: ${fmt(study.mean_probability)}. This is ${study.how}.`;
  $("errors-box").hidden = !answer.errors.length;
  $("errors").textContent = "";
  for (const line of answer.errors) $("errors").append(el("li", withNames(line)));
  selectSlice(0);
  $("result-title").scrollIntoView({ block: "nearest" });
}

function sourceName(s) {
  const number = s.files[0];
  const name = s.files.length > 1 ? `DICOM series (${s.files.length} files)` : state.names[number - 1] || s.source;
  return s.slice === null ? name : `${name}, slice ${s.slice + 1}`;
}

function selectSlice(k) {
  state.index = k;
  const answer = state.result, s = answer.slices[k], t = answer.threshold.value;
  $("slice-value").textContent = `${k + 1} of ${answer.slices.length}`;
  [...$("strip").querySelectorAll(".bar")].forEach((bar, j) => bar.classList.toggle("current", j === k));
  $("verdict").textContent = `${s.class}: probability of ${answer.positive_class} ${fmt(s.probability)}`;
  $("prob-fill").style.width = `${100 * s.probability}%`;
  $("prob-threshold").style.left = `calc(${100 * t}% - 1px)`;
  const above = s.probability >= t;
  $("sentence").textContent = `The model gives this slice a probability of ${fmt(s.probability)} of ` +
    `${answer.positive_class}. Its decision threshold is ${fmt(t)} (${answer.threshold.how}); the slice is ` +
    `${above ? "at or above" : "below"} it, so it is called ${s.class}. The overlay shows where the image raised ` +
    `the model's score for "${s.explained_class}" (Grad-CAM): it is not an outline of a lesion. A research ` +
    "model's output, not a diagnosis.";
  $("view-caption").textContent = `${sourceName(s)}: the slice as the model saw it (preprocessed), with the ` +
    `Grad-CAM of "${s.explained_class}".`;
  draw();
}

async function draw() {
  const answer = state.result;
  if (!answer) return;
  const s = answer.slices[state.index];
  const opacity = Number($("opacity").value);
  $("opacity-value").textContent = fmt(opacity, 2);
  const [grey, heat] = await Promise.all([bitmap(s.image), heatCanvas(s.maps[$("branch").value])]);
  if (answer !== state.result || s !== answer.slices[state.index]) return;  // a newer choice was made meanwhile
  const view = $("view");
  view.width = grey.width; view.height = grey.height;
  const ctx = view.getContext("2d");
  ctx.globalAlpha = 1;
  ctx.drawImage(grey, 0, 0);
  ctx.globalAlpha = opacity;
  ctx.drawImage(heat, 0, 0);
  ctx.globalAlpha = 1;
  view.setAttribute("aria-label", `${sourceName(s)}, ${s.class}, probability ${fmt(s.probability)}, overlay ` +
    `${$("branch").value} at opacity ${fmt(opacity, 2)}`);
  view.dataset.drawn = `${state.index}:${$("branch").value}:${opacity}`;
}

$("opacity").addEventListener("input", draw);
$("branch").addEventListener("change", draw);
$("slice").addEventListener("input", () => selectSlice(Number($("slice").value)));
$("file-input").addEventListener("change", (e) => { upload([...e.target.files]); e.target.value = ""; });
$("folder-input").addEventListener("change", (e) => { upload([...e.target.files]); e.target.value = ""; });
const drop = $("drop");
drop.addEventListener("keydown", (e) => {
  if (e.target === drop && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); $("file-input").click(); }
});
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  upload(await droppedFiles(e.dataTransfer));
});
$("token-save").addEventListener("click", () => {
  state.token = $("token").value;
  sessionStorage.setItem("asemble-token", state.token);
  loadCard();
});
loadCard();
