#!/usr/bin/python3
"""readme.t: the README's shell examples, run verbatim and in order in one shell, as a reader
on a fresh clone would run them, against `make run`'s server (scripts/run-lighttpd) on a free
PORT with a fresh var/ (README "Trying the examples").

A shell example is a fenced ```sh block: `$ ` starts a command (continued on the next lines
while the shell would wait for more), the other lines are what the README says it prints.  A
block that cannot run here says why on the line before it:
<!-- readme.t: skip, REASON -->.  A `$ ` line outside such a block is a failure: every
example is either run or says why not.  Each command must exit 0; what the README shows must
match what it printed in shape: the same HTTP status lines, JSON where JSON is shown, every
word the README shows (its `…` elides), and an answer the README does not show must not be
an error envelope."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import BIN, ROOT, free_port, wait_for  # noqa: E402

import http.client  # noqa: E402

README = os.path.join(ROOT, "README.md")
SKIP = re.compile(r"^<!-- readme\.t: skip, (.+?) -->$")
# a port an example's server listens on: PORT=N (a recipe), --port N, -p 127.0.0.1:N
PORT_IN = r"(?:(?<![A-Z_])PORT=|--port |-p 127\.0\.0\.1:)(\d+)"
# what a reader sets before make run, as the README says: a provider's key for the
# env.OPENAI_API_KEY example (a made-up one: nothing here calls OpenAI)
READER_ENV = {"OPENAI_API_KEY": "sk-readme-0123456789abcdefghij91aa"}


def complete(command):
    """Whether the shell would run command as it is, rather than wait for another line."""
    if command.endswith("\\"):
        return False
    p = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    return "unexpected end of file" not in p.stderr and "unexpected EOF" not in p.stderr


def examples(text):
    """The README's ```sh blocks: (line, [(line, command, shown output)], skip reason or
    None); and the line numbers of `$ ` lines that are in no such block."""
    blocks, stray = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang, start = line[3:].strip(), i
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body = lines[i + 1:j]
            if lang == "sh":
                prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
                m = SKIP.match(prev.strip())
                blocks.append((start + 1, parse(body, start + 2), m.group(1) if m else None))
            elif any(b.startswith("$ ") for b in body):
                stray.append(start + 1)
            i = j + 1
            continue
        if line.startswith("    $ ") or line.startswith("\t$ "):
            stray.append(i + 1)
        i += 1
    return blocks, stray


def parse(body, first_line):
    """A block's commands: (line, command, the lines shown after it)."""
    commands, k = [], 0
    while k < len(body):
        if not body[k].startswith("$ "):
            if not commands:
                raise ValueError("line %d: a ```sh block starts with output" % (first_line + k))
            commands[-1][2].append(body[k])
            k += 1
            continue
        line, command = first_line + k, body[k][2:]
        k += 1
        while not complete(command) and k < len(body):
            command += "\n" + body[k]
            k += 1
        commands.append((line, command, []))
    return commands


def words(text):
    """The plain words of text (a letter, then letters; a capital only first), lower-cased:
    the shape the README promises, whatever keys, tokens and times an answer holds."""
    return {w.lower() for w in re.split(r"[^A-Za-z0-9_]+", text)
            if re.fullmatch(r"[A-Za-z]?[a-z_]{2,}", w)}


def json_part(text):
    """The JSON answer in text (after any HTTP head), or None."""
    body = text.split("\n\n", 1)[1] if text.startswith("HTTP/") and "\n\n" in text else text
    try:
        return json.loads(body)
    except ValueError:
        return None


def shape(shown, got):
    """What differs in shape between the output the README shows and what the command
    printed; [] when they agree."""
    problems = []
    got = got.replace("\r\n", "\n")
    if not shown.strip():
        answer = json_part(got.strip())
        if isinstance(answer, dict) and "error" in answer:
            problems.append("an error the README does not show")
        return problems
    for status in re.findall(r"^HTTP/\S+ (\d{3})", shown, re.M):
        if not re.search(r"^HTTP/\S+ %s\b" % status, got, re.M):
            problems.append("no HTTP status %s" % status)
    body = shown.split("\n\n", 1)[1] if shown.startswith("HTTP/") and "\n\n" in shown else shown
    if body.lstrip()[:1] in ("{", "[") and not body.rstrip().endswith("…"):
        answer = json_part(got.strip())
        if answer is None:
            problems.append("JSON shown, none printed")
        for code in re.findall(r'"code":\s*"(\d{3})"', body):
            if not (isinstance(answer, dict) and isinstance(answer.get("error"), dict) and
                    answer["error"].get("code") == code):
                problems.append("error code %s shown" % code)
    missing = sorted(words(shown) - words(got))
    if missing:
        problems.append("words shown but not printed: " + " ".join(missing))
    return problems


def clone(tmp):
    """A fresh clone's tree: the checkout's files (its build included) without a var/."""
    where = os.path.join(tmp, "keywarden")
    os.mkdir(where)
    for name in os.listdir(ROOT):
        if name not in ("var",):
            os.symlink(os.path.join(ROOT, name), os.path.join(where, name))
    # `make install` puts keywarden on PATH; the README's operator commands say `keywarden`
    bindir = os.path.join(tmp, "bin")
    os.mkdir(bindir)
    os.symlink(BIN, os.path.join(bindir, "keywarden"))
    return where, bindir


def fixed_ports(commands):
    """The ports the examples listen on themselves."""
    return sorted({int(p) for _, command, _ in commands for p in re.findall(PORT_IN, command)})


