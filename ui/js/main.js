// main.js: sign-in, the signed-in role, and the pages by URL fragment (#/keys ...).
import { signIn, signOut, signedInKey, whoAmI } from "./api.js";
import { h, clear, showError, clearError } from "./dom.js";
import keys from "./pages/keys.js";
import teams from "./pages/teams.js";
import users from "./pages/users.js";
import organizations from "./pages/organizations.js";
import budgets from "./pages/budgets.js";
import customers from "./pages/customers.js";
import providers from "./pages/providers.js";
import venice from "./pages/venice.js";
import audit from "./pages/audit.js";
import spend from "./pages/spend.js";

const pages = { keys, teams, users, organizations, budgets, customers, providers, venice, audit, spend };
// pages only admins and admin viewers can read: others are not offered them (the API refuses them anyway)
const ADMIN_PAGES = ["budgets", "customers", "providers", "audit"];
let me = null;

async function route() {
  const name = (location.hash.replace(/^#\/?/, "").split("?")[0]) || "keys";
  const page = pages[name] || keys;
  const host = document.getElementById("page");
  for (const a of document.querySelectorAll("#nav a"))
    a.setAttribute("aria-current", a.getAttribute("href") === "#/" + name ? "page" : "false");
  clearError();
  clear(host);
  host.append(h("h2", { id: "page-title" }, page.title));
  document.title = page.title + " \u2013 keywarden console";
  const body = h("div", { id: "page-body" });
  host.append(body);
  try { await page.render(body, me); } catch (e) { showError(e); }
}

async function start() {
  const signedIn = signedInKey() !== null;
  document.getElementById("sign-in").hidden = signedIn;
  document.getElementById("page").hidden = !signedIn;
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  if (!signedIn) { document.getElementById("sign-in-key").focus(); return; }
  try { me = await whoAmI(); }
  catch (e) {
    signOut();
    await start();
    showError(e);
    return;
  }
  for (const name of ADMIN_PAGES)
    document.querySelector(`#nav a[href="#/${name}"]`).parentElement.hidden = !me.readsAll;
  document.getElementById("who-role").textContent = "Signed in: " + me.label + (me.canWrite ? "" : " (read only)");
  document.body.dataset.role = me.role;
  await route();
}

document.getElementById("sign-in-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = document.getElementById("sign-in-key");
  signIn(input.value.trim());
  input.value = "";
  if (!location.hash) history.replaceState(null, "", "#/keys");
  await start();
});
document.getElementById("sign-out").addEventListener("click", () => { signOut(); me = null; clear(document.getElementById("page")); start(); });
window.addEventListener("hashchange", () => { if (me) route(); });
start();
