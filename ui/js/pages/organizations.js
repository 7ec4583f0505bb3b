// organizations.js: LiteLLM organizations.
import { call } from "../api.js";
import { h, clear, form, table, attempt, confirmDialog, money } from "../dom.js";

export default {
  title: "Organizations",
  async render(host, me) {
    const listHost = h("div");
    if (me.canWrite && me.isAdmin) host.append(h("h3", {}, "Create an organization"), form("Create an organization", [
      { name: "organization_alias", label: "Alias", required: true }, { name: "models", label: "Models (comma-separated)", list: true },
      { name: "max_budget", label: "Max budget (USD)", type: "number" }, { name: "budget_id", label: "Budget id" },
    ], "Create organization", async (v) => { if (await attempt("Organization created.", () => call("POST", "/organization/new", { body: v }))) await load(); }));
    host.append(listHost);
    async function load() {
      const orgs = await attempt(null, () => call("GET", "/organization/list"));
      if (!orgs) return;
      clear(listHost).append(table("Organizations", [
        { label: "Alias", value: (o) => o.organization_alias }, { label: "Id", value: (o) => o.organization_id },
        { label: "Members", num: true, value: (o) => (o.members || []).length }, { label: "Spend", num: true, value: (o) => money(o.spend) },
        ...(me.canWrite && me.isAdmin ? [{ label: "Actions", value: (o) => h("button", { type: "button", class: "danger", onclick: async () => {
          if (!await confirmDialog("Delete organization " + (o.organization_alias || o.organization_id) + "?", "Delete")) return;
          if (await attempt("Organization deleted.", () => call("DELETE", "/organization/delete", { body: { organization_ids: [o.organization_id] } }))) await load();
        } }, "Delete") }] : []),
      ], orgs, "No organizations yet."));
    }
    await load();
  },
};
