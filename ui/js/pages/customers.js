// customers.js: LiteLLM end users (customers): create, block, unblock, delete.
import { call } from "../api.js";
import { h, clear, form, table, attempt, confirmDialog, money, stateCell } from "../dom.js";

export default {
  title: "End users",
  async render(host, me) {
    const listHost = h("div");
    if (me.canWrite && me.isAdmin) host.append(h("h3", {}, "Create an end user"), form("Create an end user", [
      { name: "user_id", label: "End user id", required: true }, { name: "alias", label: "Alias" },
      { name: "max_budget", label: "Max budget (USD)", type: "number" }, { name: "budget_id", label: "Budget id" },
    ], "Create end user", async (v) => { if (await attempt("End user created.", () => call("POST", "/customer/new", { body: v }))) await load(); }));
    host.append(listHost);
    async function load() {
      const list = await attempt(null, () => call("GET", "/customer/list"));
      if (!list) return;
      const admin = me.canWrite && me.isAdmin;
      clear(listHost).append(table("End users", [
        { label: "End user", value: (c) => c.user_id }, { label: "Alias", value: (c) => c.alias },
        { label: "Spend", num: true, value: (c) => money(c.spend) }, { label: "Budget", value: (c) => c.budget_id },
        { label: "State", value: (c) => stateCell(c.blocked) },
        ...(admin ? [{ label: "Actions", value: (c) => h("div", { class: "actions" },
          h("button", { type: "button", class: "secondary", onclick: async () => {
            if (await attempt(c.blocked ? "Unblocked." : "Blocked.", () => call("POST", c.blocked ? "/customer/unblock" : "/customer/block", { body: { user_ids: [c.user_id] } }))) await load();
          } }, c.blocked ? "Unblock" : "Block"),
          h("button", { type: "button", class: "danger", onclick: async () => {
            if (!await confirmDialog("Delete end user " + c.user_id + "?", "Delete")) return;
            if (await attempt("End user deleted.", () => call("POST", "/customer/delete", { body: { user_ids: [c.user_id] } }))) await load();
          } }, "Delete")) }] : []),
      ], list, "No end users yet."));
    }
    await load();
  },
};
