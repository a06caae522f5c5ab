#!/usr/bin/env python3
"""Prints an account SAS query string for Azurite's well-known dev account
(devstoreaccount1 and its published development key), valid for 2 hours,
for the queue service: what loadgen --proto azure appends to each request.
Also creates queues given as arguments (PUT /devstoreaccount1/NAME)."""
import base64, datetime, hashlib, hmac, sys, urllib.parse, urllib.request

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def sas() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    st = (now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    se = (now + datetime.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    sv, sp, ss, srt, spr = "2019-12-12", "rwdlacup", "q", "sco", "http"
    to_sign = "\n".join([ACCOUNT, sp, ss, srt, st, se, "", spr, sv, ""])
    sig = base64.b64encode(hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    q = {"sv": sv, "ss": ss, "srt": srt, "sp": sp, "st": st, "se": se, "spr": spr, "sig": sig}
    return urllib.parse.urlencode(q)


if __name__ == "__main__":
    port = int(sys.argv[1])
    s = sas()
    for name in sys.argv[2:]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/{ACCOUNT}/{name}?{s}", method="PUT")
        req.add_header("x-ms-version", "2019-12-12")
        urllib.request.urlopen(req).read()
    print(s)
