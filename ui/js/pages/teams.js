// teams.js: LiteLLM teams and their members.
import { call } from "../api.js";
import { h, clear, form, table, attempt, confirmDialog, money, stateCell } from "../dom.js";

export default {
  title: "Teams",
  async render(host, me) {
    const listHost = h("div"), detail = h("div", { id: "team-detail" });
    if (me.canWrite) host.append(h("h3", {}, "Create a team"), form("Create a team", [
      { name: "team_alias", label: "Alias", required: true }, { name: "team_id", label: "Team id (optional)" },
      { name: "models", label: "Models (comma-separated)", list: true },
      { name: "max_budget", label: "Max budget (USD)", type: "number" }, { name: "budget_duration", label: "Budget period" },
      { name: "tpm_limit", label: "Tokens per minute", type: "number" }, { name: "rpm_limit", label: "Requests per minute", type: "number" },
    ], "Create team", async (v) => { if (await attempt("Team created.", () => call("POST", "/team/new", { body: v }))) await load(); }));
    host.append(listHost, detail);
    async function load() {
      const teams = await attempt(null, () => call("GET", "/team/list"));
      if (!teams) return;
      clear(listHost).append(table("Teams", [
        { label: "Alias", value: (t) => t.team_alias }, { label: "Team id", value: (t) => t.team_id },
        { label: "Members", num: true, value: (t) => (t.members_with_roles || []).length },
        { label: "Spend", num: true, value: (t) => money(t.spend) }, { label: "Max budget", num: true, value: (t) => money(t.max_budget) },
        { label: "State", value: (t) => stateCell(t.blocked) },
        { label: "Details", value: (t) => h("button", { type: "button", class: "secondary", onclick: () => show(t.team_id) }, "Members of " + (t.team_alias || t.team_id)) },
      ], teams, "No teams yet."));
    }
    async function show(id) {
      const info = await attempt(null, () => call("GET", "/team/info", { query: { team_id: id } }));
      if (!info) return;
      const t = info.team_info || info;
      clear(detail).append(h("h3", { id: "members-title" }, "Members of " + (t.team_alias || id)),
        table("Members", [{ label: "User", value: (m) => m.user_id || m.user_email }, { label: "Role", value: (m) => m.role },
          ...(me.canWrite ? [{ label: "Actions", value: (m) => h("button", { type: "button", class: "danger", onclick: async () => {
            if (!await confirmDialog("Remove " + m.user_id + " from the team?", "Remove")) return;
            if (await attempt("Member removed.", () => call("POST", "/team/member_delete", { body: { team_id: id, user_id: m.user_id } }))) { await show(id); await load(); }
          } }, "Remove " + m.user_id) }] : [])], t.members_with_roles || [], "No members yet."));
      if (me.canWrite) detail.append(form("Add a member", [
        { name: "user_id", label: "User id" }, { name: "user_email", label: "or email" },
        { name: "role", label: "Role", type: "select", value: "user", options: [["user", "user"], ["admin", "admin"]] },
        { name: "max_budget_in_team", label: "Budget in team (USD)", type: "number" },
      ], "Add member", async (v) => {
        const { max_budget_in_team, ...member } = v;
        const body = { team_id: id, member };
        if (max_budget_in_team !== undefined) body.max_budget_in_team = max_budget_in_team;
        if (await attempt("Member added.", () => call("POST", "/team/member_add", { body }))) { await show(id); await load(); }
      }));
    }
    await load();
  },
};
