#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_cql_frame: one file per server-to-client
frame of the golden CQL vectors ($SLUICE_SHARED/cql-vectors, default
../shared/cql-vectors from the repo root). LZ4 frames are written twice, as
captured and inflated (flag 0x01 cleared, length fixed), so the fuzzer starts
from bodies the decoders can read. Frames over 8 KB are left out to keep the
corpus small. Names are content hashes, so reruns are idempotent."""
import hashlib
import json
import os
import struct
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
shared = os.environ.get("SLUICE_SHARED") or os.path.join(root, "..", "shared")
vectors = os.path.join(shared, "cql-vectors", "sessions")
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "fuzz", "corpus", "cql_frame")
os.makedirs(out, exist_ok=True)

written = 0
for name in sorted(os.listdir(vectors)):
    for line in open(os.path.join(vectors, name)):
        f = json.loads(line)
        if f["dir"] != "s2c":
            continue
        frames = [bytes.fromhex(f["hex"])]
        if "decompressed_body_hex" in f:
            body = bytes.fromhex(f["decompressed_body_hex"])
            hdr = frames[0][:9]
            frames.append(bytes([hdr[0], hdr[1] & ~1]) + hdr[2:5] + struct.pack(">i", len(body)) + body)
        for data in frames:
            if len(data) > 8192:
                continue
            path = os.path.join(out, hashlib.sha1(data).hexdigest()[:16])
            if not os.path.exists(path):
                with open(path, "wb") as fh:
                    fh.write(data)
                written += 1
print("%d new corpus files in %s" % (written, out))
