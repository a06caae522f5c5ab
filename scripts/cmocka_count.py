#!/usr/bin/env python3
"""Counts a cmocka binary's results test by test.

    cmocka_count.py OUT                  prints "passed failed skipped"
    cmocka_count.py OUT --skipped        prints the tests that skipped, one
                                         "group<TAB>name" a line
    cmocka_count.py OUT --only LIST      counts only the tests LIST names
                                         (a file written by --skipped)

A binary may run several groups (test_store runs the contract on SQLite,
then SQLite-only tests, then the contract on Cassandra, which skips without
SLUICE_CASSANDRA_PORT). scripts/test.sh counts every test in the unit phase,
and in the Cassandra phase only the tests that skipped in the unit phase,
so that no test is counted twice. Tests are told apart by group (its index
in the output) and name, since groups repeat names. A test that started and
printed no result (a crash) is a failure, and so is a test of LIST that did
not run at all.
"""

import re
import sys

START = re.compile(r"^\[=+\] (?:.*: )?Running (\d+) test")
RUN = re.compile(r"^\[ RUN      \] (.+?)\s*$")
DONE = re.compile(r"^\[ *(OK|FAILED|SKIPPED|ERROR) *\] (.+?)\s*$")


def results(text):
    """{(group, name): "OK" | "FAILED" | "SKIPPED"}, crashes as FAILED."""
    out = {}
    group, cur = -1, None
    for line in text.splitlines():
        if START.match(line):
            group += 1
            cur = None
            continue
        m = RUN.match(line)
        if m:
            if cur is not None:
                out[cur] = "FAILED"  # the previous test never finished
            cur = (str(group), m.group(1))
            continue
        m = DONE.match(line)
        if m and cur is not None and m.group(2) == cur[1]:
            out[cur] = "FAILED" if m.group(1) == "ERROR" else m.group(1)
            cur = None
    if cur is not None:
        out[cur] = "FAILED"  # the binary died in the middle of a test
    return out


def main():
    res = results(open(sys.argv[1], errors="replace").read())
    if "--skipped" in sys.argv:
        for (g, name), r in res.items():
            if r == "SKIPPED":
                print(f"{g}\t{name}")
        return
    if "--only" in sys.argv:
        want = set()
        for line in open(sys.argv[sys.argv.index("--only") + 1]):
            if "\t" in line:
                g, name = line.rstrip("\n").split("\t", 1)
                want.add((g, name))
        missing = want - set(res)
        res = {k: v for k, v in res.items() if k in want}
        p = sum(1 for v in res.values() if v == "OK")
        f = sum(1 for v in res.values() if v == "FAILED") + len(missing)
        s = sum(1 for v in res.values() if v == "SKIPPED")
    else:
        p = sum(1 for v in res.values() if v == "OK")
        f = sum(1 for v in res.values() if v == "FAILED")
        s = sum(1 for v in res.values() if v == "SKIPPED")
    print(p, f, s)


if __name__ == "__main__":
    main()
