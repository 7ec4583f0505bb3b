"""e2e.py: the npm packages of tests/e2e (package-lock.json pins them; nothing is
downloaded once they are there)."""
import os
import subprocess

import tap

E2E = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e")


def npm_ci(*files):
    """npm ci in tests/e2e unless every one of files (paths under node_modules) is there
    already; a test point for the install when one runs."""
    if all(os.path.exists(os.path.join(E2E, "node_modules", f)) for f in files):
        return True
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=E2E, capture_output=True, text=True)
    return tap.ok(r.returncode == 0, "npm ci installs the pinned %s" % ", ".join(
        f.split("/")[0] for f in files), r.stdout + r.stderr)
