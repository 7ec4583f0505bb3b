#!/usr/bin/python3
"""lint.t: spec/openapi.yaml passes a standard OpenAPI linter (Redocly CLI) with no error or warning."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(ROOT, "scripts", "lint")


def main():
    redocly = os.path.join(LINT, "node_modules", ".bin", "redocly")
    if not os.path.exists(redocly):
        # package-lock.json pins every version; npm ci installs exactly those
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=LINT, capture_output=True, text=True)
        if not tap.ok(r.returncode == 0, "npm ci installs the pinned linter",
                      r.stdout + r.stderr):
            return
    r = subprocess.run([redocly, "lint", "--config", os.path.join(LINT, "redocly.yaml"),
                        os.path.join(ROOT, "spec", "openapi.yaml")],
                       capture_output=True, text=True, cwd=ROOT)
    out = r.stdout + r.stderr
    tap.ok(r.returncode == 0, "redocly lint: no error", out)
    tap.ok("warning" not in out.lower(), "redocly lint: no warning", out)


tap.run(main)
