// Key-value pairs for the whole import: a key from the facility's list, and a new value or one the
// user already gave that key in the chosen group (asked from OMERO through /api/key-values).
import { api, el } from "./util.js";

export class Pairs {
  constructor(box, keys, groupSelect) {
    this.box = box;
    this.keys = keys;
    this.group = groupSelect;
    this.count = 0;
    this.cache = new Map();  // "group\0key" -> Promise of values
    this.group.addEventListener("change", () => this.box.querySelectorAll(".pair").forEach((p) => this.suggest(p)));
  }

  add() {
    const n = ++this.count;
    const used = Array.from(this.box.querySelectorAll(".key"), (select) => select.value);
    const key = this.keys.find((k) => !used.includes(k)) || this.keys[0];
    const pair = el("div", { class: "pair", role: "group", "aria-label": `Pair ${n}` });
    const keyId = `pair-key-${n}`, valueId = `pair-value-${n}`, listId = `pair-values-${n}`;
    const select = el("select", { id: keyId, class: "key" });
    for (const k of this.keys) select.append(el("option", { value: k, selected: k === key }, k));
    const input = el("input", { id: valueId, class: "value", list: listId, autocomplete: "off", maxlength: 1024,
      placeholder: "type a new value or pick one" });
    const hint = el("span", { class: "hint", id: `pair-hint-${n}` });
    input.setAttribute("aria-describedby", hint.id);
    const remove = el("button", { type: "button", class: "remove-pair", "aria-label": `Remove pair ${n}` }, "Remove");
    remove.addEventListener("click", () => { pair.remove(); this.box.dispatchEvent(new Event("change")); });
    select.addEventListener("change", () => this.suggest(pair));
    pair.append(el("label", { for: keyId }, "Key"), select, el("label", { for: valueId }, "Value"), input,
      el("datalist", { id: listId }), remove, hint);
    this.box.append(pair);
    this.suggest(pair);
    return pair;
  }

  async suggest(pair) {
    const key = pair.querySelector(".key").value, group = this.group.value;
    const list = pair.querySelector("datalist"), hint = pair.querySelector(".hint");
    const id = `${group}\u0000${key}`;
    if (!this.cache.has(id)) {
      const query = new URLSearchParams({ group_id: group, key });
      this.cache.set(id, api("GET", `/api/key-values?${query}`).then((r) => r.values));
    }
    let values;
    try { values = await this.cache.get(id); }
    catch (e) { this.cache.delete(id); hint.textContent = `Earlier values are not available: ${e.message}`; return; }
    if (pair.querySelector(".key").value !== key || this.group.value !== group) return;  // changed meanwhile
    list.replaceChildren(...values.map((v) => el("option", { value: v })));
    hint.textContent = values.length
      ? `${values.length} value${values.length === 1 ? "" : "s"} used before in this group: start typing to pick one`
      : "No earlier values in this group: type a new one";
  }

  values() {
    return Array.from(this.box.querySelectorAll(".pair"))
      .map((p) => [p.querySelector(".key").value, p.querySelector(".value").value.trim()])
      .filter(([key, value]) => key && value);
  }

  // After an import is created the pairs are the batch's: shown, no longer edited.
  lock(locked) {
    this.box.querySelectorAll("select, input, button").forEach((node) => { node.disabled = locked; });
    this.box.querySelectorAll(".hint").forEach((node) => { node.hidden = locked; });  // about a new import
  }

  // An import just added values: ask OMERO again next time.
  refresh() {
    this.cache.clear();
    this.box.querySelectorAll(".pair").forEach((p) => this.suggest(p));
  }
}
