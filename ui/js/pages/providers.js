// providers.js: Bifrost provider credentials: secrets always redacted, env references shown as such, weights editable.
import { call } from "../api.js";
import { h, clear, form, table, attempt, confirmDialog } from "../dom.js";

// A key's models as Bifrost v1.5 reads them: a WhiteList, ["*"] for every model and [] for none.
function modelsText(models) {
  if (!models || models.includes("*")) return "every model";
  return models.join(", ") || "none";
}

// A secret as the API reads it back: an environment reference by its name, else only its redacted form.
function secretText(v) {
  if (!v) return h("span", { class: "muted" }, "none");
  if (v.from_env) return h("span", {}, "from environment: ", h("code", {}, v.env_var));
  return h("span", {}, "redacted ", h("code", {}, v.value));
}

export default {
  title: "Provider credentials",
  async render(host, me) {
    const listHost = h("div", { id: "provider-keys" });
    const list = await attempt(null, () => call("GET", "/api/providers"));
    if (!list) return;
    const names = list.providers.map((p) => p.name);
    if (me.canWrite && me.isAdmin) host.append(h("h3", {}, "Add a provider key"), form("Add a provider key", [
      { name: "provider", label: "Provider", type: "select", value: names[0], options: names.map((n) => [n, n]) },
      { name: "name", label: "Name", required: true },
      { name: "secret", label: "Secret", type: "password" },
      { name: "env", label: "or environment variable" },
      { name: "models", label: "Models (comma-separated; empty for every model)", list: true },
      { name: "weight", label: "Weight", type: "number", value: "1" },
    ], "Add key", async (v) => {
      const body = { name: v.name, models: v.models && v.models.length ? v.models : ["*"], weight: v.weight ?? 1,
        value: v.env ? "env." + v.env : v.secret || "" };
      if (await attempt("Provider key added.", () => call("POST", "/api/providers/" + encodeURIComponent(v.provider) + "/keys", { body }))) await load();
    }));
    host.append(listHost);
    async function load() {
      clear(listHost);
      const providers = (await attempt(null, () => call("GET", "/api/providers")) || { providers: [] }).providers;
      for (const p of providers.filter((x) => x.keys > 0)) {
        const r = await attempt(null, () => call("GET", "/api/providers/" + encodeURIComponent(p.name) + "/keys"));
        if (!r) continue;
        const keys = Array.isArray(r) ? r : r.keys || [];
        listHost.append(h("h3", {}, p.name), table(p.name + " keys", [
          { label: "Name", value: (k) => k.name }, { label: "Secret", value: (k) => secretText(k.value) },
          { label: "Models", value: (k) => modelsText(k.models) },
          { label: "Weight", value: (k) => me.canWrite && me.isAdmin ? weightEditor(p.name, k) : String(k.weight) },
          { label: "Enabled", value: (k) => k.enabled === false ? "no" : "yes" },
          ...(me.canWrite && me.isAdmin ? [{ label: "Actions", value: (k) => h("button", { type: "button", class: "danger", onclick: async () => {
            if (!await confirmDialog("Delete provider key " + k.name + "?", "Delete")) return;
            if (await attempt("Provider key deleted.", () => call("DELETE", "/api/providers/" + encodeURIComponent(p.name) + "/keys/" + encodeURIComponent(k.id)))) await load();
          } }, "Delete") }] : []),
        ], keys));
      }
      if (!listHost.firstChild) listHost.append(h("p", { class: "muted" }, "No provider keys yet."));
    }
    // The weight alone changes: the key goes back as read, its redacted secret keeping the stored one.
    function weightEditor(provider, k) {
      const input = h("input", { type: "number", step: "any", min: "0", value: k.weight, "aria-label": "Weight of " + k.name });
      return h("span", { class: "actions" }, input, h("button", { type: "button", class: "secondary", "aria-label": "Save weight of " + k.name, onclick: async () => {
        const body = { ...k, weight: Number(input.value) };
        delete body.provider;
        if (await attempt("Weight saved.", () => call("PUT", "/api/providers/" + encodeURIComponent(provider) + "/keys/" + encodeURIComponent(k.id), { body }))) await load();
      } }, "Save weight"));
    }
    await load();
  },
};
