#!/usr/bin/python3
"""gen.t: golden-file and rejection tests for scripts/gen-openapi.

  prove tests/gen.t                run the tests
  GEN_UPDATE=1 tests/gen.t         rewrite fixtures/gen/ok/<name>/ from the generator
"""
import glob
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402

import yaml  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = os.path.join(REPO, "scripts", "gen-openapi")
KW_H = os.path.join(REPO, "fcgi-app", "kw.h")
OUTPUTS = ("ops.h", "routes.c", "openapi_json.c")
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
UPDATE = os.environ.get("GEN_UPDATE") == "1"

# Links the generated tables with stub handlers, then checks what only a
# running program can: each pattern compiles, the JSON string is whole.
CHECK_MAIN = r"""
#define _POSIX_C_SOURCE 200809L
#include <regex.h>
#include <stdio.h>
#include <string.h>
#include "gen/ops.h"

int
main(void)
{
	size_t i;
	int bad = 0;

	for (i = 0; i < kw_gen_npatterns; i++) {
		regex_t re;
		if (regcomp(&re, kw_gen_patterns[i], REG_EXTENDED | REG_NOSUB) != 0) {
			fprintf(stderr, "pattern %zu does not compile: %s\n", i, kw_gen_patterns[i]);
			bad = 1;
			continue;
		}
		regfree(&re);
	}
	for (i = 0; i < kw_gen_nroutes; i++)
		if (kw_gen_routes[i].handler == NULL || kw_gen_routes[i].method == NULL)
			bad = 1;
	if (strlen(kw_gen_openapi_json) != kw_gen_openapi_json_len) {
		fprintf(stderr, "kw_gen_openapi_json_len is wrong\n");
		bad = 1;
	}
	fprintf(stderr, "%s\n", kw_gen_spec_sha256);
	fwrite(kw_gen_openapi_json, 1, kw_gen_openapi_json_len, stdout);
	return bad;
}
"""

# rematch PATTERN STRING...: prints 1 or 0 per string, as the validator would match.
REMATCH = r"""
#define _POSIX_C_SOURCE 200809L
#include <regex.h>
#include <stdio.h>

int
main(int argc, char **argv)
{
	regex_t re;
	int i;

	if (argc < 2 || regcomp(&re, argv[1], REG_EXTENDED | REG_NOSUB) != 0)
		return 2;
	for (i = 2; i < argc; i++)
		printf("%d", regexec(&re, argv[i], 0, NULL, 0) == 0);
	regfree(&re);
	return 0;
}
"""

# (ECMA pattern, strings it matches, strings it does not)
PATTERN_CASES = [
    (r"^\d{3}$", ["123"], ["12", "1234", "12a"]),
    (r"^sk-\d{4,}$", ["sk-1234", "sk-123456"], ["sk-123", "xsk-1234x"]),
    (r"^[\w.-]+$", ["a.b-c_9"], ["a b", "", "a/b"]),
    (r"\s", [" x", "a\tb"], ["ab"]),
    (r"^a.c$", ["abc", "a-c"], ["a\nc", "a\rc", "ac"]),
    (r"^(ab|cd)+$", ["abcd", "ab"], ["abc", ""]),
    (r"^x{2,3}$", ["xx", "xxx"], ["x", "xxxx"]),
    (r"^x{2,}y?$", ["xx", "xxxxy"], ["xy"]),
    (r"^[\]\-^[]+$", ["]-^["], ["a", "\\"]),
    (r"^[^\d\s]$", ["a", "-"], ["1", " "]),
    (r"^\[x\]$", ["[x]"], ["x", "[x"]),
    (r"^a\.b\*c\?\+\(\)\|\$\^$", ["a.b*c?+()|$^"], ["axb*c?+()|$^"]),
    (r"^[\^]$", ["^"], ["a", "\\"]),
    (r"^[\^-]$", ["^", "-"], ["a"]),
    (r"^\D\W\S$", ["a!x", "a x"], ["1!x", "a! ", "a_x"]),
    (r"^\{\}$", ["{}"], ["{"]),
    (r"^[a\\]$", ["a", "\\"], ["b"]),
    (r"^\/\-$", ["/-"], ["-"]),
    (r"^\t$", ["\t"], ["t"]),
    (r"^[!-~]+$", ["A~!"], ["a b"]),
    (r"key", ["a key here"], ["kee"]),
]


def run(args, cwd=REPO):
    """Runs a command; returns (exit status, stdout, stderr) as text."""
    p = subprocess.run(args, cwd=cwd, capture_output=True)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def read(path):
    """A file's bytes, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def workdir(tmp, name):
    """A fresh TMP/name holding kw.h, so gen/ops.h's "../kw.h" resolves."""
    d = os.path.join(tmp, name)
    os.makedirs(d)
    shutil.copy(KW_H, os.path.join(d, "kw.h"))
    return d


