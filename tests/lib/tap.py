"""tap.py: a minimal TAP producer for keywarden's script tests, run under prove."""
import json
import sys
import traceback

_count = 0
_failed = 0


def ok(cond, name, diag=None):
    """Records one test point; prints diag (str or JSON-able) on failure."""
    global _count, _failed
    _count += 1
    if not cond:
        _failed += 1
    print(("ok" if cond else "not ok") + " %d - %s" % (_count, name))
    if not cond and diag is not None:
        if not isinstance(diag, str):
            diag = json.dumps(diag, indent=1, default=str)
        for line in diag.splitlines():
            print("#   " + line)
    sys.stdout.flush()
    return bool(cond)


def eq(got, want, name):
    return ok(got == want, name, "got:  %r\nwant: %r" % (got, want))


def diag(msg):
    for line in str(msg).splitlines():
        print("# " + line)
    sys.stdout.flush()


def bail(msg):
    print("Bail out! " + msg)
    sys.stdout.flush()
    sys.exit(255)


def skip_all(reason):
    """Skips the whole script with reason: a plan of none, before anything else is printed."""
    print("1..0 # SKIP " + reason)
    sys.stdout.flush()
    sys.exit(0)


def done():
    """Prints the plan and exits with the number of failures (capped)."""
    print("1..%d" % _count)
    sys.stdout.flush()
    sys.exit(min(_failed, 254))


def run(main):
    """Runs main(); an exception becomes a failed test point, not a lost plan."""
    try:
        main()
    except Exception:
        ok(False, "test script raised", traceback.format_exc())
    done()
