// The upload page: choose files, see how the server groups them (and what cannot be sent) before any
// byte travels, create the import, send files in order with resumable transfers, and follow each
// job live. A reload or a dropped connection resumes from what the server holds.
import { Pairs } from "./pairs.js";
import { setUpPicker } from "./picker.js";
import { Rows, STATES } from "./rows.js";
import { SENDING_BUDGET, checkJob, hashAhead, sendFile } from "./transfer.js";
import { api, el, human, plural, say } from "./util.js";

const $ = (id) => document.getElementById(id);
const FINAL = Object.keys(STATES).filter((s) => STATES[s].final);

// Staff importing for a user (/?as=NAME, from the staff page): their groups, the staff API, all events.
const importAs = new URLSearchParams(window.location.search).get("as");

const state = {
  me: null,
  selection: new Map(),  // portalName -> File, as chosen (deduplicated by name)
  plan: null,            // the server's grouping of the selection
  planSeq: 0,
  batch: null,           // the server's batch once the import is created
  notSent: [],           // planned groups that were not sent with the batch, with their reasons
  skipped: [],           // a folder's files the portal leaves out (system files, formats it does not read)
  transfers: new Map(),  // job id -> what its transfer is doing
  stops: new Map(),      // job id -> the AbortController of its transfer: a cancel stops it at once
  lastEvent: new Map(),  // job id -> newest event id applied (a replay may repeat events)
  sending: false,
  source: null,
};
let pairs, rows;

const storeKey = () => `portal.batch.${state.me.username}${importAs ? `.as.${importAs}` : ""}`;  // a shared PC has many users

function needsFiles() {
  if (!state.batch) return [];
  return state.batch.jobs.filter((j) => j.state === "uploading").flatMap((j) => j.files.filter((f) => !f.complete));
}

function count(jobs, ...states) {
  return jobs.filter((j) => states.includes(j.state)).length;
}

function summarise() {
  const summary = $("summary"), done = $("batch-summary");
  const batch = state.batch;
  if (batch) {
    const jobs = batch.jobs;
    const running = count(jobs, "uploading", "queued", "converting", "importing");
    summary.textContent = `${jobs.length} to import, ${human(jobs.reduce((a, j) => a + j.total_size, 0))}: `
      + `${count(jobs, "imported")} imported, ${count(jobs, "duplicate")} already in OMERO, `
      + `${count(jobs, "failed")} failed, ${running} in progress`
      + (state.notSent.length ? `; ${state.notSent.length} not sent` : "");
    const finished = batchFinished();
    done.hidden = !finished;
    if (finished) {
      const toCheck = jobs.filter((j) => j.state === "imported" && j.warnings && j.warnings.length);
      const parts = [`${count(jobs, "imported")} imported`, `${count(jobs, "duplicate")} already in OMERO`,
        `${count(jobs, "failed")} failed`];
      if (count(jobs, "cancelled")) parts.push(`${count(jobs, "cancelled")} cancelled`);
      if (state.notSent.length) parts.push(`${state.notSent.length} not sent`);
      if (toCheck.length) parts.push(`${toCheck.length} to check (${[...new Set(toCheck.flatMap((j) => j.warnings))].join(", ")})`);
      done.replaceChildren(el("strong", {}, "Import finished: "), parts.join(", ") + ".",
        el("span", { class: "hint" }, " Choose more files to start a new import."));
      // red only for what did not arrive; imports to check are marked as their rows are; a cancelled
      // job is not a success
      const tone = count(jobs, "failed") || state.notSent.length ? "with-problems"
        : toCheck.length ? "to-check" : count(jobs, "cancelled") ? "with-cancelled" : "all-good";
      done.className = `card batch-summary ${tone}`;
    }
  } else {
    done.hidden = true;
    const plan = state.plan;
    const refused = plan ? plan.groups.filter((g) => g.error).length : 0;
    summary.textContent = plan
      ? `${plural(plan.count, "file")}, ${human(plan.total_size)}: ${plan.importable} to import`
        + (refused ? `, ${refused} cannot be sent` : "") + (plan.skipped ? `, ${plan.skipped} skipped` : "")
      : "No files chosen yet.";
  }
  const resuming = needsFiles().length > 0;
  $("import").textContent = state.sending ? "Sending…" : resuming ? "Resume sending" : "Import";
  $("import").disabled = state.sending || (batch ? !resuming || !readyToResume() : !(state.plan && state.plan.importable));
  $("clear").disabled = state.sending;
  $("resume-hint").hidden = !resuming || state.sending || readyToResume();
  // an import under way keeps its group and key-values; a finished one shows them again for the next
  const locked = Boolean(batch) && !batchFinished();
  $("group").disabled = locked;
  $("add-pair").disabled = locked;
  pairs.lock(locked);
  // during an import the form shrinks to its pickers, so the list is in view (its summary is batch-info)
  $("batch-form").classList.toggle("collapsed", locked);
}