def compile_and_run(d, spec):
    """Compiles the generated files in d/gen, links them with stubs and runs
    the check program; returns its JSON output or None."""
    gen = os.path.join(d, "gen")
    rc, out, err = run(["gcc"] + CFLAGS + ["-fsyntax-only", "-I", os.path.join(REPO, "fcgi-app"),
                                           os.path.join(gen, "routes.c"),
                                           os.path.join(gen, "openapi_json.c")])
    if not tap.ok(rc == 0, "%s: generated C compiles with %s" % (spec, " ".join(CFLAGS)), err):
        return None
    with open(os.path.join(gen, "ops.h")) as f:
        ops = re.findall(r"\bkw_op_(\w+)\(", f.read())
    with open(os.path.join(d, "stubs.c"), "w") as f:
        f.write('#include "gen/ops.h"\n')
        for op in ops:
            f.write("enum kw_err kw_op_%s(struct kw_req *q, struct kw_resp *r)\n"
                    "{ (void)q; (void)r; return KW_OK; }\n" % op)
    with open(os.path.join(d, "main.c"), "w") as f:
        f.write(CHECK_MAIN)
    exe = os.path.join(d, "check")
    rc, out, err = run(["gcc"] + CFLAGS + ["-o", exe, os.path.join(d, "main.c"),
                                           os.path.join(d, "stubs.c"),
                                           os.path.join(gen, "routes.c"),
                                           os.path.join(gen, "openapi_json.c")])
    if not tap.ok(rc == 0, "%s: tables link with stub handlers" % spec, err):
        return None
    rc, out, err = run([exe])
    tap.ok(rc == 0, "%s: every pattern compiles with regcomp; JSON length right" % spec, err)
    return out, err.strip()


def test_ok_fixture(tmp, spec_rel):
    """One ok fixture: golden bytes, compilation, served JSON and hash."""
    name = os.path.splitext(os.path.basename(spec_rel))[0]
    golden = os.path.join(REPO, os.path.splitext(spec_rel)[0])
    d = workdir(tmp, "ok-" + name)
    gen = os.path.join(d, "gen")
    rc, _, err = run([GEN, spec_rel, gen])
    if not tap.ok(rc == 0, "%s: generates" % spec_rel, err):
        return
    for out in OUTPUTS:
        got = read(os.path.join(gen, out))
        if UPDATE:
            os.makedirs(golden, exist_ok=True)
            with open(os.path.join(golden, out), "wb") as f:
                f.write(got)
            tap.ok(True, "%s: updated golden %s" % (spec_rel, out))
            continue
        want = read(os.path.join(golden, out))
        tap.ok(got == want, "%s: %s matches the golden file" % (spec_rel, out),
               diff_hint(want, got))
    result = compile_and_run(d, spec_rel)
    if result is None:
        return
    served, sha = result
    with open(os.path.join(REPO, spec_rel), "rb") as f:
        data = f.read()
    tap.eq(sha, hashlib.sha256(data).hexdigest(), "%s: kw_gen_spec_sha256 is the spec's hash"
           % spec_rel)
    try:
        parsed = json.loads(served)
    except ValueError as e:
        parsed = "not JSON: %s" % e
    tap.ok(parsed == yaml.safe_load(data), "%s: kw_gen_openapi_json is the spec as JSON"
           % spec_rel)


def diff_hint(want, got):
    """The first differing line, for a failed golden comparison."""
    if want is None:
        return "golden file missing; run GEN_UPDATE=1 tests/gen.t"
    wl, gl = want.decode().splitlines(), (got or b"").decode().splitlines()
    for i, (w, g) in enumerate(zip(wl, gl)):
        if w != g:
            return "line %d\nwant: %s\ngot:  %s" % (i + 1, w, g)
    return "lengths differ: want %d lines, got %d" % (len(wl), len(gl))


def test_cwd_independent(tmp):
    """The header names the spec relative to the repository, whatever the cwd."""
    spec = os.path.join(REPO, "fixtures", "gen", "ok", "minimal.yaml")
    out = os.path.join(tmp, "cwd", "gen")
    rc, _, err = run([GEN, spec, out], cwd=tmp)
    tap.ok(rc == 0 and read(os.path.join(out, "routes.c"))
           == read(os.path.join(REPO, "fixtures", "gen", "ok", "minimal", "routes.c")),
           "output does not depend on the working directory or path spelling", err)


