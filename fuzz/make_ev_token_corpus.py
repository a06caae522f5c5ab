#!/usr/bin/env python3
"""Seeds for fuzz_ev_token: token bodies as src/events/page.c lays them out
(before the MAC, which the target adds), and a few times of the API."""
import hashlib
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "ev_token")


def s(b):
    return bytes([len(b)]) + b


def body(account, types, tags, start, end, desc=False, last=None):
    flags = (1 if desc else 0) | (2 if last else 0)
    out = bytes([flags]) + s(account) + bytes([len(types)]) + b"".join(map(s, types))
    out += bytes([len(tags)]) + b"".join(map(s, tags)) + struct.pack(">qq", start, end)
    if last:
        out += struct.pack(">q", last[0]) + s(last[1])
    return out


SEEDS = [
    body(b"acme", [], [], 0, 1796374800000000),
    body(b"acme", [b"order.created", b"order.paid"], [b"region=eu"], 1796374800000000, 1796374860000000,
         desc=True, last=(1796374830000000, b"order-1042-created")),
    body(b"a" * 80, [bytes([97 + i]) * 128 for i in range(10)], [bytes([97 + i]) * 64 for i in range(10)],
         0, 253402300800000000, last=(253402300799999999, b"z" * 128)),
    body(b"dev", [b"b", b"a"], [], 5, 4),  # refused: not canonical, start after end
    b"2026-12-04T10:00:00.5+01:00",
    b"2026-12-04t09:00:00.123456z",
    b"1796374800500",
    b"9999-12-31T23:59:59.999999Z",
]

os.makedirs(OUT, exist_ok=True)
for seed in SEEDS:
    with open(os.path.join(OUT, hashlib.sha1(seed).hexdigest()), "wb") as f:
        f.write(seed)
