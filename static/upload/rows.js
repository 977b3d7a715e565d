// The list: one row per file group, first as planned (before any byte is sent), then as the
// server's job. Every state has a colour, an icon and a text label: colour is never the only signal.
import { pictures } from "../thumbs.js";
import { api, el, human } from "./util.js";

// The labels come from the server's list of states (app/main), which the help page explains.
// Each state's label, colour and whether it ends a job: declared once on the server (app.core.jobs.STATES).
export const STATES = JSON.parse(document.getElementById("states").textContent);
export const label = (state) => (STATES[state] ? STATES[state].label : state);
export const badgeClass = (state) => `state state-${state} colour-${STATES[state] ? STATES[state].colour : "gray"}`;

function namesCell(files) {
  const cell = el("td", { class: "names" });
  files.forEach((f, i) => cell.append(el("div", { class: i ? "partner" : "primary", title: f.name }, f.name)));
  return cell;
}

function button(label, name, onClick) {
  const b = el("button", { type: "button", "aria-label": `${label} ${name}` }, label);
  b.addEventListener("click", onClick);
  return b;
}

function link(href, text) {
  return el("a", { href, target: "_blank", rel: "noopener" }, text);
}

// What OMERO holds for an imported job: its summary line, opened into the files (fetched when opened).
function held(job) {
  const box = el("details", { class: "held" });
  box.append(el("summary", {}, job.summary));
  box.addEventListener("toggle", async () => {
    if (!box.open || box.dataset.loaded) return;
    box.dataset.loaded = "true";
    let record;
    try {
      record = await api("GET", `/api/jobs/${job.id}`);
    } catch (e) {
      box.append(el("div", {}, e.message));
      delete box.dataset.loaded;  // opening it again tries again
      return;
    }
    const list = (title, items, text) => {
      if (!items.length) return;
      const ul = el("ul");
      items.forEach((item) => { const li = el("li"); li.append(link(item.url, text(item))); ul.append(li); });
      box.append(el("div", {}, title), ul);
    };
    list("Images", record.images, (i) => i.name);
    list("Originals kept in OMERO", record.originals, (o) => `${o.name} (${human(o.size)}, SHA-1 ${o.sha1})`);
    list("Attachments", record.attachments, (a) => `${a.title}: ${a.name}`);
  });
  return box;
}

// What a job row says: the server's state, or while its bytes travel, the transfer's.
function jobView(job, transfer) {
  const view = { state: job.state, detail: job.message || "" };
  if (job.state === "uploading") {
    if (!transfer) {
      const held = job.files.reduce((sum, f) => sum + (f.complete ? f.size : f.received || 0), 0);
      return { state: "pending", detail: held ? `${human(held)} of ${human(job.total_size)} already on the server`
        : "Waiting to be sent" };
    }
    const { kind, sent, total, name, note } = transfer;
    view.state = kind;
    if (kind === "sending") {
      view.progress = total ? sent / total : 1;
      view.detail = `${name}: ${human(sent)} of ${human(total)} sent` + (job.message ? `. ${job.message}` : "");
    } else if (kind === "checking") view.detail = `${name}: checksum of ${human(sent)} of ${human(total)} computed`;
    else if (kind === "offline") view.detail = "The connection dropped: sending goes on when it is back";
    else view.detail = note || "";
  } else if (job.state === "converting" || job.state === "importing") {
    view.progress = job.progress;
  } else if ((job.state === "imported" || job.state === "duplicate") && job.link) {
    const where = job.project && job.dataset ? ` into ${job.project} / ${job.dataset}` : "";
    view.detail = el("span");
    view.detail.append(job.message || `Imported${where}`, " ",
      link(job.link, job.state === "imported" ? "Open in OMERO" : "Open the existing image"));
    if (job.summary) view.detail.append(held(job));
  }
  // Imported, but something could not be read (date, microscope, pixel size): marked, never plain green.
  view.check = job.state === "imported" && job.warnings && job.warnings.length ? job.warnings : null;
  return view;
}

// Once a job has images (imported, or found in OMERO already), its row shows them; made once per row.
function showPictures(row, job) {
  const names = row.querySelector(".names");
  const shown = names.querySelector(".thumbs");
  const key = JSON.stringify([job.images, job.plots]);
  if (shown && shown.dataset.key === key) return;
  const box = pictures(job);
  if (box) box.dataset.key = key;
  if (shown) shown.remove();
  if (box) names.append(box);
}

export class Rows {
  // actions: {remove(group), cancel(job), retry(job)}
  constructor(tbody, actions) {
    this.tbody = tbody;
    this.actions = actions;
  }

  clear() { this.tbody.replaceChildren(); }

  #row(files, size, attrs) {
    const row = el("tr", attrs);
    const badge = el("span", { class: "state" });
    row.append(namesCell(files), el("td", { class: "size" }, human(size)), el("td", { class: "state-cell" }),
      el("td", { class: "details" }), el("td", { class: "actions" }));
    row.querySelector(".state-cell").append(badge);
    return row;
  }

  #render(row, { state, detail, progress, check }, buttons = []) {
    row.dataset.state = state;
    row.toggleAttribute("data-check", Boolean(check));
    const badge = row.querySelector(".state");
    badge.className = badgeClass(state) + (check ? " state-check" : "");
    badge.textContent = label(state) + (check ? ", check" : "");
    if (check) badge.title = `Check in OMERO: ${check.join(", ")}`;
    else badge.removeAttribute("title");
    const details = row.querySelector(".details");
    details.replaceChildren();
    if (progress !== undefined && progress !== null) {
      const percent = Math.floor(progress * 100);
      details.append(el("progress", { max: "100", value: percent, "aria-label": `${percent}%` }),
        el("span", { class: "percent" }, ` ${percent}% `));
    }
    if (detail) details.append(detail);
    row.querySelector(".actions").replaceChildren(...buttons);
  }

  // A planned group: ready to send, or not sendable with the reason (missing partner, unsupported).
  planned(group, removable) {
    const row = this.#row(group.files, group.size, { "data-plan": group.files[0].name });
    const first = group.files[0].name;
    this.#render(row, group.error ? { state: "notsent", detail: group.error } : { state: "pending", detail: "Ready to import" },
      removable ? [button("Remove", first, () => this.actions.remove(group))] : []);
    this.tbody.append(row);
    return row;
  }

  job(job, transfer) {
    let row = this.tbody.querySelector(`tr[data-job="${job.id}"]`);
    if (!row) {
      row = this.#row(job.files, job.total_size, { "data-job": job.id });
      const before = this.tbody.querySelector("tr[data-plan]");  // not-sent rows stay at the end
      this.tbody.insertBefore(row, before);
    }
    const name = job.files[0].name, buttons = [];
    if (!STATES[job.state].final) {  // a running job too: its conversion or import is stopped
      buttons.push(button("Cancel", name, () => this.actions.cancel(job)));
    }
    if (job.can_retry) {  // the server knows: the files are still staged and the failure was not their content
      buttons.push(button("Retry", name, () => this.actions.retry(job)));
    }
    this.#render(row, jobView(job, transfer), buttons);
    showPictures(row, job);
    return row;
  }
}
