// The history page: the researcher's batches, newest first, each opening onto its jobs (the same rows
// as the upload page, with Retry where it can succeed). Filters and the page number live in the URL.
import { Rows, badgeClass, label } from "./upload/rows.js";
import { api, el, human, plural, say } from "./upload/util.js";

const $ = (id) => document.getElementById(id);
const form = $("history-filters");

function params() {
  return new URLSearchParams(window.location.search);
}

// "Already in OMERO" -> "already in OMERO": only the first letter, a name keeps its capitals
const lower = (text) => text.charAt(0).toLowerCase() + text.slice(1);

function counts(states, toCheck) {
  const line = el("span", { class: "counts" });
  const badge = (cls, text) => line.append(el("span", { class: cls }, text), " ");
  for (const [state, n] of Object.entries(states)) {
    // imported jobs with warnings are counted apart, marked as their rows are: never plain green
    const plain = state === "imported" ? n - toCheck : n;
    // a job not sent completely wears the pending badge (its symbol), with its own label
    if (plain) badge(badgeClass(state === "uploading" ? "pending" : state), `${plain} ${lower(label(state))}`);
    if (state === "imported" && toCheck) badge(`${badgeClass(state)} state-check`, `${toCheck} ${lower(label(state))}, to check`);
  }
  return line;
}

function when(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function batchItem(batch) {
  const item = el("details", { class: "card batch", "data-batch": batch.id });
  const summary = el("summary");
  summary.append(el("strong", {}, when(batch.created_at)), " ", el("span", {}, `group ${batch.group_name}`), " ");
  for (const [key, value] of batch.key_values) summary.append(el("span", { class: "tag" }, `${key} = ${value}`), " ");
  if (batch.folder) summary.append(el("span", { class: "tag" }, `Folder = ${batch.folder}`), " ");
  summary.append(el("span", { class: "hint" }, `${plural(batch.jobs, "job")}, ${human(batch.size)} `), counts(batch.states, batch.to_check));
  item.append(summary);
  item.addEventListener("toggle", () => { if (item.open && !item.dataset.loaded) openBatch(item, batch.id); });
  return item;
}

// The opened imports, followed live: batch id -> {item, rows, jobs}; job id -> newest event applied.
const opened = new Map();
const lastEvent = new Map();
let source = null;

async function openBatch(item, id) {
  item.dataset.loaded = "true";
  const table = el("table", { class: "jobs" });
  table.append(el("caption", { class: "visually-hidden" }, "Jobs of this import with their state"));
  const tbody = el("tbody");
  table.append(tbody);
  item.append(table);
  const open = { item, jobs: [] };
  open.rows = new Rows(tbody, { cancel: (job) => act(open, job, "cancel"), retry: (job) => act(open, job, "retry") });
  try {
    const batch = await api("GET", `/api/batches/${id}`);
    open.jobs = batch.jobs;
    batch.jobs.forEach((job) => open.rows.job(job));
    opened.set(id, open);
    follow(batch.cursor);
  } catch (e) { say(`This import could not be loaded: ${e.message}`); }
}

// One stream from the first opened import's cursor on: later imports' events come after it.
function follow(cursor) {
  if (source) return;
  source = new EventSource(`/api/events?after=${cursor}`);
  source.addEventListener("job", (message) => {
    const { job, event_id: eventId } = JSON.parse(message.data);
    if (lastEvent.get(job.id) >= eventId) return;  // a replayed event already applied
    lastEvent.set(job.id, eventId);
    update(job);
  });
}

// A job's new state: its row, and its import's counts (Retry turns "1 failed" into "1 imported").
function update(job) {
  const open = opened.get(job.batch_id);
  const known = open && open.jobs.find((j) => j.id === job.id);
  if (!known) return;
  Object.assign(known, job);
  open.rows.job(known);
  const states = {};
  open.jobs.forEach((j) => { states[j.state] = (states[j.state] || 0) + 1; });
  const toCheck = open.jobs.filter((j) => j.state === "imported" && j.warnings && j.warnings.length).length;
  open.item.querySelector("summary .counts").replaceWith(counts(states, toCheck));
}

async function act(open, job, verb) {
  const seen = lastEvent.get(job.id);
  try {
    const answer = await api("POST", `/api/jobs/${job.id}/${verb}`);
    if (lastEvent.get(job.id) === seen) update(answer);  // the stream may already have brought newer states
    say("");
  } catch (e) { say(e.message); }
}

async function show() {
  const query = params();
  form.state.value = query.get("state") || "";
  form.q.value = query.get("q") || "";
  let answer;
  try { answer = await api("GET", `/api/history?${query}`); }
  catch (e) { say(`Your imports could not be loaded: ${e.message}`); return; }
  opened.clear();
  $("history").replaceChildren(...answer.batches.map(batchItem));
  const filtered = query.get("state") || query.get("q");
  $("history-count").textContent = answer.total
    ? `${plural(answer.total, "import")}${filtered ? " match" : ""}, newest first.`
    : (filtered ? "No import matches." : "No imports yet: they appear here once you start one.");
  $("page-of").textContent = `Page ${answer.page} of ${answer.pages}`;
  $("newer").disabled = answer.page <= 1;
  $("older").disabled = answer.page >= answer.pages;
  $("newer").onclick = () => go({ page: answer.page - 1 });
  $("older").onclick = () => go({ page: answer.page + 1 });
  document.body.dataset.ready = "true";  // tests wait for this
}

function go(changes) {
  const query = params();
  for (const [key, value] of Object.entries(changes)) {
    if (value) query.set(key, value); else query.delete(key);
  }
  window.history.pushState(null, "", `?${query}`);
  show();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  go({ state: form.state.value, q: form.q.value.trim(), page: null });
});
window.addEventListener("popstate", show);
show();
