// The mmindex page: calls the JSON API of the same server; no framework, no external assets.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("mmindex-token") || "";
let statusTimer = null;

// -- talking to the API ---------------------------------------------------------------------
async function api(path, options = {}) {
  const response = await send(path, options);
  return response.headers.get("content-type")?.includes("json") ? await response.json() : null;
}

// fetch with the token, throwing the server's message for an error status.
async function send(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) $("token-form").hidden = false;
  if (!response.ok) {
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
    throw new Error(body?.message || `${response.status} ${response.statusText}`);
  }
  return response;
}

// Server-sent events of a fetch response (EventSource cannot POST): yields [name, data].
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const fields = {};
      for (const line of buffer.slice(0, end).split("\n")) {
        const colon = line.indexOf(": ");
        if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 2);
      }
      buffer = buffer.slice(end + 2);
      if (fields.data) yield [fields.event || "message", JSON.parse(fields.data)];
    }
  }
}

// Thumbnails: a plain <img src> unless a token is needed, since <img> cannot send headers.
async function showImage(img, url) {
  if (!token) { img.src = url; return; }
  try {
    const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
    if (response.ok) img.src = URL.createObjectURL(await response.blob());
  } catch (_) { /* the alt text stays */ }
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", isError);
}

const baseName = (path) => path.split(/[\\/]/).pop();
// "report.pdf p. 3" for a PDF page (an image hit's page, or a text-layer passage's key)
const shownName = (hit) => [baseName(hit.path), hit.page ? `p. ${hit.page}` : hit.key]
  .filter(Boolean).join(" ");

// -- searching ------------------------------------------------------------------------------
function commonParams() {
  const params = new URLSearchParams({ k: $("k").value || "12", target: $("target").value });
  for (const f of $("filters").value.split(/\s+/).filter(Boolean)) params.append("filter", f);
  if ($("sort").value) params.set("sort", $("sort").value);
  return params;
}

let lastText = null;  // the text query whose results are shown: "where?" asks about it
let hasTiles = false;  // the index has tile vectors (/api/status): only then is "where?" offered

async function searchText(query, link = true) {
  const params = commonParams();
  params.set("q", query);
  if (link) linkTo(params);
  lastText = query;
  await run(`“${query}”`, () => api(`/api/search?${params}`));
}

// `label` names the image in the message: its file name, or its id when only the URL knew it.
async function searchLike(id, label, link = true) {
  lastText = null;
  const params = commonParams();
  params.set("like", id);
  if (link) linkTo(params);
  await run(`images like ${label}`, () => api(`/api/search?${params}`));
}

async function searchUpload(file) {
  if (!file) return;
  lastText = null;
  const form = new FormData();
  form.append("image", file);
  await run(`images like ${file.name}`,
            () => api(`/api/search?${commonParams()}`, { method: "POST", body: form }));
}

async function run(what, call) {
  say(`Searching for ${what}…`);
  try {
    const result = await call();
    renderHits($("results"), result.hits);
    say(`${result.hits.length} result${result.hits.length === 1 ? "" : "s"} for ${what}`);
  } catch (error) {
    say(error.message, true);
  }
}

// -- duplicates -----------------------------------------------------------------------------
async function findDuplicates() {
  const params = new URLSearchParams({ threshold: $("dup-threshold").value || "0.95", limit: "100" });
  $("dup-message").textContent = "Looking for duplicates…";
  $("dup-groups").replaceChildren();
  try {
    const report = await api(`/api/duplicates?${params}`);
    const shown = report.groups.length < report.total_groups ? ` (the first ${report.groups.length})` : "";
    $("dup-message").textContent = `${report.total_groups} groups among ${report.images} images${shown}.`;
    $("dup-groups").replaceChildren(...report.groups.map(duplicateGroup));
  } catch (error) {
    $("dup-message").textContent = error.message;
  }
}

// One group: what kind, how many files, and their thumbnails with sizes.
function duplicateGroup(group) {
  const box = document.createElement("div");
  box.className = "dup-group";
  const extra = group.kind === "identical"
    ? `${group.reclaimable_bytes} bytes in the extra copies`
    : `similarity ≥ ${group.similarity.toFixed(4)}`;
  const title = document.createElement("h3");
  title.textContent = `${group.kind}: ${group.files.length} files, ${extra}`;
  const list = document.createElement("ul");
  list.className = "grid";
  list.replaceChildren(...group.files.map(duplicateFile));
  box.append(title, list);
  return box;
}

