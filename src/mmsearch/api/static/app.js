// mmsearch web page: reads /healthz, posts the search form to /search, renders the result grid.
// No build step and no dependencies. Every value from the server is inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search-form");
const imageInput = $("image-input");
let chosenFile = null;
let timer = null;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmtMs(ms) {
  if (ms === undefined || ms === null) return "–";
  return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : Math.round(ms) + " ms";
}

function fmtPrice(p) {
  return p === null || p === undefined ? "price n/a" : "$" + Number(p).toFixed(2);
}

// ---------------------------------------------------------------- health + smoke banner

async function loadHealth() {
  const box = $("health");
  try {
    const resp = await fetch("/healthz", { cache: "no-store" });
    const h = await resp.json();
    $("smoke-banner").hidden = !h.smoke;
    const m = h.milvus || {};
    if (h.status === "ok" || h.status === "busy") {
      box.className = "health ok";
      const count = m.count === null || m.count === undefined ? "?" : m.count.toLocaleString();
      const enc = (h.models && h.models.encoder && h.models.encoder.id) || "encoder";
      $("health-text").textContent = `Milvus ${m.mode || ""} · ${m.collection} · ${count} images · ${enc}`;
    } else {
      box.className = "health bad";
      $("health-text").textContent = h.error ? `${h.error.code}: ${h.error.message}` : "service unavailable";
      box.title = $("health-text").textContent;
    }
    // Modes the loaded encoder cannot serve (joint with CLIP/SigLIP) are greyed out.
    const modes = h.models && h.models.encoder && h.models.encoder.modes;
    if (Array.isArray(modes)) {
      for (const opt of $("mode").options) opt.disabled = opt.value !== "" && !modes.includes(opt.value);
    }
    const hasReranker = Boolean(h.models && h.models.reranker);
    const toggle = $("rerank");
    toggle.disabled = !hasReranker;
    toggle.closest(".switch").classList.toggle("disabled", !hasReranker);
    if (!hasReranker) toggle.closest(".switch").title = "The server was started without the reranker (--no-rerank)";
  } catch (err) {
    box.className = "health bad";
    $("health-text").textContent = "server not reachable";
  }
}

// ---------------------------------------------------------------- category facets

async function loadCategories() {
  const select = $("category");
  try {
    const resp = await fetch("/categories", { cache: "no-store" });
    if (!resp.ok) return;  // nothing indexed yet, or Milvus down: the health line says which
    const body = await resp.json();
    for (const c of body.categories || []) {
      const opt = document.createElement("option");
      opt.value = c.name;
      opt.textContent = `${c.name} (${c.count.toLocaleString()})`;
      select.append(opt);
    }
  } catch (err) {
    /* the search still works without the list */
  }
}

// ---------------------------------------------------------------- image choice

function setFile(file) {
  chosenFile = file || null;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  if (chosenFile) {
    preview.src = URL.createObjectURL(chosenFile);
    preview.hidden = false;
    $("dz-text").hidden = true;
    $("dz-hint").hidden = true;
    $("file-name").textContent = `${chosenFile.name} · ${(chosenFile.size / 1024).toFixed(1)} KB`;
    $("file-row").hidden = false;
  } else {
    preview.removeAttribute("src");
    preview.hidden = true;
    $("dz-text").hidden = false;
    $("dz-hint").hidden = false;
    $("file-row").hidden = true;
    imageInput.value = "";
  }
}