function batchFinished() {
  const jobs = state.batch ? state.batch.jobs : [];
  return jobs.length > 0 && count(jobs, "uploading", "queued", "converting", "importing") === 0;
}

function readyToResume() {
  return needsFiles().some((f) => matching(f));
}

function matching(remote) {
  const file = state.selection.get(remote.name);
  return file && file.size === remote.size ? file : null;
}

// -- before the import: the selection and the server's plan of it --------------------------------

async function replan() {
  const seq = ++state.planSeq;
  if (!state.selection.size) { state.plan = null; rows.clear(); summarise(); return; }
  const files = Array.from(state.selection.values(), (f) => ({ name: f.portalName, size: f.size }));
  let plan;
  try { plan = await api("POST", "/api/plan", { files }); }
  catch (e) { if (seq === state.planSeq) say(`The files could not be checked: ${e.message}`); return; }
  if (seq !== state.planSeq) return;  // a newer selection is being checked
  state.plan = plan;
  rows.clear();
  plan.groups.filter((g) => !g.skipped).forEach((group) => rows.planned(group, true));
  showSkipped(plan.groups.filter((g) => g.skipped));
  // while the import is being set up, hash the first files it will send (the hash is kept for it)
  const first = plan.groups.find((group) => !group.error && !group.skipped);
  if (first) hashAhead(first.files.map((f) => state.selection.get(f.name)).filter(Boolean), first.may_be_in_omero);
  summarise();
}

function chosen(files, problem) {
  say(problem || "");
  if (!files.length) return;
  if (state.batch && needsFiles().length) {
    // resuming: the files are matched by name and size to what the server still waits for
    for (const file of files) state.selection.set(file.portalName, file);
    const unknown = files.filter((f) => !needsFiles().some((r) => r.name === f.portalName && r.size === f.size));
    if (unknown.length === files.length) {
      say("None of these files is one the unfinished import waits for: choose the same files or folder again, "
        + "or Clear list to start a new import.");
    }
    summarise();
    if (readyToResume()) sendAll();
    return;
  }
  if (state.batch) forgetBatch();  // the last import is done: the new files start a new one
  for (const file of files) state.selection.set(file.portalName, file);
  replan();
}

// A folder's system files and other formats: one collapsed line, the names inside.
function showSkipped(groups) {
  state.skipped = groups;
  const box = $("skipped");
  box.hidden = !groups.length;
  const reasons = [...new Set(groups.map((g) => g.skipped))].join(", ");
  box.querySelector("summary").textContent = `${plural(groups.length, "file")} skipped: ${reasons}`;
  box.querySelector("ul").replaceChildren(...groups.map((g) => el("li", {}, `${g.files[0].name} (${g.skipped})`)));
}

function removeGroup(group) {
  for (const f of group.files) state.selection.delete(f.name);
  replan();
}

// The folder chosen, when one was (files chosen by hand beside it have none): kept as the "Folder"
// key-value of the images from it.
function commonFolder(names) {
  const tops = new Set(names.filter((n) => n.includes("/")).map((n) => n.split("/")[0]));
  return tops.size === 1 ? [...tops][0] : null;
}

// -- the import ------------------------------------------------------------------------------------

async function startImport() {
  if (state.batch) return sendAll();
  const plan = state.plan;
  const sendable = plan.groups.filter((g) => !g.error && !g.skipped);
  // a shared sidecar (a Direct Electron info file) is in each of its images' groups: listed once here,
  // the server gives each of their jobs a copy, and it is sent once per job
  const files = [...new Map(sendable.flatMap((g) => g.files).map((f) => [f.name, f])).values()];
  const body = { group_id: Number($("group").value), key_values: pairs.values(),
    folder: commonFolder(files.map((f) => f.name)), files, notify: $("notify").checked };
  $("import").disabled = true;
  if (importAs) body.on_behalf_of = importAs;
  try { state.batch = await api("POST", importAs ? "/api/staff/batches" : "/api/batches", body); }
  catch (e) { say(`The import could not start: ${e.message}`); summarise(); return; }
  state.notSent = plan.groups.filter((g) => g.error);
  localStorage.setItem(storeKey(), String(state.batch.id));
  showBatch();
  await sendAll();
}