def in_use(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def healthy(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/health")
        return c.getresponse().status == 200
    except OSError:
        return False


def listening(command, earlier):
    """What a server started with & in command listens on: the ports it or the earlier
    commands of its block name (PORT=N, --port N, -p 127.0.0.1:N), else its -s socket."""
    ports = re.findall(PORT_IN, command) or [p for c in earlier for p in re.findall(PORT_IN, c)]
    if ports:
        return ["(exec 3<>/dev/tcp/127.0.0.1/%s) 2>/dev/null" % ports[-1]]
    return ["[ -S %s ]" % m for m in re.findall(r" -s (\S+)", command)]


def script(blocks, out):
    """One bash script that runs each command in order, in this shell, its output and
    status to files of its own; a server started with & is waited for (up to 20 s) until
    it listens, as a reader would before the next command."""
    parts = ["cd \"$1\"", "out=%s" % json.dumps(out)]
    n = 0
    for commands in blocks:
        for k, (_, command, _) in enumerate(commands):
            parts.append("{\n%s\n} >\"$out/%d\" 2>&1 </dev/null\necho $? >\"$out/%d.rc\"" %
                         (command, n, n))
            n += 1
            if command.rstrip().endswith("&"):
                ready = listening(command, [c for _, c, _ in commands[:k]]) or ["false"]
                parts.append("for i in $(seq 200); do %s && break; sleep 0.1; done" %
                             " && ".join(ready))
    parts.append("kill $(jobs -p) 2>/dev/null; wait")
    return "\n".join(parts) + "\n"


def recipe_help():
    """Each recipe's placeholders are explained by scripts/recipe NAME --help."""
    recipe = os.path.join(ROOT, "scripts", "recipe")
    listing = subprocess.run([recipe], capture_output=True, text=True, check=True).stdout
    bad = []
    for line in listing.splitlines():
        name, *holders = line.split()
        h = subprocess.run([recipe, name, "--help"], capture_output=True, text=True)
        for p in holders:
            m = re.search(r"^  %s +(.+)$" % re.escape(p.strip("@")), h.stdout, re.M)
            if h.returncode != 0 or not m or "see the recipe" in m.group(1):
                bad.append((name, p))
    tap.ok(listing and not bad, "scripts/recipe NAME --help explains each placeholder of "
           "every recipe", bad)
    # the example in each recipe's header names every placeholder, so it renders as shown
    bad = []
    for line in listing.splitlines():
        name, *holders = line.split()
        with open(os.path.join(ROOT, "scripts", "recipes", name + ".in")) as f:
            header = "".join(l[1:] for l in f if l.startswith("#"))
        m = re.search(r"scripts/recipe %s ((?:.*\\\n)*.*)" % re.escape(name), header)
        given = set(re.findall(r"\b([A-Z_]+)=", m.group(1))) if m else set()
        if holders and (not m or given != {p.strip("@") for p in holders}):
            bad.append((name, sorted(given), holders))
    tap.ok(not bad, "each recipe's header shows how to render it with every placeholder", bad)


def main():
    with open(README) as f:
        text = f.read()
    blocks, stray = examples(text)
    tap.eq(stray, [], "every shell example of the README is in a ```sh block, run or skipped "
           "with its reason")
    skipped = [(line, reason) for line, _, reason in blocks if reason]
    for line, reason in skipped:
        tap.diag("README.md:%d not run: %s" % (line, reason))
    run = [cs for _, cs, reason in blocks if not reason]
    commands = [c for cs in run for c in cs]
    tap.ok(len(commands) >= 40 and len(skipped) <= 12,
           "the README runs %d commands, %d blocks skipped" % (len(commands), len(skipped)))
    recipe_help()

    busy = [p for p in fixed_ports(commands) if in_use(p)]
    if busy:
        tap.bail("the README's examples listen on %s, and something on this machine already "
                 "does: stop it and run again" % ", ".join(map(str, busy)))
    tmp = tempfile.mkdtemp(prefix="kw-readme-")
    server = shell = None
    try:
        where, bindir = clone(tmp)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
        env.update(READER_ENV)
        # make run, less its bootstrap and build: the checkout is built
        server = subprocess.Popen([os.path.join(where, "scripts", "run-lighttpd"), BIN],
                                  cwd=where, env=dict(env, PORT=str(port), KEYWARDEN_WORKERS="2"),
                                  stdout=open(os.path.join(tmp, "make-run.log"), "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        if not tap.ok(wait_for(lambda: healthy(port), timeout=20), "make run's server answers"):
            return
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        with open(os.path.join(tmp, "readme.sh"), "w") as f:
            f.write(script(run, out))
        started = time.time()
        shell = subprocess.Popen(["bash", "--noprofile", "--norc", os.path.join(tmp, "readme.sh"),
                                  where],
                                 env=dict(env, PORT=str(port),
                                          PATH=bindir + os.pathsep + env.get("PATH", "")),
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        shell.wait(timeout=120)
        tap.diag("the README's commands ran in %.1f s" % (time.time() - started))
        bad = []
        for n, (line, command, shown) in enumerate(commands):
            try:
                with open(os.path.join(out, "%d.rc" % n)) as f:
                    rc = int(f.read())
                with open(os.path.join(out, str(n)), errors="replace") as f:
                    got = f.read()
            except (OSError, ValueError):
                bad.append((line, command, "never ran"))
                continue
            problems = ([] if rc == 0 else ["exit status %d" % rc]) + shape("\n".join(shown), got)
            if problems:
                bad.append((line, command[:300], problems, got[:600]))
        tap.ok(commands and not bad, "each of the README's %d commands runs and prints what the "
               "README shows, in shape" % len(commands),
               "\n".join("README.md:%s: %s\n  %s\n  printed: %s" % (b[0], b[1], b[2:3], b[3:])
                         for b in bad))
    finally:
        for p in (shell, server):
            if p is not None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        if os.environ.get("KW_KEEP_TMP") is None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tap.diag("kept " + tmp)


tap.run(main)
