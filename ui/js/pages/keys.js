// keys.js: LiteLLM virtual keys: /key/list filters, sort and pages; create, block, unblock, regenerate, delete.
import { call } from "../api.js";
import { h, clear, form, table, attempt, confirmDialog, secretPanel, withProgress, money, when, stateCell, status } from "../dom.js";

const SORTS = ["created_at", "updated_at", "spend", "max_budget", "key_alias", "user_id", "team_id", "expires"];
const CREATE = [
  { name: "key_alias", label: "Alias" },
  { name: "user_id", label: "User id" },
  { name: "team_id", label: "Team id" },
  { name: "organization_id", label: "Organization id" },
  { name: "models", label: "Models (comma-separated)", list: true },
  { name: "max_budget", label: "Max budget (USD)", type: "number" },
  { name: "soft_budget", label: "Soft budget (USD)", type: "number" },
  { name: "budget_id", label: "Budget id" },
  { name: "budget_duration", label: "Budget period (e.g. 30d)" },
  { name: "tpm_limit", label: "Tokens per minute", type: "number" },
  { name: "rpm_limit", label: "Requests per minute", type: "number" },
  { name: "max_parallel_requests", label: "Parallel requests", type: "number" },
  { name: "duration", label: "Expires after (e.g. 7d)" },
  { name: "allowed_routes", label: "Allowed routes (comma-separated)", list: true },
  { name: "tags", label: "Tags (comma-separated)", list: true },
  { name: "key_type", label: "Key type", type: "select", value: "default",
    options: [["default", "default"], ["llm_api", "llm_api"], ["management", "management"], ["read_only", "read_only"]] },
  { name: "metadata", label: "Metadata (JSON)", json: true },
];

export default {
  title: "Keys",
  async render(host, me) {
    const state = { page: 1, size: 25, sort_by: "created_at", sort_order: "desc" };
    const secretHost = h("div");
    const listHost = h("div", { id: "key-list" });
    if (me.canWrite) {
      host.append(h("h3", {}, "Create a key"), form("Create a key", CREATE, "Create key", async (v) => {
        const k = await attempt("Key created.", () => call("POST", "/key/generate", { body: v }));
        if (k) { clear(secretHost).append(secretPanel("New key " + (k.key_alias || k.key_name || ""), k.key)); await load(); }
      }));
    }
    host.append(secretHost);
    const filters = [
      { name: "key_alias", label: "Alias" }, { name: "user_id", label: "User id" },
      { name: "team_id", label: "Team id" }, { name: "key_hash", label: "Key hash" },
      { name: "sort_by", label: "Sort by", type: "select", value: state.sort_by, options: SORTS.map((s) => [s, s.replace("_", " ")]) },
      { name: "sort_order", label: "Order", type: "select", value: "desc", options: [["desc", "descending"], ["asc", "ascending"]] },
      { name: "size", label: "Per page", type: "select", value: "25", options: [["10", "10"], ["25", "25"], ["50", "50"], ["100", "100"]] },
    ];
    host.append(h("h3", {}, "Keys"), form("Filter keys", filters, "Apply filters", async (v) => {
      Object.assign(state, { key_alias: "", user_id: "", team_id: "", key_hash: "" }, v, { page: 1 });
      await load();
    }), listHost);

    async function load() {
      const loading = h("p", { role: "status" }, h("progress", { "aria-label": "Loading keys" }), " Loading keys\u2026");
      listHost.prepend(loading);
      const r = await attempt(null, () => call("GET", "/key/list", { query: { ...state, return_full_object: true } }));
      loading.remove();
      if (!r) return;
      clear(listHost);
      const selected = new Set();
      const cols = [];
      if (me.canWrite) cols.push({ label: "Select", value: (k) => h("input", { type: "checkbox", "aria-label": "Select " + (k.key_alias || k.key_name),
        onchange: (ev) => ev.target.checked ? selected.add(k.token) : selected.delete(k.token) }) });
      cols.push(
        { label: "Alias", value: (k) => k.key_alias || h("span", { class: "muted" }, "none") },
        { label: "Key", value: (k) => k.key_name },
        { label: "User", value: (k) => k.user_id },
        { label: "Team", value: (k) => k.team_id },
        { label: "Spend", num: true, value: (k) => money(k.spend) },
        { label: "Max budget", num: true, value: (k) => money(k.max_budget) },
        { label: "State", value: (k) => stateCell(k.blocked) },
        { label: "Created", value: (k) => when(k.created_at) });
      if (me.canWrite) cols.push({ label: "Actions", value: (k) => h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => setBlocked(k, !k.blocked) }, k.blocked ? "Unblock" : "Block"),
        h("button", { type: "button", class: "secondary", onclick: () => regenerate(k) }, "Regenerate"),
        h("button", { type: "button", class: "danger", onclick: () => remove(k) }, "Delete")) });
      const pages = Math.max(r.total_pages, 1);
      listHost.append(
        h("p", { id: "key-count" }, r.total_count + " keys"),
        table("Keys", cols, r.keys, "No keys match."),
        h("nav", { class: "pager", "aria-label": "Key pages" },
          h("button", { type: "button", class: "secondary", disabled: state.page <= 1, onclick: () => { state.page--; load(); } }, "Previous page"),
          h("span", { id: "key-page" }, "Page " + r.current_page + " of " + pages),
          h("button", { type: "button", class: "secondary", disabled: state.page >= pages, onclick: () => { state.page++; load(); } }, "Next page")));
      if (me.canWrite && r.keys.length) listHost.append(h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => bulk(selected, true) }, "Block selected"),
        h("button", { type: "button", class: "secondary", onclick: () => bulk(selected, false) }, "Unblock selected")));
    }
    async function setBlocked(k, blocked) {
      if (await attempt(blocked ? "Key blocked." : "Key unblocked.", () => call("POST", blocked ? "/key/block" : "/key/unblock", { body: { key: k.token } }))) await load();
    }
    async function regenerate(k) {
      if (!await confirmDialog("Regenerate " + (k.key_alias || k.key_name) + "? The old secret stops working.", "Regenerate")) return;
      const r = await attempt("Key regenerated.", () => call("POST", "/key/regenerate", { body: { key: k.token } }));
      if (r) { clear(secretHost).append(secretPanel("New secret for " + (k.key_alias || k.key_name), r.key)); await load(); }
    }
    async function remove(k) {
      if (!await confirmDialog("Delete " + (k.key_alias || k.key_name) + "? This cannot be undone.", "Delete")) return;
      if (await attempt("Key deleted.", () => call("POST", "/key/delete", { body: { keys: [k.token] } }))) await load();
    }
    async function bulk(selected, blocked) {
      const tokens = [...selected];
      if (!tokens.length) { status("Select keys first."); return; }
      const failed = await withProgress(listHost, blocked ? "Blocking keys" : "Unblocking keys", tokens,
        (t) => call("POST", blocked ? "/key/block" : "/key/unblock", { body: { key: t } }));
      status((tokens.length - failed) + " of " + tokens.length + " keys " + (blocked ? "blocked." : "unblocked."));
      await load();
    }
    await load();
  },
};
