// audit.js: the audit log, newest first, filtered and paged.
import { call } from "../api.js";
import { h, clear, form, table, attempt, when } from "../dom.js";

const TABLES = ["LiteLLM_VerificationToken", "LiteLLM_TeamTable", "LiteLLM_UserTable", "LiteLLM_OrganizationTable",
  "Venice_ApiKey", "Bifrost_Provider", "Bifrost_ProviderKey"];
const ACTIONS = ["created", "updated", "deleted", "blocked", "rotated", "selected"];

export default {
  title: "Audit log",
  async render(host) {
    const state = { page: 1, page_size: 50 };
    const listHost = h("div");
    host.append(form("Filter the audit log", [
      { name: "table_name", label: "Table", type: "select", value: "", options: [["", "any"], ...TABLES.map((t) => [t, t])] },
      { name: "action", label: "Action", type: "select", value: "", options: [["", "any"], ...ACTIONS.map((a) => [a, a])] },
      { name: "object_id", label: "Object id" }, { name: "changed_by", label: "Changed by" },
    ], "Apply filters", async (v) => { Object.assign(state, { table_name: "", action: "", object_id: "", changed_by: "" }, v, { page: 1 }); await load(); }), listHost);
    async function load() {
      const r = await attempt(null, () => call("GET", "/audit", { query: state }));
      if (!r) return;
      clear(listHost).append(h("p", {}, r.total + " changes"), table("Audit log", [
        { label: "When", value: (e) => when(e.updated_at) }, { label: "Changed by", value: (e) => e.changed_by },
        { label: "Action", value: (e) => e.action }, { label: "Table", value: (e) => e.table_name }, { label: "Object", value: (e) => e.object_id },
      ], r.audit_logs, "No changes match."), h("nav", { class: "pager", "aria-label": "Audit pages" },
        h("button", { type: "button", class: "secondary", disabled: state.page <= 1, onclick: () => { state.page--; load(); } }, "Previous page"),
        h("span", {}, "Page " + r.page + " of " + Math.max(r.total_pages, 1)),
        h("button", { type: "button", class: "secondary", disabled: state.page >= r.total_pages, onclick: () => { state.page++; load(); } }, "Next page")));
    }
    await load();
  },
};
