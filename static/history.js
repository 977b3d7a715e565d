// The history page: the researcher's batches, newest first, each opening onto its jobs (the same rows
// as the upload page, with Retry where it can succeed). Filters and the page number live in the URL.
import { Rows, badgeClass, label } from "./upload/rows.js";
import { api, el, human, plural, say } from "./upload/util.js";

const $ = (id) => document.getElementById(id);
const form = $("history-filters");

function params() {
  return new URLSearchParams(window.location.search);
}

function counts(states, toCheck) {
  const line = el("span", { class: "counts" });
  const badge = (cls, text) => line.append(el("span", { class: cls }, text), " ");
  for (const [state, n] of Object.entries(states)) {
    // imported jobs with warnings are counted apart, marked as their rows are: never plain green
    const plain = state === "imported" ? n - toCheck : n;
    // a job not sent completely wears the pending badge (its symbol), with its own label
    if (plain) badge(badgeClass(state === "uploading" ? "pending" : state), `${plain} ${label(state).toLowerCase()}`);
    if (state === "imported" && toCheck) badge(`${badgeClass(state)} state-check`, `${toCheck} ${label(state).toLowerCase()}, to check`);
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

async function openBatch(item, id) {
  item.dataset.loaded = "true";
  const table = el("table", { class: "jobs" });
  table.append(el("caption", { class: "visually-hidden" }, "Jobs of this import with their state"));
  const tbody = el("tbody");
  table.append(tbody);
  item.append(table);
  const rows = new Rows(tbody, { cancel: (job) => act(rows, job, "cancel"), retry: (job) => act(rows, job, "retry") });
  try {
    const batch = await api("GET", `/api/batches/${id}`);
    batch.jobs.forEach((job) => rows.job(job));
  } catch (e) { say(`This import could not be loaded: ${e.message}`); }
}

async function act(rows, job, verb) {
  try {
    Object.assign(job, await api("POST", `/api/jobs/${job.id}/${verb}`));
    rows.job(job);
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
