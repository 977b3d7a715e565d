// Staff pages: the dashboard (every user's jobs, refreshed when any job event arrives; workers and the
// queue every few seconds) and one job's page, with the same actions. Values are set as text only.
import { pictures } from "./thumbs.js";

(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const message = document.getElementById("staff-message");
  const say = (text) => { message.textContent = text || ""; message.hidden = !text; };

  // Cancelling or freeing ends a researcher's work (an upload may be on its way): asked first.
  const ASK = {
    cancel: (job) => `Cancel job ${job.id} of ${job.user} (${job.files.join(" + ")})?`
      + (job.state === "uploading" ? " Its upload is still on its way and stops." : ""),
    free: (job) => `Delete the staged bytes of job ${job.id} of ${job.user} (${job.files.join(" + ")})?`
      + " Retry will then need the files again.",
  };

  // Act on a job; then(ok) shows its new state.
  async function act(job, action, then) {
    if (ASK[action] && !window.confirm(ASK[action](job))) return;
    const response = await fetch(`/api/staff/jobs/${job.id}/${action}`, { method: "POST", headers: { "X-CSRFToken": csrf } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) say(`Job ${job.id}: ${body.error || response.statusText}`);
    else say(action === "free" ? `Job ${job.id}: ${body.freed_bytes.toLocaleString()} bytes freed` : "");
    then(response.ok);
  }

  const page = document.getElementById("job");  // one job's page
  if (page) {
    const job = JSON.parse(page.textContent);
    const box = pictures(job);
    if (box) document.getElementById("job-actions").before(box);
    document.querySelectorAll("#job-actions button").forEach((button) => {
      button.onclick = () => act(job, button.dataset.action, (ok) => { if (ok) window.location.reload(); });
    });
    return;
  }

  const STATES = JSON.parse(document.getElementById("states").textContent);  // declared on the server
  const tbody = document.querySelector("#jobs tbody");
  const filters = document.getElementById("filters");
  const query = () => new URLSearchParams([...new FormData(filters)].filter(([, v]) => v)).toString();
  let canMoveToFront = document.getElementById("jobs").dataset.front === "true";

  function row(job) {
    const tr = el("tr", { "data-job": String(job.id) });
    const link = el("a", { href: `/staff/jobs/${job.id}` }, String(job.id));
    const check = job.state === "imported" && job.warnings && job.warnings.length;  // imported, to check
    const state = el("span", { class: `state state-${job.state} colour-${STATES[job.state].colour}${check ? " state-check" : ""}`,
      title: check ? `check: ${job.warnings.join(", ")}` : "" }, check ? `${job.state}, check` : job.state);
    const actions = el("td", { class: "actions" });
    const can = { retry: job.can_retry, front: canMoveToFront && job.state === "queued",
      cancel: !STATES[job.state].final, free: job.staged };
    for (const [action, label] of [["retry", "Retry"], ["cancel", "Cancel"], ["front", "Move to front"],
      ["free", "Free its bytes"]]) {
      if (!can[action]) continue;
      const button = el("button", { type: "button" }, label);
      button.onclick = () => act(job, action, refresh);
      actions.append(button, " ");
    }
    const cells = [el("td"), el("td", { "data-label": "User" }, job.user), el("td", { "data-label": "Group" }, job.group),
      el("td", { class: "names", title: job.files.join(" + ") }, job.files.join(" + ")),
      el("td"), el("td", { class: "details" }, job.message + (job.worker ? ` (on ${job.worker})` : "")), actions];
    cells[0].append(link); cells[4].append(state);
    const box = pictures(job);
    if (box) cells[3].append(box);
    tr.append(...cells);
    return tr;
  }

  let pending = null, listening = false;
  async function refresh() {
    const data = await (await fetch(`/api/staff/jobs?${query()}`)).json();
    tbody.replaceChildren(...data.jobs.map(row));
    if (!listening) {  // from the list's cursor on: any job event refreshes the list
      listening = true;
      new EventSource(`/api/staff/events?after=${data.cursor}`).addEventListener("job", soon);
    }
  }
  const soon = () => { if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 500); };

  async function status() {
    const s = await (await fetch("/api/staff/status")).json();
    canMoveToFront = s.can_move_to_front;
    document.getElementById("depth").textContent = s.queue_depth;
    document.getElementById("oldest").textContent = s.oldest_queued_seconds || 0;
    document.getElementById("online").textContent = s.online;
    const alarm = document.getElementById("alarm");
    alarm.hidden = !s.alarm; alarm.textContent = s.alarm || "";
    document.querySelector("#workers tbody").replaceChildren(...s.workers.map((w) => {
      const tr = el("tr");
      tr.append(el("td", {}, w.name), el("td", {}, w.online ? "online" : "offline"),
        el("td", { "data-label": "Running jobs" }, w.jobs.join(", ")),
        el("td", { "data-label": "Last seen" }, `${w.last_seen_seconds} s ago`));
      return tr;
    }));
  }

  filters.onchange = refresh;
  setInterval(status, 5000);
  refresh();
})();
