#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/fuzz_http.c to fuzz/corpus/http.

Each seed is one input in the target's structured format (see the comment at
the top of fuzz_http.c): route index, flags, auth byte, then the fields
method, account, queue, path suffix, query, headers and body separated by
NUL bytes. Raw seeds start with 0xF0 (queue API port) or 0xFF (admin port)
and hold bytes sent verbatim. File names are stable hashes of the content, so
re-running the script only changes what changed."""
import hashlib
import os
import sys

ROUTES = ["health", "openapi", "metrics", "ui", "list", "create", "get", "delete", "stats", "purge",
          "redrive", "put", "update", "ack", "next", "peek", "batch", "receive", "ackbatch",
          "admin_openapi", "admin_create", "admin_list", "admin_get", "admin_delete", "key_create",
          "key_delete", "signed_url"]
R = {name: i for i, name in enumerate(ROUTES)}
# The event log's routes: first bytes 0xE0.. (fuzz_http.c keeps them apart).
R.update({name: 0xE0 + i for i, name in enumerate(["ev_put", "ev_batch", "ev_get", "ev_query", "ev_log",
                                                     "ev_log_put", "sub_list", "sub_create", "sub_get",
                                                     "sub_delete"])})
R["sqs"] = 0xD8  # SQS's POST /: the action goes in X-Amz-Target (the headers field)
Q = {"orders": 0, "dlq": 1, "withdlq": 2, "fifo": 3}
METHOD, CHUNKED, EXPECT, HTTP10, NOLEN, AGAIN = 1, 2, 4, 8, 16, 128
KEY, NONE, SIGNED, SIGV4 = 0, 1, 2, 3


def seed(route, body=b"", query=b"", q="orders", flags=0, auth=KEY, method=b"", account=b"",
         queue=b"", suffix=b"", headers=b""):
    b = body.encode() if isinstance(body, str) else body
    head = bytes([R[route], flags | Q[q] << 5, auth])
    parts = [method, account, queue, suffix, query, headers, b]
    parts = [p.encode() if isinstance(p, str) else p for p in parts]
    return head + b"\0".join(parts)


def raw(text, admin=False):
    return bytes([0xFF if admin else 0xF0]) + (text.encode() if isinstance(text, str) else text)


def seeds():
    out = []
    add = out.append
    # One valid request for every route, with each auth scheme on a few.
    for r in ["health", "openapi", "metrics", "ui", "list", "admin_openapi", "admin_list"]:
        add(seed(r))
    add(seed("create", '{"queueName":"fz1"}'))
    add(seed("create", '{"queueName":"fz2","bucketSize":1,"maxDeliveryCount":2,"dlqName":"dlq",'
                       '"repairWorkerPollSeconds":1,"repairWorkerBucketFinalizeTimeSeconds":1,'
                       '"deleteBucketsAfterFinalize":false,"retentionSeconds":60,"strictFifo":true}'))
    add(seed("create", '{"queueName":"orders"}', query="errorIfExists=true"))
    add(seed("create", '{"queueName":"fz3"}', query="errorIfExists=false", auth=SIGNED))
    add(seed("get"))
    add(seed("get", auth=SIGV4))
    add(seed("get", q="withdlq", auth=SIGNED))
    add(seed("delete", queue="fz1"))
    add(seed("stats"))
    add(seed("purge", q="dlq"))
    add(seed("redrive", '{"to":"withdlq"}', q="dlq"))
    add(seed("put", "hello, sluice"))
    add(seed("put", "delayed", query="initialInvisibilitySeconds=5"))
    add(seed("put", "signed v4 body", auth=SIGV4))
    add(seed("update", '{"message":"new","newInvisibilitySeconds":0}', query="popReceipt=@R@"))
    add(seed("update", '{"newInvisibilitySeconds":30}', query="popReceipt=@R@", auth=SIGV4))
    add(seed("ack", query="popReceipt=@R@"))
    add(seed("ack", query="popReceipt=@R@", q="withdlq", auth=SIGNED))
    add(seed("next"))
    add(seed("next", query="invisibilityTimeSeconds=0", q="withdlq"))
    add(seed("peek", query="count=32"))
    add(seed("batch", '{"messages":[{"message":"a"},{"message":"b","delaySeconds":1,'
                      '"attributes":{"k":"v","k2":"v2"}}]}'))
    add(seed("receive", '{"maxMessages":32,"invisibilitySeconds":0,"waitSeconds":0}'))
    add(seed("receive", '{"maxMessages":1,"waitSeconds":1}', q="fifo"))
    add(seed("receive", "", q="withdlq"))
    add(seed("ackbatch", '{"popReceipts":["@R@","stale"]}'))
    add(seed("admin_create", '{"accountName":"acct1"}'))
    add(seed("admin_get", account="dev"))
    add(seed("admin_delete", account="acct1"))
    add(seed("key_create", '{"keyName":"k1"}', account="dev"))
    add(seed("key_delete", account="dev", queue="k1"))
    add(seed("signed_url", '{"levels":"rp","queueName":"orders"}', account="dev"))
    add(seed("signed_url", '{"levels":"rpuagcd","startTime":"2026-01-01T00:00:00Z",'
                           '"endTime":"2030-01-01T00:00:00Z","keyName":"secondary"}', account="dev"))

    # Transport variants: chunked, 100-continue, HTTP/1.0, no length, HEAD.
    add(seed("put", "chunked body " * 50, flags=CHUNKED))
    add(seed("put", "expect", flags=EXPECT))
    add(seed("put", "x" * 300, flags=EXPECT | CHUNKED))
    add(seed("get", flags=HTTP10))
    add(seed("put", "", flags=NOLEN))
    add(seed("get", method="HEAD"))
    add(seed("put", "x", method="GET"))
    # AGAIN: the same request twice on one kept-alive connection.
    add(seed("ack", query="popReceipt=@R@", flags=AGAIN))
    add(seed("update", '{"newInvisibilitySeconds":0}', query="popReceipt=@R@", flags=AGAIN))
    add(seed("put", "again " * 40, flags=AGAIN | EXPECT | CHUNKED))
    add(seed("put", "@X257@", flags=AGAIN))
    add(seed("create", '{"queueName":"fz4"}', query="errorIfExists=true", flags=AGAIN))

    # Bad JSON and bad fields.
    for body in ["{", "[]", '"s"', "null", "{}", '{"queueName":1}', '{"queueName":"a","queueName":"b"}',
                 '{"queueName":"bad name"}', '{"queueName":"' + "n" * 81 + '"}', 
                 '{"queueName":"q","bucketSize":0}', '{"queueName":"q","bucketSize":1001}',
                 '{"queueName":"q","bucketSize":1e3}',
                 '{"queueName":"q","retentionSeconds":99999999999999999999}',
                 '{"queueName":"q","retentionSeconds":9223372036854775807}',
                 '{"queueName":"q","maxDeliveryCount":2147483648}', '{"queueName":"q","dlqName":"nope"}',
                 '{"queueName":"q","dlqName":"q"}', '{"queueName":"q","dlqName":""}',
                 '{"queueName":"q","deleteBucketsAfterFinalize":null}']:
        add(seed("create", body))
    add(seed("create", '{"queueName":"q"}', query="errorIfExists=maybe"))
    add(seed("create", b'{"queueName":"\xff\xfe"}'))
    for body in ['{"maxMessages":0}', '{"maxMessages":33}', '{"invisibilitySeconds":604801}',
                 '{"waitSeconds":21}', '{"waitSeconds":"1"}', '[1]']:
        add(seed("receive", body))
    for body in ['{"messages":[]}', '{"messages":{}}', '{"messages":[1]}', '{"messages":[{"message":""}]}',
                 '{"messages":[{"message":5}]}', '{"messages":[{"message":"a","delaySeconds":604801}]}',
                 '{"messages":[{"message":"a","attributes":[]}]}',
                 '{"messages":[{"message":"a","attributes":{"":"v"}}]}',
                 '{"messages":[{"message":"a","attributes":{"k":1}}]}',
                 '{"messages":[{"message":"a","attributes":{"k":"a\\u0000b"}}]}',
                 '{"messages":[{"message":"a","attributes":{"' + "k" * 129 + '":"v"}}]}',
                 '{"messages":[{"message":"a","attributes":{"k":"@X1@"}}]}',
                 '{"messages":[{"message":"a\\u0000b"}]}', '{"messages":[{"message":"\\ud800"}]}',
                 '{"messages":[' + ",".join('{"message":"m%d"}' % i for i in range(101)) + "]}",
                 '{"messages":[{"message":"a","attributes":{' + ",".join('"k%d":"v"' % i for i in range(11)) + "}}]}"]:
        add(seed("batch", body))
    for body in ['{"popReceipts":[]}', '{"popReceipts":[""]}', '{"popReceipts":[1]}',
                 '{"popReceipts":["' + "r" * 200 + '"]}', '{"popReceipts":["a\\u0000b"]}',
                 '{"popReceipts":"@R@"}']:
        add(seed("ackbatch", body))
    for body in ['{}', '{"to":"orders"}', '{"to":"dlq"}', '{"to":"nope"}', '{"to":"bad name"}', '{"to":null}']:
        add(seed("redrive", body, q="dlq"))
    for body in ['{"newInvisibilitySeconds":-1}', '{"newInvisibilitySeconds":604801}', '{"message":""}',
                 '{"message":5,"newInvisibilitySeconds":1}', '{"message":null,"newInvisibilitySeconds":1}', "nope"]:
        add(seed("update", body, query="popReceipt=@R@"))
    add(seed("admin_create", '{"accountName":"bad name"}'))
    add(seed("admin_create", '{"accountName":"dev"}'))
    add(seed("key_create", '{"keyName":"primary"}', account="dev"))
    add(seed("key_create", '{"keyName":""}', account="nope"))
    add(seed("signed_url", '{"levels":"xyz"}', account="dev"))
    add(seed("signed_url", '{"levels":"r","startTime":"2030-01-01T00:00:00Z","endTime":"2020-01-01T00:00:00Z"}',
             account="dev"))
    add(seed("signed_url", '{"levels":"r","startTime":"not a time"}', account="dev"))

    # Bad receipts: not base64, too long, well-formed but absurd numbers.
    # "@B...@" is base64url of the text, so the fuzzer mutates receipt fields;
    # ".AAAAAAAAAAAAAAAA" is a MAC of the right length (12 bytes), but wrong.
    mac = ".AAAAAAAAAAAAAAAA"
    for rc in ["", "!!!", "r" * 127, "r" * 128, "@R@x", "@R@@R@", "@R@.", "." + "A" * 16, "@B2:1:1:1:1@" + mac,
               "@B2:1:1:1:1@", "@B1:1:1:1:1@" + mac, "@B2:0:0:0:0@" + mac, "@B2:-1:1:1:1@" + mac,
               "@B2:1:9223372036854775807:1:1@" + mac, "@B2:1:1:9223372036854775807:9223372036854775807@" + mac,
               "@B2:1:1:1:99999999999999999@" + mac, "@B2:1:1:1:1x@" + mac, "@B2:1:1:1@" + mac]:
        add(seed("ack", query="popReceipt=" + rc))
    for rc in ["!!!", "@R@", "@B2:1:1:1:99999999999999999@" + mac, "@B2:1:0:1:1@" + mac]:
        add(seed("update", '{"newInvisibilitySeconds":1}', query="popReceipt=" + rc, q="fifo"))
    add(seed("ack", query="popReceipt"))
    add(seed("ack", query="popReceipt=a&popReceipt=b"))

    # Out-of-range query numbers.
    for qs in ["invisibilityTimeSeconds=-1", "invisibilityTimeSeconds=604801",
               "invisibilityTimeSeconds=99999999999999999999", "invisibilityTimeSeconds"]:
        add(seed("next", query=qs))
    for qs in ["count=0", "count=33", "count=%00"]:
        add(seed("peek", query=qs))
    add(seed("put", "m", query="initialInvisibilitySeconds=604801"))

    # Names: long, bad, encoded, unknown.
    add(seed("get", queue="q" * 81))
    add(seed("get", queue="%00"))
    add(seed("get", queue="..", suffix="/../.."))
    add(seed("list", account="a" * 81))
    add(seed("list", account="nope"))
    add(seed("get", account="nope"))
    add(seed("get", suffix="/"))
    add(seed("admin_get", account="a" * 300))

    # Bodies near and over the limits; bad UTF-8.
    add(seed("put", "@X256@"))
    add(seed("put", "@X257@"))
    add(seed("put", b"\xc3\x28"))
    add(seed("put", b"\xed\xa0\x80"))
    add(seed("put", b"a\x00b"))
    add(seed("put", "@X257@", flags=EXPECT))
    add(seed("update", '{"message":"@U256@","newInvisibilitySeconds":1}', query="popReceipt=@R@"))
    add(seed("update", '{"message":"@X257@","newInvisibilitySeconds":1}', query="popReceipt=@R@"))
    add(seed("batch", '{"messages":[{"message":"@X1024@"}]}'))
    add(seed("create", '{"queueName":"q","pad":"@X1024@"}'))
    add(seed("put", "@X1@", headers="Content-Length: 99999999999999999999999"))

    # Auth: wrong key, bad schemes, skewed times, signed URL parameters.
    add(seed("get", auth=NONE))
    add(seed("get", auth=NONE, headers="Authorization: Key nope"))
    add(seed("get", auth=NONE, headers="Authorization: Signed abc\nX-Sluice-Request-Time: 2001-01-01T00:00:00Z"))
    add(seed("get", auth=NONE, headers="Authorization: Signed abc\nx-cassieq-request-time: garbage"))
    add(seed("get", auth=NONE, headers="Authorization: AWS4-HMAC-SHA256 Credential=dev/20261121/us-east-1/sqs/"
                                       "aws4_request, SignedHeaders=host;x-amz-date, Signature=00\nX-Amz-Date: 20261121T000000Z"))
    add(seed("get", auth=NONE, headers="Authorization: AWS4-HMAC-SHA256 Credential=dev:primary/x, SignedHeaders=, "
                                       "Signature="))
    add(seed("get", auth=NONE, query="auth=rpuagcd&q=orders&st=2020-01-01T00:00:00Z&et=2030-01-01T00:00:00Z&sig=abc"))
    add(seed("admin_list", auth=NONE, headers="Authorization: Bearer wrong"))

    # Raw requests for MHD's parser and our URL handling.
    add(raw("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    add(raw("GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"))
    add(raw("GET /api/v1/accounts/dev/queues/orders/messages/peek?count=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    add(raw("POST /api/v1/accounts/dev/queues/orders/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n"))
    add(raw("POST /api/v1/accounts/dev/queues/orders/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Content-Length: 6\r\n\r\nhello!"))
    add(raw("GET /%2e%2e/%2F/%00/%zz HTTP/1.1\r\nHost: x\r\n\r\n"))
    add(raw("GET http://x/health HTTP/1.1\r\nHost: x\r\n\r\n"))
    add(raw("GET * HTTP/1.1\r\nHost: x\r\n\r\n"))
    add(raw("GET /health\r\n\r\n"))
    add(raw("GET /health HTTP/1.1\r\nX: " + "a" * 40000 + "\r\n\r\n"))
    add(raw("GET /health HTTP/1.1\r\n folded\r\nHost: x\r\n\r\n"))
    add(raw("HEAD /api/v1/accounts/dev/queues HTTP/1.1\r\nHost: x\r\n\r\n"))
    # Authenticated raw requests ("@K@" is dev's primary key, "@R@" a receipt on orders).
    K = "Host: x\r\nAuthorization: Key @K@\r\n"
    Q = "/api/v1/accounts/dev/queues"
    add(raw("POST " + Q + "/fifo/messages HTTP/1.1\r\n" + K + "Content-Length: 2\r\n\r\nhi"
            "POST " + Q + "/fifo/messages/receive HTTP/1.1\r\n" + K + "Content-Length: 36\r\n\r\n"
            '{"waitSeconds":1,"maxMessages":32}  '
            "POST " + Q + "/fifo/messages/receive HTTP/1.1\r\n" + K + "Content-Length: 18\r\n\r\n"
            '{"waitSeconds":20}'))
    add(raw("DELETE " + Q + "/orders/messages?popReceipt=@R@ HTTP/1.1\r\n" + K + "\r\n"
            "DELETE " + Q + "/orders/messages?popReceipt=@R@ HTTP/1.1\r\n" + K + "\r\n"))
    add(raw("POST " + Q + "/orders/messages HTTP/1.1\r\n" + K + "Content-Length: 262145\r\n\r\n@X256@x"
            "GET " + Q + "/orders HTTP/1.1\r\n" + K + "\r\n"))
    add(raw("POST " + Q + "/orders/messages HTTP/1.1\r\n" + K + "Transfer-Encoding: chunked\r\n\r\n"
            "2;ext=1\r\nhi\r\n0\r\nTrailer: x\r\n\r\n"))
    add(raw("PUT " + Q + "/orders/messages?popReceipt=@R@&popReceipt=x HTTP/1.1\r\n" + K +
            "Content-Length: 28\r\n\r\n{\"newInvisibilitySeconds\":0}"))
    add(raw("GET " + Q + "/orders%2Fx/statistics HTTP/1.1\r\n" + K + "\r\n"))
    add(raw("POST /admin/api/v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            "fuzz-admin-token-0123456789abcdef\r\nContent-Length: 22\r\n\r\n{\"accountName\":\"raw\"}", admin=True))
    add(raw("GET /admin/api/v1/accounts/%00 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n", admin=True))

    # Hostile framing (tests/api/test_http_front.py): each must get one JSON
    # error (400, 501, 505, 414, 431, 413) and store nothing.
    P = "POST " + Q + "/orders/messages HTTP/1.1\r\n"
    inner = P + K + "Content-Length: 8\r\n\r\nsmuggled"
    cl_te_body = "0\r\n\r\n" + inner
    # Content-Length and chunked together, either order, hiding a second put.
    add(raw(P + K + "Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(cl_te_body) + cl_te_body))
    add(raw(P + K + "Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(cl_te_body) + cl_te_body))
    # The other reading: chunks that cover the second request, a length that does not.
    add(raw(P + K + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(inner) + inner
            + "\r\n0\r\n\r\n"))
    add(raw("POST /admin/api/v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            "fuzz-admin-token-0123456789abcdef\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n"
            "0\r\n\r\nPOST /admin/api/v1/accounts HTTP/1.1\r\nHost: x\r\n\r\n", admin=True))
    # Ambiguous or malformed lengths and header lines.
    for h in ["Content-Length: 5\r\nContent-Length: 6", "Content-Length: 5\r\nContent-Length: 5",
              "Content-Length: 5, 6", "Content-Length: -1", "Content-Length: abc", "Content-Length: +5",
              "Content-Length: 0x5", "Content-Length:", "Transfer-Encoding : chunked",
              "Content-Length : 5", "Content-Length: 5\r\nX-No-Colon-Here",
              "X-Folded: a\r\n  continued\r\nContent-Length: 5", "X-Folded: a\r\n\tcontinued\r\nContent-Length: 5",
              "X-Bare: a\rb\r\nContent-Length: 5", "X-Nul: a\x00b\r\nContent-Length: 5"]:
        add(raw(P + K + h + "\r\n\r\nhello!"))
    add(raw(P + "Authorization: Key @K@\r\nContent-Length: 5\r\n\r\nhello"))  # HTTP/1.1 without Host
    add(raw(P + "Host: x\r\nHost: y\r\nAuthorization: Key @K@\r\nContent-Length: 5\r\n\r\nhello"))
    # Transfer codings we do not implement (501), and a doubled chunked.
    for te in ["xchunked", "identity", "gzip, chunked", "chunked, gzip", "chunked, chunked", "Chunked",
               "chunked\r\nTransfer-Encoding: identity"]:
        add(raw(P + K + "Transfer-Encoding: " + te + "\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
    add(raw("POST " + Q + "/orders/messages HTTP/1.0\r\n" + K + "Transfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n"))
    # Versions: unsupported (505) and malformed (400).
    for v in ["HTTP/2.0", "HTTP/3.0", "HTTP/x", "FOO/1.1", "HTTP/1.1x", "HTTP/1.10", "HTTP/01.1", "http/1.1", "HTTP/1"]:
        add(raw("GET /health " + v + "\r\nHost: x\r\n\r\n"))
    # Sizes of the head: a 9 KB target (414), a 20 KiB header and 150 fields (431).
    add(raw("GET /health?pad=" + "u" * 9000 + " HTTP/1.1\r\nHost: x\r\n\r\n"))
    add(raw("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + "b" * 20480 + "\r\n\r\n"))
    add(raw("GET /health HTTP/1.1\r\nHost: x\r\n" + "".join("X-Field-%d: v\r\n" % i for i in range(150)) + "\r\n"))
    # Bad chunks (400): not hex, no CRLF after the data, too large, negative, bad last chunk.
    for body in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n", "ffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
                 "-5\r\nhello\r\n0\r\n\r\n", "5 \r\nhello\r\n0\r\n\r\n", "5\nhello\n0\n\n",
                 "5\r\nhello\r\n0\r\nX-Trailer\r\n\r\n", "5\r\nhello\r\n"]:
        add(raw(P + K + "Transfer-Encoding: chunked\r\n\r\n" + body))
    # Bodies over the limit announced up front (413, with and without 100-continue).
    add(raw(P + K + "Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"))
    add(raw(P + K + "Content-Length: 20000000\r\n\r\n@X64@"))
    add(raw(P + K + "Transfer-Encoding: chunked\r\n\r\n40000\r\n@X256@\r\n40000\r\n@X256@\r\n0\r\n\r\n"))
    # Methods: not a token (400), a token no route takes (405/404).
    add(raw("GE(T /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    add(raw("BREW /health HTTP/1.1\r\nHost: x\r\n\r\n"))
    # Connections that end early: nothing at all, half a request line, half a head.
    add(raw(""))
    add(raw("GET /hea"))
    add(raw("GET /health HTTP/1.1\r\nHost: x\r\n"))
    # A refused HEAD (a bare CR ends its request line) is answered without a
    # body, as a HEAD client reads it; found by the fuzzer.
    add(raw("HEAD /api/v1/accounts/dev/queues/orders/messages HTTP/1.1\r: x\r\nHost: x\r\n\r\n"))
    # The event log: an event with every field, the seed's anatomy, bad
    # ones, a batch with a duplicate, queries with filters and a token
    # shape, the retention.
    add(seed("ev_put", '{"id":"e1","type":"order.created","source":"s","subject":"o/1","time":'
                       '"2026-12-04T10:00:00.5+01:00","datacontenttype":"application/json","specversion":"1.0",'
                       '"tags":["eu","c-7"],"metadata":{"k":"v"},"data":{"total":99.5,"n":[1,2.0,1e2]}}'))
    add(seed("ev_put", '{"type":"legacy","payload":{"a":1},"metadata":{"tags":["x"],"o":"seed"}}'))
    add(seed("ev_put", '{"type":"t","data":"@X65@"}'))
    add(seed("ev_put", '{"type":"t","tags":["a","a"],"recordedAt":"x"}'))
    add(seed("ev_batch", '{"events":[{"id":"b1","type":"t"},{"id":"b1","type":"t"}]}'))
    add(seed("ev_batch", '{"events":[{"type":"t","tags":["eu"]},{"type":"u"}]}'))
    add(seed("ev_get", q="orders"))
    add(seed("ev_query", query="type=order.created&type=t&tag=eu&order=desc&limit=2&start=0"))
    add(seed("ev_query", query="start=2026-12-04T10:00:00Z&end=9999-12-31T23:59:59.999999Z"))
    add(seed("ev_query", query="continuation=v1AAAA&limit=1000"))
    add(seed("ev_log"))
    add(seed("ev_log_put", '{"retentionSeconds":60}'))
    # Subscriptions: a full definition, a replay from a time, bad filters
    # and start, one into a queue that does not exist; list, read, delete.
    add(seed("sub_create", '{"subscriptionName":"orders","queueName":"orders","filter":{"types":["order.created"],'
                           '"tags":["eu","vip"]},"startFrom":"earliest"}'))
    add(seed("sub_create", '{"subscriptionName":"s2","queueName":"dlq","startFrom":"2026-12-04T10:00:00+01:00"}'))
    add(seed("sub_create", '{"subscriptionName":"s3","queueName":"orders","filter":{"types":"x","tags":[1]},'
                           '"startFrom":"soon"}'))
    add(seed("sub_create", '{"subscriptionName":"s4","queueName":"nope","filter":null}'))
    add(seed("sub_list"))
    add(seed("sub_get", q="orders"))
    add(seed("sub_delete", q="orders"))
    # SQS's JSON protocol, signed with SigV4 as the SDKs sign it: every
    # action once, and the errors of its input.
    def sqs(action, body, auth=SIGV4):
        return seed("sqs", body, auth=auth, headers=f"X-Amz-Target: AmazonSQS.{action}\n"
                                                     "Content-Type: application/x-amz-json-1.0")
    url = '"QueueUrl":"http://fuzz/dev/orders"'
    add(sqs("ListQueues", '{"QueueNamePrefix":"o","MaxResults":1}'))
    add(sqs("CreateQueue", '{"QueueName":"sqs1","Attributes":{"VisibilityTimeout":"5","DelaySeconds":"1",'
                           '"MaximumMessageSize":"2048","MessageRetentionPeriod":"600",'
                           '"ReceiveMessageWaitTimeSeconds":"1","RedrivePolicy":"{\\"deadLetterTargetArn\\":'
                           '\\"arn:aws:sqs:r:dev:dlq\\",\\"maxReceiveCount\\":\\"2\\"}"}}'))
    add(sqs("GetQueueUrl", '{"QueueName":"orders"}'))
    add(sqs("GetQueueAttributes", '{%s,"AttributeNames":["All"]}' % url))
    add(sqs("SetQueueAttributes", '{%s,"Attributes":{"VisibilityTimeout":"31"}}' % url))
    add(sqs("SendMessage", '{%s,"MessageBody":"hi \\u2602","DelaySeconds":0,"MessageAttributes":{"n":'
                           '{"DataType":"Number","StringValue":"1.5"},"b":{"DataType":"Binary","BinaryValue":"AAE="}},'
                           '"MessageSystemAttributes":{"AWSTraceHeader":{"DataType":"String","StringValue":"Root=1"}}}'
        % url))
    add(sqs("SendMessageBatch", '{%s,"Entries":[{"Id":"a","MessageBody":"1"},{"Id":"b","MessageBody":"\\u0001"},'
                                '{"Id":"c","MessageBody":"@X300@"}]}' % url))
    add(sqs("ReceiveMessage", '{%s,"MaxNumberOfMessages":10,"VisibilityTimeout":0,"WaitTimeSeconds":1,'
                              '"AttributeNames":["All"],"MessageAttributeNames":["All","n.*"]}' % url))
    add(sqs("DeleteMessage", '{%s,"ReceiptHandle":"@R@"}' % url))
    add(sqs("DeleteMessageBatch", '{%s,"Entries":[{"Id":"a","ReceiptHandle":"@R@"},{"Id":"b","ReceiptHandle":"x"}]}'
        % url))
    add(sqs("ChangeMessageVisibility", '{%s,"ReceiptHandle":"@R@","VisibilityTimeout":0}' % url))
    add(sqs("ChangeMessageVisibilityBatch", '{%s,"Entries":[{"Id":"a","ReceiptHandle":"@R@","VisibilityTimeout":9}]}'
        % url))
    add(sqs("PurgeQueue", '{"QueueUrl":"http://fuzz/dev/dlq"}'))
    add(sqs("ListDeadLetterSourceQueues", '{"QueueUrl":"http://fuzz/dev/dlq"}'))
    add(sqs("DeleteQueue", '{"QueueUrl":"http://fuzz/dev/sqs1"}'))
    add(sqs("TagQueue", '{%s,"Tags":{"a":"b"}}' % url))
    add(sqs("SendMessage", '{"QueueUrl":"http://fuzz/other/orders","MessageBody":"x"}'))
    add(sqs("SendMessage", '{%s,"MessageBody":"x"}' % url, auth=KEY))
    add(sqs("SendMessage", '[1,2]'))
    add(sqs("NoSuchAction", '{}'))
    # The query protocol: a form body, no X-Amz-Target; to / and to a queue URL.
    form = "Content-Type: application/x-www-form-urlencoded"
    add(seed("sqs", "Action=SendMessage&QueueUrl=%2Fdev%2Forders&MessageBody=hi+%3C%26%3E%0D%0A"
                    "&MessageAttribute.1.Name=n&MessageAttribute.1.Value.DataType=Number"
                    "&MessageAttribute.1.Value.StringValue=2&Version=2012-11-05", auth=SIGV4, headers=form))
    add(seed("sqs", "Action=ReceiveMessage&QueueUrl=%2Fdev%2Forders&AttributeName.1=All&MessageAttributeName.1=All"
                    "&MaxNumberOfMessages=10&WaitTimeSeconds=1", auth=SIGV4, headers=form))
    add(seed("sqs", "Action=SendMessageBatch&QueueUrl=%2Fdev%2Forders&SendMessageBatchRequestEntry.1.Id=a"
                    "&SendMessageBatchRequestEntry.1.MessageBody=x&SendMessageBatchRequestEntry.2.Id=b"
                    "&SendMessageBatchRequestEntry.2.MessageBody=y&SendMessageBatchRequestEntry.2.DelaySeconds=1",
             auth=SIGV4, headers=form))
    add(seed("sqs", "Action=DeleteMessageBatch&QueueUrl=%2Fdev%2Forders&DeleteMessageBatchRequestEntry.1.Id=a"
                    "&DeleteMessageBatchRequestEntry.1.ReceiptHandle=@R@", auth=SIGV4, headers=form))
    add(seed("sqs", "Action=CreateQueue&QueueName=sqs2&Attribute.1.Name=VisibilityTimeout&Attribute.1.Value=9",
             auth=SIGV4, headers=form))
    add(seed("sqs", "Action=GetQueueAttributes&AttributeName.1=All&AttributeName.3=x", auth=SIGV4, headers=form))
    add(seed("sqs", "Action=ListQueues", auth=SIGV4, method="GET"))
    add(raw("GET /dev/orders?Action=GetQueueAttributes&AttributeName.1=All HTTP/1.1\r\nHost: fuzz\r\n\r\n"))
    add(raw("POST /dev/orders HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 38\r\n\r\nAction=SendMessage&MessageBody=raw%41&"))
    add(raw("GET /api/v1 HTTP/1.1\r\nHost: fuzz\r\n\r\n"))
    return out


def main():
    """Writes the seeds; --fresh first removes everything else (the inputs
    that fuzzing campaigns added)."""
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "http")
    os.makedirs(d, exist_ok=True)
    if "--fresh" in sys.argv:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
    for s in seeds():
        if len(s) > 65536:
            sys.exit("seed over 64 KiB")
        with open(os.path.join(d, hashlib.sha1(s).hexdigest()[:16]), "wb") as f:
            f.write(s)


if __name__ == "__main__":
    main()