function duplicateFile(file) {
  const item = document.createElement("li");
  item.className = "hit dup-file";  // the look of a search hit, without its button
  item.title = file.path;
  const img = document.createElement("img");
  img.alt = baseName(file.path);
  img.loading = "lazy";
  showImage(img, file.thumb_url);
  const size = file.width ? ` · ${file.width}×${file.height}` : "";
  item.append(img, span("name", baseName(file.path)), span("size", `${file.size} bytes${size}`));
  return item;
}

// -- rendering ------------------------------------------------------------------------------
function renderHits(list, hits) {
  list.replaceChildren(...hits.map((hit) => (hit.table === "texts" ? textItem(hit) : imageItem(hit))));
}

function imageItem(hit) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "hit";
  button.dataset.id = hit.id;
  const name = shownName(hit);
  button.setAttribute("aria-label", `${name}, score ${hit.score.toFixed(3)}: find similar images`);
  const img = document.createElement("img");
  img.alt = name;
  img.loading = "lazy";
  img.decoding = "async";
  showImage(img, hit.thumb_url || `/api/images/${hit.id}/thumb`);
  button.append(img, span("score", hit.score.toFixed(3)), span("name", name));
  const when = whenAndWhere(hit);
  if (when) button.append(span("taken", when));
  const tile = hit.box ? `matched in the tile ${hit.box[0]},${hit.box[1]} – ${hit.box[2]},${hit.box[3]}` : "";
  button.title = [hit.path, when, tile].filter(Boolean).join("\n");
  button.addEventListener("click", () => searchLike(hit.id, name));
  item.append(button);
  if (lastText && hasTiles) item.append(whereButton(hit, img, lastText));
  return item;
}

// "Where?": the thumbnail swaps to the image with the query's heatmap drawn over it, and back.
function whereButton(hit, img, query) {
  const where = document.createElement("button");
  where.type = "button";
  where.className = "where";
  where.textContent = "Where?";
  where.setAttribute("aria-pressed", "false");
  where.setAttribute("aria-label", `where in ${baseName(hit.path)} is “${query}”`);
  const params = new URLSearchParams({ id: hit.id, q: query });
  where.addEventListener("click", () => {
    const showing = where.getAttribute("aria-pressed") === "true";
    where.setAttribute("aria-pressed", String(!showing));
    img.classList.toggle("heat", !showing);
    showImage(img, showing ? (hit.thumb_url || `/api/images/${hit.id}/thumb`)
                           : `/api/heatmap.png?${params}`);
  });
  return where;
}

// "2024-07-01 09:00 · Google Pixel 7 · 43.70, 7.26": what the photo's EXIF says, if anything.
function whenAndWhere(hit) {
  const place = hit.latitude != null && hit.longitude != null
    ? `${hit.latitude.toFixed(2)}, ${hit.longitude.toFixed(2)}` : "";
  return [hit.taken ? hit.taken.replace("T", " ").slice(0, 16) : "", hit.camera || "", place]
    .filter(Boolean).join(" · ");
}