function showBatch() {
  const batch = state.batch;
  rows.clear();
  batch.jobs.forEach((job) => rows.job(job, state.transfers.get(job.id)));
  state.notSent.forEach((group) => rows.planned(group, false));
  const info = $("batch-info");
  info.replaceChildren(el("strong", {}, "This import: "), `group ${batch.group_name}`);
  for (const [key, value] of batch.key_values) info.append(" ", el("span", { class: "tag" }, `${key} = ${value}`));
  if (batch.folder) info.append(" ", el("span", { class: "tag" }, `Folder = ${batch.folder}`));
  info.hidden = false;
  listen(batch.cursor);
  summarise();
}

function warnBeforeLeaving(event) {
  event.preventDefault();
  event.returnValue = "";  // the browser shows its own "leave site?" text
}

async function sendAll() {
  if (state.sending) return;
  state.sending = true;
  window.addEventListener("beforeunload", warnBeforeLeaving);
  summarise();
  try {
    const jobs = state.batch.jobs.filter((j) => j.state === "uploading");
    // In order; jobs overlap while the bytes on their way stay within the budget, so small files go
    // several at once and a large one goes alone (finished first, it is converted while the next travels).
    const running = new Map();  // the sendJob promise -> its bytes still to send
    const busy = () => [...running.values()].reduce((a, b) => a + b, 0);
    for (const [i, job] of jobs.entries()) {
      const bytes = job.files.reduce((sum, f) => sum + (f.complete ? 0 : f.size - (f.received || 0)), 0);
      while (running.size && busy() + bytes > SENDING_BUDGET) await Promise.race(running.keys());
      if (job.state !== "uploading") continue;
      const after = jobs[i + 1];
      if (after) hashAhead(after.files.filter((f) => !f.complete).map(matching).filter(Boolean), after.may_be_in_omero !== false);
      const sending = sendJob(job).finally(() => running.delete(sending));
      running.set(sending, bytes);
    }
    await Promise.all(running.keys());
  } finally {
    window.removeEventListener("beforeunload", warnBeforeLeaving);
    state.sending = false;
    summarise();
  }
}

async function sendJob(job) {
  const show = (transfer) => {
    if (transfer) state.transfers.set(job.id, transfer); else state.transfers.delete(job.id);
    rows.job(job, transfer);
  };
  const todo = job.files.filter((f) => !f.complete).map((remote) => [remote, matching(remote)]);
  const missing = todo.find(([, file]) => !file);
  if (missing) { show({ kind: "pending", note: `Choose ${missing[0].name} again to send it` }); return; }
  const stop = new AbortController();
  state.stops.set(job.id, stop);
  try {
    // OMERO may hold this content already (it holds something of its size): then hash it first and
    // ask, and a copy ends "duplicate" without a byte sent. Other jobs are sent at once, hashed meanwhile.
    if (job.may_be_in_omero !== false) {
      const checked = await checkJob(job, todo, (kind, hashed, total, name) => show({ kind, sent: hashed, total, name }));
      applyJob(checked.job);
      if (job.state !== "uploading") { show(null); return; }
    }
    for (const [remote, file] of todo) {
      const sent = await sendFile(remote, file, (kind, sentBytes, total, held) => {
        if (kind === "sending") remote.received = held;
        show({ kind, sent: sentBytes, total, name: remote.name });
      }, stop.signal);
      if (!sent) return;
    }
  } catch (e) {
    if (job.state === "uploading") show({ kind: "failed", note: `Sending stopped: ${e.message}` });
    return;
  } finally {
    state.stops.delete(job.id);
  }
  show(null);
  if (job.state === "uploading") job.state = "queued";  // until the server's event says more
  rows.job(job);
}

function applyJob(job, eventId) {
  if (eventId !== undefined) {
    if (state.lastEvent.get(job.id) >= eventId) return;  // a replayed event already applied
    state.lastEvent.set(job.id, eventId);
  }
  const known = state.batch && state.batch.jobs.find((j) => j.id === job.id);
  if (!known) return;
  Object.assign(known, job);
  if (known.state !== "uploading" && state.stops.has(known.id)) state.stops.get(known.id).abort();  // e.g. staff cancelled it
  rows.job(known, known.state === "uploading" ? state.transfers.get(known.id) : undefined);
  summarise();
}

