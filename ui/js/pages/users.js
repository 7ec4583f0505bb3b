// users.js: LiteLLM users: look one up, create one (its first key shown once), block or delete.
import { call } from "../api.js";
import { h, clear, form, table, attempt, confirmDialog, secretPanel, money, stateCell } from "../dom.js";

export default {
  title: "Users",
  async render(host, me) {
    const out = h("div", { id: "user-detail" }), secretHost = h("div");
    if (me.canWrite && me.isAdmin) host.append(h("h3", {}, "Create a user"), form("Create a user", [
      { name: "user_id", label: "User id" }, { name: "user_email", label: "Email" },
      { name: "user_role", label: "Role", type: "select", value: "internal_user", options: [["internal_user", "internal user"],
        ["internal_user_viewer", "internal user viewer"], ["proxy_admin_viewer", "proxy admin viewer"], ["proxy_admin", "proxy admin"]] },
      { name: "max_budget", label: "Max budget (USD)", type: "number" },
    ], "Create user", async (v) => {
      const u = await attempt("User created.", () => call("POST", "/user/new", { body: v }));
      if (u) { if (u.key) clear(secretHost).append(secretPanel("First key of " + u.user_id, u.key)); await show(u.user_id); }
    }));
    host.append(secretHost, h("h3", {}, "Find a user"), form("Find a user", [{ name: "user_id", label: "User id", required: true, value: me.userId }],
      "Show user", (v) => show(v.user_id)), out);
    async function show(id) {
      const r = await attempt(null, () => call("GET", "/user/info", { query: { user_id: id } }));
      if (!r) return;
      const u = r.user_info;
      clear(out).append(table("User", [
        { label: "User", value: (x) => x.user_id }, { label: "Email", value: (x) => x.user_email }, { label: "Role", value: (x) => x.user_role },
        { label: "Teams", value: (x) => (x.teams || []).join(", ") }, { label: "Spend", num: true, value: (x) => money(x.spend) },
        { label: "Max budget", num: true, value: (x) => money(x.max_budget) }, { label: "State", value: (x) => stateCell(x.blocked) },
      ], [u]), h("h4", {}, "Keys"), table("User keys", [{ label: "Alias", value: (k) => k.key_alias }, { label: "Key", value: (k) => k.key_name },
        { label: "Spend", num: true, value: (k) => money(k.spend) }, { label: "State", value: (k) => stateCell(k.blocked) }], r.keys || [], "No keys."));
      if (me.canWrite && me.isAdmin) out.append(h("button", { type: "button", class: "danger", onclick: async () => {
        if (!await confirmDialog("Delete user " + id + " and the user's keys?", "Delete")) return;
        if (await attempt("User deleted.", () => call("POST", "/user/delete", { body: { user_ids: [id] } }))) clear(out);
      } }, "Delete user"));
    }
    if (me.userId) await show(me.userId);
  },
};
