#!/usr/bin/env python3
"""Copies the queue port's API (src/api/openapi.json, paths under /api/)
into the admin port's document (src/api/openapi-admin.json) under /admin,
as the admin server serves those routes for the dashboard behind the admin
token (admin.c, sl_api_admin_delegate). Run it after changing either
document; tests/api/test_dashboard_api.py checks that the copy is current.

The copied operations get the admin bearer scheme and an operationId
prefixed with "admin_"; the components they use come along, renamed with a
"Queue" prefix where the admin document has a different one of that name."""
import copy
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
NATIVE = os.path.join(ROOT, "src", "api", "openapi.json")
ADMIN = os.path.join(ROOT, "src", "api", "openapi-admin.json")
MARK = "x-sluice-delegated"


def merged():
    native = json.load(open(NATIVE))
    admin = json.load(open(ADMIN))
    # Drop the previous copy.
    admin["paths"] = {p: v for p, v in admin["paths"].items() if not v.get(MARK)}
    for kind, comps in admin["components"].items():
        admin["components"][kind] = {k: v for k, v in comps.items() if not (isinstance(v, dict) and v.get(MARK))}
    renamed = {}

    def ref_name(kind, name):
        key = (kind, name)
        if key not in renamed:
            src = copy.deepcopy(native["components"][kind][name])
            have = admin["components"].setdefault(kind, {})
            new = name if name not in have else "Queue" + name
            renamed[key] = new
            body = fix(src)
            if isinstance(body, dict):
                body[MARK] = True
            have[new] = body
        return renamed[key]

    def fix(node):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "$ref" and isinstance(v, str) and v.startswith("#/components/"):
                    _, _, kind, name = v.split("/", 3)
                    out[k] = f"#/components/{kind}/{ref_name(kind, name)}"
                else:
                    out[k] = fix(v)
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    for path, item in native["paths"].items():
        if not path.startswith("/api/"):
            continue
        item = fix(copy.deepcopy(item))
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            op["operationId"] = "admin_" + op.get("operationId", method + path)
            op["security"] = [{"bearerAuth": []}]
            op["tags"] = ["dashboard"]
            op["description"] = ("The queue port's route, served here for the dashboard with the admin token "
                                 "instead of an account's key (every permission level). " +
                                 op.get("description", ""))
        item[MARK] = True
        admin["paths"]["/admin" + path] = item
    return admin


def text(doc):
    return json.dumps(doc, indent=4, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    out = text(merged())
    if "--check" in sys.argv:
        sys.exit(0 if open(ADMIN).read() == out else 1)
    open(ADMIN, "w").write(out)