def test_reject_fixture(tmp, spec_rel):
    """One reject fixture: exit 2, the expected message, nothing written."""
    with open(os.path.join(REPO, spec_rel)) as f:
        first = f.readline()
    m = re.match(r"# expect: (.+)$", first)
    if not tap.ok(m is not None, "%s: has an '# expect:' first line" % spec_rel):
        return
    expect = m.group(1)
    out = os.path.join(tmp, "reject-" + os.path.basename(spec_rel))
    os.makedirs(out)
    rc, _, err = run([GEN, spec_rel, out])
    tap.eq(rc, 2, "%s: exits 2" % spec_rel)
    prefix = "gen-openapi: %s: " % spec_rel
    tap.ok(err.startswith(prefix) and expect in err and err.count("\n") == 1,
           "%s: says %r" % (spec_rel, expect), err)
    tap.eq(os.listdir(out), [], "%s: writes nothing" % spec_rel)


def test_check_mode(tmp):
    """--check passes on fresh output and fails on a changed spec or missing file."""
    d = os.path.join(tmp, "check")
    os.makedirs(d)
    spec = os.path.join(d, "spec.yaml")
    gen = os.path.join(d, "gen")
    shutil.copy(os.path.join(REPO, "fixtures", "gen", "ok", "rich.yaml"), spec)
    rc, _, err = run([GEN, spec, gen])
    tap.eq(rc, 0, "--check setup: generates")
    rc, _, err = run([GEN, "--check", spec, gen])
    tap.ok(rc == 0 and err == "", "--check passes on fresh output", err)

    with open(spec, "rb") as f:
        data = bytearray(f.read())
    data[2] ^= 0x20    # "# Exercises" -> "# exercises": one byte, only a comment
    with open(spec, "wb") as f:
        f.write(data)
    rc, _, err = run([GEN, "--check", spec, gen])
    tap.eq(rc, 1, "--check exits 1 after one byte of the spec changes")
    tap.ok(all("%s is stale" % os.path.join(gen, o) in err for o in OUTPUTS)
           and "run make gen" in err, "--check names each stale file and says run make gen",
           err)

    rc, _, err = run([GEN, spec, gen])
    os.remove(os.path.join(gen, "ops.h"))
    rc, _, err = run([GEN, "--check", spec, gen])
    tap.ok(rc == 1 and "ops.h is missing" in err, "--check names a missing file", err)

    bad = os.path.join(REPO, "fixtures", "gen", "reject", "keyword-oneOf.yaml")
    before = {o: read(os.path.join(gen, o)) for o in OUTPUTS}
    rc, _, err = run([GEN, "--check", bad, gen])
    tap.ok(rc == 2 and "oneOf" in err, "--check on a rejected spec exits 2", err)
    rc, _, err = run([GEN, bad, gen])
    tap.ok(rc == 2 and before == {o: read(os.path.join(gen, o)) for o in OUTPUTS},
           "a rejected spec leaves existing output alone", err)


def load_generator():
    """scripts/gen-openapi as a module, for its pattern translator."""
    loader = importlib.machinery.SourceFileLoader("gen_openapi", GEN)
    spec = importlib.util.spec_from_loader("gen_openapi", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_patterns(tmp):
    """Translated patterns match under regexec exactly what the spec's match."""
    src = os.path.join(tmp, "rematch.c")
    exe = os.path.join(tmp, "rematch")
    with open(src, "w") as f:
        f.write(REMATCH)
    rc, _, err = run(["gcc"] + CFLAGS + ["-o", exe, src])
    if not tap.ok(rc == 0, "rematch helper compiles", err):
        return
    gen = load_generator()
    for pattern, yes, no in PATTERN_CASES:
        ere = gen.translate_pattern(pattern)
        rc, out, err = run([exe, ere] + yes + no)
        want = "1" * len(yes) + "0" * len(no)
        tap.ok(rc == 0 and out == want, "pattern %s -> %s matches as ECMA-262 would"
               % (pattern, ere.encode("unicode_escape").decode()),
               "want %s, got %s (rc %d)" % (want, out, rc))


def main():
    tmp = tempfile.mkdtemp(prefix="gen-t.")
    try:
        oks = sorted(glob.glob(os.path.join(REPO, "fixtures", "gen", "ok", "*.yaml")))
        rejects = sorted(glob.glob(os.path.join(REPO, "fixtures", "gen", "reject", "*.yaml")))
        tap.ok(len(oks) >= 2 and len(rejects) >= 12, "fixtures present (%d ok, %d reject)"
               % (len(oks), len(rejects)))
        for spec in oks:
            test_ok_fixture(tmp, os.path.relpath(spec, REPO))
        test_cwd_independent(tmp)
        for spec in rejects:
            test_reject_fixture(tmp, os.path.relpath(spec, REPO))
        test_check_mode(tmp)
        test_patterns(tmp)
    finally:
        shutil.rmtree(tmp)


tap.run(main)
