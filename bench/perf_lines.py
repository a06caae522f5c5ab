#!/usr/bin/env python3
"""Where the cycles go in Sluice's own source, by file:line.

    perf script -i perf.data -F tid,ip,sym,dso | perf_lines.py BINARY [TOP]

For every sample, each frame in BINARY is resolved (one batch of
`addr2line -i`, inlined functions included; return addresses minus one, so a
caller's line is the call's line), and each function and source line on the
stack counts once. Printed: the share of all samples whose stack passes
through each function and each line (inclusive), and the samples per thread.
Lines in src/ are what a fix changes, so this names file:line directly."""
import collections
import os
import subprocess
import sys


def samples(lines):
    cur = []
    for line in lines:
        if not line.strip():
            if cur:
                yield cur
            cur = []
            continue
        cur.append(line.rstrip("\n"))
    if cur:
        yield cur


def main():
    binary = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    parsed = []
    addrs = set()
    threads = collections.Counter()
    for s in samples(sys.stdin):
        head = s[0].split()
        threads[head[0] if head else "?"] += 1
        frames = []
        for i, line in enumerate(s[1:]):
            parts = line.split(None, 1)
            if len(parts) < 2:
                continue
            try:
                ip = int(parts[0], 16)
            except ValueError:
                continue
            if parts[1].endswith("(" + binary + ")"):
                a = ip if i == 0 else ip - 1
                frames.append(a)
                addrs.add(a)
        parsed.append(frames)
    res = {}
    if addrs:
        order = sorted(addrs)
        out = subprocess.run(["addr2line", "-e", binary, "-f", "-i", "-a"] + [hex(a) for a in order],
                             capture_output=True, text=True).stdout.splitlines()
        cur, chain, i = None, [], 0
        while i < len(out):
            line = out[i]
            if line.startswith("0x"):
                if cur is not None:
                    res[cur] = chain
                cur, chain = int(line, 16), []
                i += 1
                continue
            func = line
            loc = out[i + 1] if i + 1 < len(out) else "??:0"
            loc = loc.split(" (discriminator")[0]
            path, _, ln = loc.rpartition(":")
            parts = path.split("/")
            short = "/".join(parts[parts.index("src"):]) if "src" in parts else os.path.basename(path)
            chain.append((func, f"{short}:{ln}"))
            i += 2
        if cur is not None:
            res[cur] = chain
    n = len(parsed)
    by_func, by_line = collections.Counter(), collections.Counter()
    for frames in parsed:
        sf, sl = set(), set()
        for a in frames:
            for func, loc in res.get(a, []):
                sf.add(func)
                sl.add(f"{loc} ({func})")
        for f in sf:
            by_func[f] += 1
        for l in sl:
            by_line[l] += 1
    print(f"samples: {n}; samples per thread (tid: n): "
          + ", ".join(f"{t}: {c}" for t, c in threads.most_common(8)))
    print()
    print(f"## inclusive share of all samples, by Sluice function (top {top})")
    for f, c in by_func.most_common(top):
        print(f"{100.0 * c / max(n, 1):6.2f}%  {f}")
    print()
    print(f"## inclusive share of all samples, by Sluice source line (top {top})")
    for k, c in by_line.most_common(top):
        print(f"{100.0 * c / max(n, 1):6.2f}%  {k}")


if __name__ == "__main__":
    main()
