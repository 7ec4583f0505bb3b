// venice.js: Venice API keys: list, create (the key shown once), delete.
import { call } from "../api.js";
import { h, clear, form, table, attempt, confirmDialog, secretPanel, when } from "../dom.js";

export default {
  title: "Venice keys",
  async render(host, me) {
    const listHost = h("div"), secretHost = h("div");
    if (me.canWrite && me.isAdmin) host.append(h("h3", {}, "Create a Venice key"), form("Create a Venice key", [
      { name: "description", label: "Description", required: true },
      { name: "apiKeyType", label: "Type", type: "select", value: "INFERENCE", options: [["INFERENCE", "inference"], ["ADMIN", "admin"]] },
    ], "Create key", async (v) => {
      const r = await attempt("Venice key created.", () => call("POST", "/api/v1/api_keys", { body: v }));
      if (r) { clear(secretHost).append(secretPanel("New Venice key", r.data.apiKey)); await load(); }
    }));
    host.append(secretHost, listHost);
    async function load() {
      const r = await attempt(null, () => call("GET", "/api/v1/api_keys"));
      if (!r) return;
      clear(listHost).append(table("Venice keys", [
        { label: "Description", value: (k) => k.description }, { label: "Type", value: (k) => k.apiKeyType },
        { label: "Ends in", value: (k) => k.last6Chars }, { label: "Created", value: (k) => when(k.createdAt) },
        { label: "Last used", value: (k) => when(k.lastUsedAt) },
        ...(me.canWrite && me.isAdmin ? [{ label: "Actions", value: (k) => h("button", { type: "button", class: "danger", onclick: async () => {
          if (!await confirmDialog("Delete Venice key " + k.description + "?", "Delete")) return;
          if (await attempt("Venice key deleted.", () => call("DELETE", "/api/v1/api_keys", { query: { id: k.id } }))) await load();
        } }, "Delete") }] : []),
      ], r.data, "No Venice keys yet."));
    }
    await load();
  },
};
