#!/usr/bin/python3
"""console.t: the console under /ui/ in Debian's headless Chromium (tests/e2e/console.mjs, puppeteer-core)
against the real lighttpd and keywarden: sign-in, keys, teams, provider credentials, spend, a
viewer's pages, axe-core's accessibility check, a phone's width, and the console's headers.
Screenshots go to build/console/."""
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from e2e import npm_ci  # noqa: E402
from kwserver import Server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E2E = os.path.join(ROOT, "tests", "e2e")
SHOTS = os.path.join(ROOT, "build", "console")
CHROMIUM = "/usr/bin/chromium"
PROVIDER_SECRET = "sk-provider-secret-0f1e2d3c4b5a"
KEYS = 1000


def made(srv, path, body):
    r = srv.admin("POST", path, body=body)
    if r.status != 200:
        tap.bail("POST %s %s: %r" % (path, body, r))
    return r.json


def headers(srv):
    r = srv.request("GET", "/ui/")
    csp = r.headers.get("content-security-policy", "")
    tap.eq(r.status, 200, "GET /ui/ serves the console")
    tap.ok("script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp,
           "the console's pages send a strict Content-Security-Policy", csp)
    tap.ok(b"<script>" not in r.body and b"onclick=" not in r.body, "no inline script in the page")
    tap.eq(srv.request("GET", "/ui").headers.get("location"), "/ui/", "/ui redirects to /ui/")
    tap.eq(srv.request("GET", "/ui/js/api.js").headers.get("content-type"),
           "text/javascript; charset=utf-8", "modules are served as JavaScript")
    r = srv.request("GET", "/ui/no-such-page.js")
    tap.ok(r.status == 404 and "default-src 'none'" in r.headers.get("content-security-policy", ""),
           "a file the console lacks is lighttpd's 404, under the same policy", r)
    r = srv.request("GET", "/ui/js/../../health")
    tap.ok(r.status in (400, 404) or b"healthy" in r.body, "dot segments stay within the console or reach the API")


