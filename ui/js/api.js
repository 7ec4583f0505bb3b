// api.js: keywarden's API with the signed-in key; the key lives in sessionStorage only.
const KEY = "keywarden.key";
// The API is where the console is mounted: /ui/ at the root, /keywarden/ui/ under a mount at /keywarden.
const API_BASE = location.pathname.replace(/\/ui(\/.*)?$/, "");

export function signedInKey() { return sessionStorage.getItem(KEY); }
export function signIn(key) { sessionStorage.setItem(KEY, key); }
export function signOut() { sessionStorage.removeItem(KEY); }

// An answer that is not 2xx, in words: the status, the field the API names and its message,
// whichever face's envelope it came in (LiteLLM, Bifrost, Venice, provisioning).
export class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error !== undefined ? body.error : body;
    let message = "", field = "";
    if (typeof e === "string") message = e;
    else if (e && typeof e === "object") {
      message = e.message || e.detail || "";
      field = e.param || e.field || "";
      if (e.error && typeof e.error === "object") { message = message || e.error.message; field = field || e.error.param || ""; }
    }
    if (body && body.detail && !message) message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    if (body && Array.isArray(body.errors) && body.errors.length && !field) field = body.errors[0].field || body.errors[0].path || "";
    if (field === "None" || field === null) field = "";
    super(message || "the request failed");
    this.status = status;
    this.field = field;
  }
  describe() {
    return "Error " + this.status + (this.field ? " on field \u201c" + this.field + "\u201d" : "") + ": " + this.message;
  }
}

// The JSON answer of method path (with query params and a JSON body); throws ApiError.
export async function call(method, path, { query, body } = {}) {
  const url = new URL(API_BASE + path, location.origin);
  for (const [k, v] of Object.entries(query || {}))
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  const headers = { Authorization: "Bearer " + signedInKey() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, { error: { message: "keywarden cannot be reached (" + e.message + ")" } });
  }
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { error: { message: text.slice(0, 200) } }; }
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

// What the signed-in key may do: master, proxy_admin, proxy_admin_viewer, internal_user,
// internal_user_viewer, or a key without a user; the API refuses anything else anyway.
export async function whoAmI() {
  try {
    const info = await call("GET", "/key/info");
    const key = info.info || {};
    let role = "";
    if (key.user_id) {
      try { role = (await call("GET", "/user/info", { query: { user_id: key.user_id } })).user_info.user_role || ""; }
      catch { role = ""; }
    }
    return describeRole(role, key);
  } catch (e) {
    // the master key is not a virtual key: /key/info says so by its parameter
    if (e.status === 400 && e.field === "key") return describeRole("master", {});
    throw e;
  }
}

function describeRole(role, key) {
  const readOnlyKey = key.key_type === "read_only" || key.key_type === "llm_api";
  const admin = role === "master" || role === "proxy_admin";
  const viewer = role === "proxy_admin_viewer" || role === "internal_user_viewer";
  return {
    role: role || "key",
    label: role === "master" ? "master key" : role ? role.replaceAll("_", " ") : "key without a user",
    readsAll: admin || role === "proxy_admin_viewer",
    canWrite: !viewer && !readOnlyKey && (admin || role === "internal_user"),
    isAdmin: admin,
    userId: key.user_id || "",
  };
}