function textItem(hit) {
  const item = document.createElement("li");
  item.className = "text-hit";
  const text = document.createElement("p");
  text.textContent = hit.text || "";
  item.append(span("score", hit.score.toFixed(3)), text,
              span("name", [hit.path, hit.key].filter(Boolean).join(" ")));
  return item;
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

// -- index status ---------------------------------------------------------------------------
async function loadStatus() {
  clearTimeout(statusTimer);
  let busy = false;
  try {
    const status = await api("/api/status");
    busy = status.jobs.some((job) => job.state === "running" || job.state === "queued");
    $("status").textContent = describeStatus(status);
    hasTiles = (status.index?.tables?.tiles?.rows || 0) > 0;
    $("ask").hidden = false;
    showAskAvailability(status);
  } catch (error) {
    $("status").textContent = `Status unavailable: ${error.message}`;
  }
  statusTimer = setTimeout(loadStatus, busy ? 1500 : 15000);
}

function describeStatus(status) {
  if (!status.ready) return status.message || "No index yet.";
  const { model, generation, tables } = status.index;
  const parts = [`${model}`, `${tables.images?.rows ?? 0} images`, `${tables.texts?.rows ?? 0} texts`,
                 `generation ${generation}`];
  if (status.watch) parts.push(`watching ${status.watch.roots.length} folder${status.watch.roots.length === 1 ? "" : "s"}${status.watch.error ? ` (last ingest failed: ${status.watch.error})` : ""}`);
  const job = status.jobs[0];
  if (job && (job.state === "running" || job.state === "queued")) {
    parts.push(`ingesting: ${job.stage || job.state}${job.total ? ` ${job.done}/${job.total}` : ""}`);
  } else if (job?.state === "failed") {
    parts.push(`last ingest failed: ${job.error}`);
  }
  return parts.join(" · ");
}

// -- asking (when the server cannot answer, the form says why instead of failing) ------
function showAskAvailability(status) {
  const unavailable = status.ready && !status.ask_available;
  $("question").disabled = $("ask-submit").disabled = unavailable;
  $("ask-note").textContent = unavailable ? status.ask_message || "Asking is unavailable." : "";
  $("ask-note").hidden = !unavailable;
}

async function ask(question) {
  const answer = $("answer");
  answer.classList.remove("error");
  answer.textContent = "Thinking…";
  answer.setAttribute("aria-busy", "true");  // read out once complete, not token by token
  $("citations").replaceChildren();
  try {
    const response = await send("/api/ask", {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ question, k: 3, joint: $("joint").checked }),
    });
    let text = "";
    for await (const [name, data] of serverSentEvents(response)) {
      if (name === "token") answer.textContent = (text += data.text);
      else if (name === "error") throw new Error(data.message);
      else if (name === "answer") showAnswer(data);
    }
  } catch (error) {
    answer.textContent = error.message;
    answer.classList.add("error");
  } finally {
    answer.setAttribute("aria-busy", "false");
  }
}

function showAnswer(result) {
  $("answer").textContent = result.text;
  const cited = (result.citations || []).map((c) => ({ table: "images", score: 0, path: "", ...c }));
  const passages = (result.passages || []).map((p) => ({ table: "texts", ...p, text: `[${p.tag}] ${p.text}` }));
  renderHits($("citations"), [...cited, ...passages]);
}

// -- the address: each search is a link (bookmark it, share it, go back to it) -------------
// The URL holds the same parameters as the API call, so /?q=beach&k=4 is that search.
// An uploaded image is not in it: a link cannot carry the file.
function linkTo(params) {
  const url = `${location.pathname}?${params}`;
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
}

// Fill the form from the URL and run the search it names (on load, Back, and after a token).
function searchFromAddress() {
  const params = new URLSearchParams(location.search);
  choose($("target"), params.get("target"));
  choose($("sort"), params.get("sort"));
  $("k").value = params.get("k") || $("k").defaultValue;
  $("filters").value = params.getAll("filter").join(" ");
  if (params.has("filter")) $("filters").closest("details").open = true;
  $("q").value = params.get("q") || "";
  if (params.get("q")) searchText(params.get("q"), false);
  else if (params.get("like")) searchLike(params.get("like"), `image ${params.get("like")}`, false);
  else { $("results").replaceChildren(); say(""); }  // Back to the page before any search
}

// A select keeps its first option for a value it does not offer (an edited URL).
function choose(select, value) {
  const offered = [...select.options].some((option) => option.value === value);
  select.value = offered ? value : select.options[0].value;
}

// -- wiring ---------------------------------------------------------------------------------
function wireDragAndDrop() {
  const overlay = $("drop-overlay");
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  window.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    overlay.hidden = false;
  });
  window.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) overlay.hidden = true;
  });
  window.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    overlay.hidden = true;
    searchUpload(event.dataTransfer.files[0]);
  });
}

function wire() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const query = $("q").value.trim();
    if (query) searchText(query);
    else say("Type something to search for, or choose an image.", true);
  });
  $("upload-button").addEventListener("click", () => $("upload").click());
  $("upload").addEventListener("change", () => {
    searchUpload($("upload").files[0]);
    $("upload").value = "";
  });
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (question) ask(question);
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("mmindex-token", token);
    $("token-form").hidden = true;
    loadStatus();
    searchFromAddress();  // a linked search refused for want of the token: run it now
  });
  $("duplicates-form").addEventListener("submit", (event) => {
    event.preventDefault();
    findDuplicates();
  });
  wireDragAndDrop();
  window.addEventListener("popstate", searchFromAddress);
  loadStatus();
  searchFromAddress();
}

wire();