imageInput.addEventListener("change", () => setFile(imageInput.files[0]));
$("clear-image").addEventListener("click", () => setFile(null));
const dz = $("dropzone");
["dragenter", "dragover"].forEach((t) => dz.addEventListener(t, (e) => { e.preventDefault(); dz.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => dz.addEventListener(t, () => dz.classList.remove("over")));
dz.addEventListener("drop", (e) => {
  e.preventDefault();
  const file = e.dataTransfer.files && e.dataTransfer.files[0];
  if (file) setFile(file);
});

// ---------------------------------------------------------------- progress + errors

function setBusy(busy) {
  const btn = $("search-btn");
  btn.disabled = busy;
  btn.classList.toggle("busy", busy);
  btn.querySelector(".btn-label").textContent = busy ? "Searching…" : "Search";
  $("progress").hidden = !busy;
  clearInterval(timer);
  if (busy) {
    const start = performance.now();
    const rerank = $("rerank").checked;
    const tick = () => {
      const s = ((performance.now() - start) / 1000).toFixed(1);
      $("progress-text").textContent = `${rerank ? "Retrieving and reranking" : "Retrieving"}… ${s} s`;
    };
    tick();
    timer = setInterval(tick, 100);
  }
}

function showError(code, message, status) {
  const box = $("error");
  box.replaceChildren(el("span", "code", `${status ? status + " · " : ""}${code}`), el("span", "", message));
  box.hidden = false;
}

// ---------------------------------------------------------------- results

function renderTimings(t, roundTripMs) {
  const chips = $("timings");
  chips.replaceChildren();
  const add = (label, value) => {
    if (value === undefined || value === null) return;
    const chip = el("span", "chip");
    chip.append(label + " ", el("b", "", fmtMs(value)));
    chips.append(chip);
  };
  add("encode", t.encode_ms);
  add("search", t.search_ms);
  add("rerank", t.rerank_ms);
  add("prefill", t.rerank_prefill_ms);
  add("decode", t.rerank_decode_ms);
  add("server total", t.total_ms);
  add("round trip", roundTripMs);
}

function renderRerank(rr) {
  const box = $("rerank-box");
  if (!rr) { box.hidden = true; return; }
  box.hidden = false;
  const badge = $("rerank-status");
  badge.className = "badge " + rr.status;
  badge.textContent = rr.status;
  $("rerank-why").textContent = rr.reason || "";
  $("rerank-reasons").textContent = rr.reasons || "(no reasons given)";
  $("rerank-raw-box").hidden = !rr.raw_output;
  $("rerank-raw").textContent = rr.raw_output || "";
}

function card(hit, change) {
  const art = el("article", "card panel");
  art.dataset.id = hit.id;
  const thumb = el("div", "thumb");
  const img = el("img");
  img.loading = "lazy";
  img.alt = hit.title || hit.id;
  img.src = hit.thumbnail_url;
  img.addEventListener("error", () => img.replaceWith(el("span", "broken", "image unavailable")));
  thumb.append(img, el("span", "rank", "#" + hit.rank));
  if (change && change.before !== change.after) {
    const up = change.after < change.before;
    thumb.append(el("span", "move " + (up ? "up" : "down"), `${up ? "▲" : "▼"} #${change.before} → #${change.after}`));
  }
  const body = el("div", "body");
  body.append(el("h3", "title", hit.title || hit.id));
  const meta = el("div", "meta");
  meta.append(el("span", "price", fmtPrice(hit.price)));
  if (hit.average_rating !== null && hit.average_rating !== undefined) {
    const n = hit.rating_number ? ` (${Number(hit.rating_number).toLocaleString()})` : "";
    meta.append(el("span", "rating", `★ ${Number(hit.average_rating).toFixed(1)}${n}`));
  }
  body.append(meta);
  body.append(el("div", "sub", hit.main_category || hit.parent_asin || hit.id));
  let scoreText = `score ${Number(hit.score).toFixed(4)}`;
  if (change && change.before !== change.after) scoreText += ` · retrieved #${change.before}`;
  body.append(el("div", "score", scoreText));
  art.append(thumb, body);
  return art;
}

function renderResults(data, roundTripMs) {
  const hits = data.hits || [];
  const changes = new Map((data.rank_changes || []).map((c) => [c.id, c]));
  const grid = $("grid");
  grid.replaceChildren(...hits.map((h) => card(h, changes.get(h.id))));
  $("empty").hidden = hits.length > 0;
  if (!hits.length) $("empty").firstElementChild.textContent = "No products matched.";
  const moved = (data.rank_changes || []).filter((c) => c.before !== c.after).length;
  let text = `${hits.length} result${hits.length === 1 ? "" : "s"} · ${data.mode} retrieval`;
  if (data.rerank) text += ` · reranked (${moved} moved)`;
  if (data.smoke) text += " · smoke models";
  $("summary-text").textContent = text;
  $("summary").hidden = false;
  renderTimings(data.timings || {}, roundTripMs);
  renderRerank(data.rerank);
}

// ---------------------------------------------------------------- submit

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  $("error").hidden = true;
  const fd = new FormData();
  if (chosenFile) fd.append("image", chosenFile, chosenFile.name);
  const text = (name) => $(name).value.trim();
  fd.append("instruction", text("instruction"));
  fd.append("k", text("k") || "9");
  for (const name of ["category", "min_price", "max_price", "min_rating"]) {
    if (text(name)) fd.append(name, text(name));
  }
  fd.append("mode", $("mode").value);
  fd.append("one_per_product", $("one_per_product").checked ? "true" : "false");
  if (text("weights")) fd.append("weights", text("weights"));
  fd.append("rerank", $("rerank").checked ? "true" : "false");

  setBusy(true);
  const start = performance.now();
  try {
    const resp = await fetch("/search", { method: "POST", body: fd });
    let body = null;
    try { body = await resp.json(); } catch (_) { body = null; }
    if (!resp.ok) {
      showError(body && body.error ? body.error : "http_error",
                body && body.message ? body.message : `the server answered ${resp.status}`, resp.status);
      return;
    }
    renderResults(body, performance.now() - start);
  } catch (err) {
    showError("network_error", "could not reach the server: " + err.message);
  } finally {
    setBusy(false);
  }
});

loadHealth();
loadCategories();
