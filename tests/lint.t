#!/usr/bin/python3
"""lint.t: spec/openapi.yaml, the file as it is, passes two independent OpenAPI linters
(Redocly CLI and Spectral's oas ruleset) with no error or warning, and the request
schemas that repeat another's properties repeat them unchanged."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(ROOT, "scripts", "lint")


# Requests that repeat another's fields (the spec has no merge keys, and
# allOf cannot combine with additionalProperties: false): request -> (the
# request whose properties it repeats, the fields it states differently).
REPEATS = {
    "UpdateKeyRequest": ("GenerateKeyRequest", {"key"}),
    "RegenerateKeyRequest": ("GenerateKeyRequest", {"key"}),
    "UpdateTeamRequest": ("NewTeamRequest", {"team_id"}),
    "UpdateUserRequest": ("NewUserRequest", {"team_id", "aliases"}),
}


def test_repeats():
    """The repeated properties stay the same as their source's."""
    schemas = contract.load_spec()["components"]["schemas"]
    for name, (source, own) in sorted(REPEATS.items()):
        props, src = schemas[name]["properties"], schemas[source]["properties"]
        differ = sorted(k for k in src if k not in own and props.get(k) != src[k])
        tap.ok(not differ, "%s repeats %s's properties" % (name, source),
               "differ or missing: %s" % ", ".join(differ))


def main():
    test_repeats()
    redocly = os.path.join(LINT, "node_modules", ".bin", "redocly")
    spectral = os.path.join(LINT, "node_modules", ".bin", "spectral")
    if not (os.path.exists(redocly) and os.path.exists(spectral)):
        # package-lock.json pins every version; npm ci installs exactly those
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=LINT, capture_output=True, text=True)
        if not tap.ok(r.returncode == 0, "npm ci installs the pinned linters",
                      r.stdout + r.stderr):
            return
    r = subprocess.run([redocly, "lint", "--config", os.path.join(LINT, "redocly.yaml"),
                        os.path.join(ROOT, "spec", "openapi.yaml")],
                       capture_output=True, text=True, cwd=ROOT)
    out = r.stdout + r.stderr
    tap.ok(r.returncode == 0, "redocly lint: no error", out)
    tap.ok("warning" not in out.lower(), "redocly lint: no warning", out)
    r = subprocess.run([spectral, "lint", "--fail-severity=warn", "--ruleset",
                        os.path.join(LINT, "spectral.yaml"),
                        os.path.join(ROOT, "spec", "openapi.yaml")],
                       capture_output=True, text=True, cwd=ROOT)
    tap.ok(r.returncode == 0, "spectral lint (spectral:oas): no error and no warning",
           r.stdout + r.stderr)


tap.run(main)