def main():
    if not os.access(CHROMIUM, os.X_OK):
        tap.bail("no %s: scripts/bootstrap installs Debian's chromium" % CHROMIUM)
    if not npm_ci("puppeteer-core/package.json", "axe-core/axe.min.js"):
        return
    os.makedirs(SHOTS, exist_ok=True)
    with Server(env={"CONSOLE_TEST_API_KEY": "sk-from-the-environment"}) as srv:
        headers(srv)
        for i in range(KEYS):
            made(srv, "/key/generate", {"key_alias": "bulk-%04d" % i})
        team = made(srv, "/team/new", {"team_alias": "team-console"})
        viewer = made(srv, "/user/new", {"user_id": "viewer-1", "user_role": "proxy_admin_viewer"})
        internal = made(srv, "/user/new", {"user_id": "internal-1", "user_role": "internal_user"})
        spender = made(srv, "/key/generate", {"key_alias": "spender", "max_budget": 3})
        pk = made(srv, "/api/providers/openai/keys", {"name": "console-openai", "value": PROVIDER_SECRET,
                                                        "models": ["gpt-4o"], "weight": 1})
        made(srv, "/api/providers/openai/keys", {"name": "console-env", "value": "env.CONSOLE_TEST_API_KEY",
                                                 "models": ["other-model"], "weight": 1})
        env = dict(os.environ)
        env.update({"KW_BASE": "http://127.0.0.1:%d" % srv.port, "KW_MASTER_KEY": srv.master_key,
                    "KW_VIEWER_KEY": viewer["key"], "KW_INTERNAL_KEY": internal["key"], "KW_SPEND_KEY": spender["key"],
                    "KW_PROVIDER_SECRET": PROVIDER_SECRET, "SHOT_DIR": SHOTS, "CHROMIUM": CHROMIUM})
        r = subprocess.run(["node", os.path.join(E2E, "console.mjs")], env=env, cwd=E2E,
                           capture_output=True, text=True, timeout=300)
        lines = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
        steps = {ln["step"]: ln for ln in lines if "step" in ln}
        if not tap.ok(r.returncode == 0 and lines and lines[-1].get("done"), "console.mjs runs to its end",
                      r.stdout[-3000:] + r.stderr[-3000:]):
            return
        for s in steps.values():
            tap.ok(s["ok"], "step ran: " + s["step"], s.get("error"))

        s = steps["sign in with the master key"]
        tap.ok(s.get("who") == "Signed in: master key", "signed in as the master key", s)
        tap.ok(s.get("cookie") == "" and not s.get("keyInUrl") and s.get("stored") == ["keywarden.key"],
               "the key lives in sessionStorage only: no cookie, not in the URL", s)

        s = steps["keys: the list of 1,000 keys, paged"]
        # the bulk keys, the spender, and the viewer's and the internal user's first keys
        tap.eq(s.get("count"), "%d keys" % (KEYS + 3), "the key list counts every key")
        tap.eq((s.get("first"), s.get("second"), s.get("rows")), ("Page 1 of 11", "Page 2 of 11", 100),
               "100 keys a page, 11 pages, and the next page")
        s = steps["keys: filtered by alias"]
        tap.eq((s.get("count"), s.get("aliases")), ("1 keys", ["bulk-0420"]), "the alias filter finds one key")

        s = steps["keys: block a selection, with progress"]
        chosen = s.get("chosen", [])
        tap.ok(len(chosen) == 12 and s.get("status") == "12 of 12 keys blocked." and
               sorted(s.get("blockedRows", [])) == sorted(chosen),
               "blocking a selection blocks each key chosen, and says so", s)
        tap.ok("max 12" in s.get("progress", []) and "Blocking keys: 12 of 12" in s.get("progress", []),
               "the bulk block shows its progress", s)
        tap.ok(chosen and all(srv.admin("GET", "/key/list?return_full_object=true&key_alias=" + a).json["keys"][0]
                              .get("blocked") is True for a in chosen), "the API has the selection blocked", chosen)
        s = steps["keys: create one and see its secret once"]
        secret = s.get("secret", "")
        tap.ok(s.get("secretShape") and "Copy" in s.get("copy", []), "a new key's secret is shown with a copy button", s)
        tap.ok(s.get("goneAfterDone") and s.get("goneAfterReload") and s.get("stillSignedIn"),
               "the secret is gone once dismissed, and after a reload", s)
        # by its alias: the page regenerates it later, which gives it a new secret and hash
        made_keys = srv.admin("GET", "/key/list?key_alias=console-made&return_full_object=true").json["keys"]
        info = made_keys[0] if made_keys else {}
        tap.ok(info.get("max_budget") == 5 and info.get("models") == ["gpt-4o", "gpt-4o-mini"] and
               info.get("tpm_limit") == 1000, "the key the page made has the fields it was given", info)
        tap.ok(info.get("token") != hashlib.sha256(secret.encode()).hexdigest(),
               "regenerated since: the secret shown first is no longer the key's", info)
        s = steps["keys: block it and see its state change"]
        tap.ok(s.get("before") and s.get("after") == "blocked", "the key's row turns blocked", s)
        tap.ok(info.get("blocked") is True, "the API has the key blocked", info)
        s = steps["keys: regenerate, the new secret shown once"]
        tap.ok(s.get("changed") and "old secret stops working" in s.get("question", ""),
               "regenerate asks first, then shows the new secret", s)
        fresh = s.get("fresh", "")
        tap.ok(fresh and srv.admin("GET", "/key/info?key=" + fresh).status == 200,
               "the new secret is the key's now", s)
        s = steps["keys: delete after a confirmation"]
        tap.eq(s.get("keptAfterCancel"), "1 keys", "cancelling the confirmation deletes nothing")
        tap.eq(srv.admin("GET", "/key/list?key_alias=bulk-0007").json["total_count"], 0,
               "confirming deletes the key")
        s = steps["keys: a refusal in words, naming its field"]
        tap.ok("tpm_limit" in s.get("alert", "") and s.get("alert", "").startswith("Error 4"),
               "a refused create shows the status and the field", s)

        s = steps["teams: add a member"]
        tap.ok("member-1:admin" in s.get("members", []), "the team's members show the one added", s)
        t = srv.admin("GET", "/team/info?team_id=" + team["team_id"]).json
        tap.ok(any(m.get("user_id") == "member-1" and m.get("role") == "admin"
                   for m in (t.get("team_info") or t).get("members_with_roles", [])), "the API has the member", t)

        s = steps["provider credentials: edit a weight, never see the secret"]
        tap.ok(s.get("secretShown") is False, "no page shows the provider secret", s)
        tap.ok(s.get("envShown"), "an environment reference is shown by its name", s)
        k = srv.request("GET", "/api/providers/openai/keys/" + pk["id"],
                        headers={"Authorization": "Bearer " + srv.master_key}).json
        tap.ok(k.get("weight") == 3, "the weight is saved", k)
        # The selection is by weight among the provider's keys (the page's key
        # and an env-backed one), so ask until the page's key is the one chosen.
        sel = None
        for _ in range(64):
            sel = srv.request("POST", "/api/providers/openai/keys/select", body={"model": "gpt-4o"},
                              headers={"Authorization": "Bearer " + srv.master_key})
            if sel.status != 200 or (sel.json or {}).get("id") == pk["id"]:
                break
        tap.ok(sel.status == 200 and (sel.json or {}).get("id") == pk["id"]
               and PROVIDER_SECRET in sel.body.decode(), "the stored secret is unchanged by the weight edit", sel)
        made_here = [x for x in srv.request("GET", "/api/providers/openai/keys",
                                            headers={"Authorization": "Bearer " + srv.master_key}).json.get("keys", [])
                     if x.get("name") == "console-page"]
        tap.ok(made_here and made_here[0].get("models") == ["*"] and "every model" in s.get("pageRow", "") and
               "from environment" in s.get("pageRow", ""),
               "a key added with no models is Bifrost's [\"*\"], shown as every model", [made_here, s])
        tap.ok(s.get("addAlert", "").startswith("Error 400 on field \u201cvalue\u201d: value must reference env."),
               "Bifrost's refusal is shown in words with its field", s)

        s = steps["other pages: create a team, a budget, an end user (and block it), a Venice key"]
        tap.ok("team-from-page" in s.get("teams", []) and "tier-page" in s.get("budgets", []) and
               "blocked" in s.get("customer", "") and s.get("veniceShown") and
               "from the page" in s.get("veniceRows", []) and s.get("alert") == "",
               "the team, budget, end user and Venice key pages create what they are given", s)
        tap.ok(srv.admin("GET", "/customer/info?end_user_id=cust-page").json.get("blocked") is True,
               "the API has the end user blocked")
        for name in ("users", "organizations", "budgets", "customers", "venice", "audit"):
            s = steps["page: " + name]
            tap.ok(s.get("alert") == "" and s.get("title"), "the %s page loads without an error" % name, s)

        s = steps["spend: usage reported appears on the chart"]
        tap.eq(s.get("usage"), 200, "usage is reported")
        tap.ok(s.get("before") == 0 and s.get("after", 0) > 0, "bars appear on the chart after usage", s)
        tap.ok("gpt-4o: $2.5" in s.get("legend", ""), "the legend shows the model's spend", s)
        tap.ok("$2.5" in s.get("total", ""), "the month's total includes it", s)
        tap.ok("spender" in s.get("watch", "") and "83% of budget" in s.get("watch", ""),
               "the key near its budget is listed", s)

        s = steps["phone width: 390 px"]
        tap.ok(s.get("scrollWidth", 9999) <= 390, "nothing overflows a phone's width", s)

        s = steps["a viewer sees no write actions"]
        write = {"Create key", "Block", "Unblock", "Delete", "Regenerate", "Block selected", "Save weight",
                 "Add member", "Add key", "Create team"}
        tap.ok("read only" in s.get("who", ""), "the viewer is told the console is read only", s)
        tap.ok(not write & set(s.get("keysButtons", []) + s.get("providerButtons", []) + s.get("teamButtons", [])),
               "the viewer's pages offer no create, block or delete buttons", s)
        tap.ok("Create a key" not in s.get("forms", []) and "Add a member" not in s.get("teamForms", []),
               "the viewer's pages have no create forms", s)
        tap.eq(s.get("refused"), 403, "the API refuses the viewer's key a write anyway")

        s = steps["an internal user is offered only their pages"]
        tap.ok(s.get("who") == "Signed in: internal user" and "Create a key" in s.get("forms", []),
               "an internal user may create keys", s)
        tap.ok(not {"Budgets", "End users", "Provider credentials", "Audit log"} & set(s.get("nav", [])) and
               "Spend" in s.get("nav", []), "an internal user is not offered the admins' pages", s)
        tap.eq((s.get("keys"), s.get("alert")), ("1 keys", ""), "an internal user sees their own key and spend")
        v = steps["accessibility"]["violations"]
        for page, found in sorted(v.items()):
            tap.ok(not found, "axe-core: no serious violations on %s" % page, found)
        tap.ok(len(v) >= 12, "axe-core checked every page", sorted(v))
        tap.eq(steps["content security policy"]["violations"], [], "no Content-Security-Policy violation or page error")
        tap.ok(all(os.path.getsize(os.path.join(SHOTS, f)) > 1000 for f in
                   ("keys.png", "keys-phone.png", "spend.png", "viewer-keys.png", "providers.png")),
               "screenshots are written under build/console/")


tap.run(main)