function listen(cursor) {
  if (state.source) state.source.close();
  // EventSource reconnects by itself and sends Last-Event-ID: the server replays what was missed.
  state.source = new EventSource(`${importAs ? "/api/staff/events" : "/api/events"}?after=${cursor}`);
  state.source.addEventListener("job", (message) => {
    const data = JSON.parse(message.data);
    applyJob(data.job, data.event_id);
  });
  const source = state.source;
  source.addEventListener("error", () => {
    // A refused stream (e.g. signed out elsewhere) is not retried by the browser: say so.
    if (source === state.source && source.readyState === EventSource.CLOSED) {
      say("Live updates stopped: reload the page (you may need to sign in again). Your imports go on.");
    }
  });
}

async function jobAction(job, verb) {
  const seen = state.lastEvent.get(job.id);
  try {
    const answer = await api("POST", `/api/jobs/${job.id}/${verb}`);
    // The live stream may already have brought newer states than this answer: then it wins.
    if (state.lastEvent.get(job.id) === seen) applyJob(answer);
    say("");
  } catch (e) {
    // A Cancel that lost the race (the job started or even imported meanwhile): the row shows what
    // happened, no error stays behind
    if (e.code === "not_allowed" && verb === "cancel") {
      const now = await api("GET", `/api/jobs/${job.id}`).catch(() => null);
      if (now && now.state !== "uploading" && now.state !== "queued") { applyJob(now); say(""); return; }
    }
    say(e.message);
  }
}

// -- leaving an import behind ---------------------------------------------------------------------

function forgetBatch() {
  if (state.source) state.source.close();
  Object.assign(state, { batch: null, source: null, plan: null, notSent: [] });
  showSkipped([]);
  state.transfers.clear();
  state.lastEvent.clear();
  state.selection.clear();
  localStorage.removeItem(storeKey());
  $("batch-info").hidden = true;
  rows.clear();
  pairs.refresh();
}

async function clearList() {
  const unsent = state.batch ? state.batch.jobs.filter((j) => j.state === "uploading") : [];
  if (unsent.length && !window.confirm(`${unsent.length} file group(s) of this import were not sent completely. `
      + "Clear the list and cancel them?")) return;
  for (const job of unsent) await jobAction(job, "cancel");
  forgetBatch();
  say("");
  summarise();
}

// The import to show after a reload: one still waiting for bytes (newest first), else the last one
// this browser showed for this user.
async function restore() {
  const { batches } = await api("GET", "/api/batches");
  const remembered = Number(localStorage.getItem(storeKey()));
  const pick = importAs ? null : batches.find((b) => b.states.uploading) || batches.find((b) => b.id === remembered);
  if (!pick) { localStorage.removeItem(storeKey()); return; }
  state.batch = await api("GET", `/api/batches/${pick.id}`);
  localStorage.setItem(storeKey(), String(pick.id));
  showBatch();
}

async function init() {
  state.me = await api("GET", "/api/me");
  let groups = state.me.groups;
  if (importAs) {
    const owner = await api("POST", "/api/staff/import-as", { on_behalf_of: importAs });
    groups = owner.groups;
    $("import-as").hidden = false;
    $("import-as").replaceChildren(el("strong", {}, `Importing for ${owner.full_name || owner.username}`),
      ": the images will be theirs, in one of their groups; the import records that you made it.");
  }
  for (const group of groups) $("group").append(el("option", { value: group.id }, group.name));
  // e-mail when a long import ends: as the user last chose; only for their own imports, with an address
  const canNotify = state.me.can_notify && !importAs;
  $("notify").checked = canNotify && state.me.notify_imports;
  $("notify").disabled = !canNotify;
  $("notify-after").textContent = state.me.notify_after_minutes;
  if (!canNotify) {
    $("notify-hint").textContent = importAs ? "(for the researcher's own imports only)"
      : "(needs an e-mail address in your OMERO account and a mail server for the portal)";
  }
  pairs = new Pairs($("pairs"), state.me.batch_keys, $("group"));
  pairs.add();
  rows = new Rows(document.querySelector("#rows tbody"), {
    remove: removeGroup, cancel: (job) => jobAction(job, "cancel"), retry: (job) => jobAction(job, "retry"),
  });
  $("add-pair").addEventListener("click", () => pairs.add().querySelector(".value").focus());
  setUpPicker({ filesInput: $("files"), folderInput: $("folder"), filesButton: $("pick-files"),
    folderButton: $("pick-folder"), zone: $("drop-zone"), onFiles: chosen });
  $("import").addEventListener("click", startImport);
  $("clear").addEventListener("click", clearList);
  try { await restore(); } catch (e) { say(`Your earlier imports could not be loaded: ${e.message}`); }
  summarise();
  document.body.dataset.ready = "true";  // tests wait for this
}

init().catch((e) => say(`The page could not start: ${e.message}. Reload to try again.`));
