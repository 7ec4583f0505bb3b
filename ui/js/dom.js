// dom.js: building pages without innerHTML: elements, forms, tables, dialogs, messages.
import { ApiError } from "./api.js";

// h("button", {class: "x", onclick: f}, "text", child...): an element.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false)
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

export function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

let said = 0;
// A polite status line for what just happened.
export function status(text) {
  const s = document.getElementById("status");
  s.textContent = text;
  const mine = ++said;
  if (text) setTimeout(() => { if (said === mine) s.textContent = ""; }, 8000);
}

// Every failure on the page in words, with the field the API names.
export function showError(e) {
  const a = document.getElementById("alert");
  a.textContent = e instanceof ApiError ? e.describe() : "Error: " + (e && e.message ? e.message : String(e));
  a.hidden = false;
  status("");  // no earlier success beside the failure
  a.scrollIntoView({ block: "nearest" });
}
export function clearError() { const a = document.getElementById("alert"); a.hidden = true; a.textContent = ""; }

// Runs an action; its failure is shown, its success said. Returns the result or undefined.
export async function attempt(what, fn) {
  clearError();
  try { const r = await fn(); if (what) status(what); return r; }
  catch (e) { showError(e); return undefined; }
}

let ids = 0;
// A form of fields [{name, label, type, options, placeholder, required, value}] calling submit(values).
export function form(label, fields, submitLabel, submit) {
  const f = h("form", { class: "form", "aria-label": label });
  for (const fd of fields) {
    const id = "f" + (++ids);
    let input;
    if (fd.type === "select") {
      input = h("select", { id, name: fd.name }, fd.options.map(([v, t]) => h("option", { value: v, selected: v === fd.value }, t)));
    } else {
      input = h("input", { id, name: fd.name, type: fd.type || "text", placeholder: fd.placeholder, required: fd.required,
        value: fd.value, step: fd.type === "number" ? "any" : undefined, autocomplete: "off", spellcheck: "false" });
    }
    f.append(h("div", { class: "field" }, h("label", { for: id }, fd.label), input));
  }
  const button = h("button", { type: "submit" }, submitLabel);
  f.append(h("div", { class: "field" }, button));
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    try { await submit(values(f, fields), f); } finally { button.disabled = false; }
  });
  return f;
}

// A form's values by field type: numbers as numbers, lists split on commas, JSON parsed; empty left out.
export function values(f, fields) {
  const out = {};
  for (const fd of fields) {
    const raw = f.elements[fd.name].value.trim();
    if (raw === "") continue;
    if (fd.type === "number") out[fd.name] = Number(raw);
    else if (fd.list) out[fd.name] = raw.split(",").map((s) => s.trim()).filter(Boolean);
    else if (fd.json) {
      try { out[fd.name] = JSON.parse(raw); } catch { throw showError(new Error(fd.label + " is not valid JSON")); }
    } else out[fd.name] = raw;
  }
  return out;
}

// A table: columns [{label, value(row) -> text|Node, num}], rows.
export function table(caption, columns, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" }, h("table", {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => {
      const v = c.value(r);
      return h("td", { class: c.num ? "num" : null }, v === null || v === undefined ? "" : v);
    }))))));
}

// Asks before a destructive action; resolves true when confirmed.
export function confirmDialog(question, yes) {
  return new Promise((resolve) => {
    const d = h("dialog", { "aria-labelledby": "confirm-q" },
      h("p", { id: "confirm-q" }, question),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => done(false) }, "Cancel"),
        h("button", { type: "button", class: "danger", onclick: () => done(true) }, yes)));
    function done(v) { d.close(); d.remove(); resolve(v); }
    d.addEventListener("cancel", () => done(false));
    document.body.append(d);
    d.showModal();
  });
}

// A secret shown once, with a copy button; the page forgets it when it is dismissed.
export function secretPanel(title, secret) {
  const code = h("code", { id: "new-secret" }, secret);
  const panel = h("div", { class: "secret", role: "region", "aria-label": title },
    h("strong", {}, title),
    h("p", {}, "This is the only time it is shown. Copy it now."),
    code,
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: async () => {
        try { await navigator.clipboard.writeText(secret); status("Copied to the clipboard."); }
        catch { const r = document.createRange(); r.selectNodeContents(code); getSelection().removeAllRanges(); getSelection().addRange(r); status("Selected: press Ctrl+C to copy."); }
      } }, "Copy"),
      h("button", { type: "button", class: "secondary", onclick: () => panel.remove() }, "Done")));
  return panel;
}

// Runs fn over items one by one with a progress bar in place; returns how many failed.
export async function withProgress(host, label, items, fn) {
  const bar = h("progress", { max: items.length, value: 0, "aria-label": label });
  const text = h("span", {}, label + ": 0 of " + items.length);
  const box = h("div", { role: "status" }, bar, " ", text);
  host.prepend(box);
  let failed = 0, n = 0;
  for (const it of items) {
    try { await fn(it); } catch (e) { failed++; showError(e); }
    bar.value = ++n;
    text.textContent = label + ": " + n + " of " + items.length;
  }
  box.remove();
  return failed;
}

export function money(v) { return v === null || v === undefined ? "" : "$" + Number(v).toFixed(4).replace(/0{1,2}$/, ""); }
export function when(t) { return t ? String(t).replace("T", " ").replace("Z", " UTC") : ""; }
export function stateCell(blocked) {
  return h("span", { class: blocked ? "state-blocked" : "state-active" }, blocked ? "blocked" : "active");
}
