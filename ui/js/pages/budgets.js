// budgets.js: LiteLLM budgets (tiers that keys, organizations and end users name by budget_id).
import { call } from "../api.js";
import { h, clear, form, table, attempt, confirmDialog, money } from "../dom.js";

export default {
  title: "Budgets",
  async render(host, me) {
    const listHost = h("div");
    if (me.canWrite && me.isAdmin) host.append(h("h3", {}, "Create a budget"), form("Create a budget", [
      { name: "budget_id", label: "Budget id" }, { name: "max_budget", label: "Max budget (USD)", type: "number" },
      { name: "soft_budget", label: "Soft budget (USD)", type: "number" }, { name: "budget_duration", label: "Period (e.g. 30d)" },
      { name: "tpm_limit", label: "Tokens per minute", type: "number" }, { name: "rpm_limit", label: "Requests per minute", type: "number" },
    ], "Create budget", async (v) => { if (await attempt("Budget created.", () => call("POST", "/budget/new", { body: v }))) await load(); }));
    host.append(listHost);
    async function load() {
      const list = await attempt(null, () => call("GET", "/budget/list"));
      if (!list) return;
      clear(listHost).append(table("Budgets", [
        { label: "Budget id", value: (b) => b.budget_id }, { label: "Max budget", num: true, value: (b) => money(b.max_budget) },
        { label: "Soft budget", num: true, value: (b) => money(b.soft_budget) }, { label: "Period", value: (b) => b.budget_duration },
        { label: "TPM", num: true, value: (b) => b.tpm_limit }, { label: "RPM", num: true, value: (b) => b.rpm_limit },
        ...(me.canWrite && me.isAdmin ? [{ label: "Actions", value: (b) => h("button", { type: "button", class: "danger", onclick: async () => {
          if (!await confirmDialog("Delete budget " + b.budget_id + "?", "Delete")) return;
          if (await attempt("Budget deleted.", () => call("POST", "/budget/delete", { body: { id: b.budget_id } }))) await load();
        } }, "Delete") }] : []),
      ], list, "No budgets yet."));
    }
    await load();
  },
};
