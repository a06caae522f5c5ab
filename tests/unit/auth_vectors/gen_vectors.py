#!/usr/bin/env python3
"""Regenerates vectors.inc: SigV4 requests signed by real signers, as they
arrived on the wire, for tests/unit/test_auth.c.

Each request is signed by botocore (SigV4Auth, service sqs, region
us-east-1, its clock patched to a fixed time) or by the system curl
(--aws-sigv4 "aws:amz:us-east-1:sqs", current time), sent to a throwaway
HTTP server on 127.0.0.1 that records the request line, headers and body
byte for byte, and written out as a C initializer. The C test verifies each
one as received, then checks that altering any part of it fails. Two cases
are signed correctly by a botocore subclass but break a rule of the server
(host not signed; scope date not the request's date): expected to fail.

    python3 tests/unit/auth_vectors/gen_vectors.py   # needs botocore, curl

It also rewrites the seed corpus of fuzz/fuzz_auth.c, fuzz/corpus/auth.
"""
import base64
import datetime
import email.utils
import hashlib
import hmac
import os
import socket
import subprocess
import threading
from unittest import mock

import botocore
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session

# The keys of account "dev" in the C test: 64 bytes 0..63 and 64 bytes
# 64..127, base64url without padding (86 characters each).
PRIMARY = base64.urlsafe_b64encode(bytes(range(64))).decode().rstrip('=')
SECONDARY = base64.urlsafe_b64encode(bytes(range(64, 128))).decode().rstrip('=')
FIXED = datetime.datetime(2026, 11, 21, 10, 0, 0)

captured = []


def serve(sock):
    while True:
        conn, _ = sock.accept()
        data = b''
        while b'\r\n\r\n' not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b'\r\n\r\n')
        lines = head.decode('latin-1').split('\r\n')
        headers = [tuple(s.strip() for s in line.split(':', 1)) for line in lines[1:]]
        length = next((int(v) for k, v in headers if k.lower() == 'content-length'), 0)
        while len(body) < length:
            body += conn.recv(65536)
        captured.append((lines[0], headers, body))
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
        conn.close()


class NoHostSigV4(botocore.auth.SigV4Auth):
    """Signs without host, which the server must refuse."""

    def headers_to_sign(self, request):
        h = super().headers_to_sign(request)
        del h['host']
        return h


class OtherScopeDateSigV4(botocore.auth.SigV4Auth):
    """A scope (and kDate) of another day than X-Amz-Date: refused."""
    DAY = '20261120'

    def scope(self, request):
        return '/'.join([self.credentials.access_key, self.credential_scope(request)])

    def credential_scope(self, request):
        return '/'.join([self.DAY, self._region_name, self._service_name, 'aws4_request'])

    def signature(self, string_to_sign, request):
        k = self._sign(('AWS4' + self.credentials.secret_key).encode(), self.DAY)
        for part in (self._region_name, self._service_name, 'aws4_request'):
            k = self._sign(k, part)
        return self._sign(k, string_to_sign, hex=True)


def botocore_case(base, method, url, key='dev', secret=PRIMARY, data=b'', headers=None, params=None,
                  signer=botocore.auth.SigV4Auth):
    req = AWSRequest(method=method, url=base + url, data=data, headers=headers or {}, params=params or {})
    with mock.patch('botocore.auth.get_current_datetime', return_value=FIXED):
        signer(Credentials(key, secret), 'sqs', 'us-east-1').add_auth(req)
    URLLib3Session().send(req.prepare())


def presign_case(base, method, url, data=None, expires=300):
    """A presigned URL (SigV4QueryAuth, as generate_presigned_url makes it:
    a form body's parameters move into the query), sent as it is."""
    req = AWSRequest(method=method, url=base + url, data=data or {})
    with mock.patch('botocore.auth.get_current_datetime', return_value=FIXED):
        botocore.auth.SigV4QueryAuth(Credentials('dev', PRIMARY), 'sqs', 'us-east-1', expires=expires).add_auth(req)
    URLLib3Session().send(req.prepare())


def curl_case(base, method, url, data=None, headers=(), extra=()):
    cmd = ['curl', '-sS', '-o', '/dev/null', '--aws-sigv4', 'aws:amz:us-east-1:sqs', '--user', 'dev:' + PRIMARY,
           '-X', method, *extra]
    for h in headers:
        cmd += ['-H', h]
    if data is not None:
        cmd += ['--data-binary', data]
    subprocess.run(cmd + [base + url], check=True)


def c_str(b):
    if isinstance(b, str):
        b = b.encode('latin-1')
    out = ''
    for c in b:
        ch = chr(c)
        if ch in '"\\':
            out += '\\' + ch
        elif 32 <= c < 127 and ch != '?':  # '?' avoids trigraph warnings
            out += ch
        else:
            out += '\\%03o' % c
    return '"' + out + '"'


def main():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(8)
    threading.Thread(target=serve, args=(sock,), daemon=True).start()
    base = 'http://127.0.0.1:%d' % sock.getsockname()[1]
    q = '/api/v1/accounts/dev/queues'
    cases = []

    def run(name, source, fn, *args, expect='0', **kw):
        before = len(captured)
        fn(base, *args, **kw)
        assert len(captured) == before + 1, name
        cases.append((name, source, len(captured) - 1, expect))

    boto = 'botocore ' + botocore.__version__
    run('botocore-get-query', boto, botocore_case, 'GET', q + '/orders/messages/next?invisibilityTimeSeconds=30')
    run('botocore-post-body', boto, botocore_case, 'POST', q + '/orders/messages', data=b'hello world',
        headers={'Content-Type': 'application/octet-stream'})
    run('botocore-path-encoded', boto, botocore_case, 'GET', q + "/my%20q.v1~x/a%2Fb/%C3%A9!'()*/messages/peek")
    run('botocore-params', boto, botocore_case, 'DELETE', q + '/orders/messages',
        params={'popReceipt': 'abc+/=:x', 'b': 'space here', 'a': '1', 'A': '2', 'tilde': '~'})
    run('botocore-url-query-unsorted', boto, botocore_case, 'GET', q + '/orders/messages/peek?count=5&m=x:y&a=1')
    run('botocore-content-sha256', boto, botocore_case, 'PUT', q + '/orders/messages?popReceipt=r1',
        data=b'{"newInvisibilitySeconds": 0}',
        headers={'Content-Type': 'application/json',
                 'X-Amz-Content-SHA256': hashlib.sha256(b'{"newInvisibilitySeconds": 0}').hexdigest()})
    run('botocore-keyname', boto, botocore_case, 'GET', q, key='dev:secondary', secret=SECONDARY)
    run('botocore-dot-segments', boto, botocore_case, 'GET', q + '//orders/./x/../messages/peek/')
    run('botocore-header-spaces', boto, botocore_case, 'POST', q + '/orders/purge',
        headers={'X-Meta': 'a   b \t c', 'X-Other': 'one'})
    run('botocore-no-host', boto, botocore_case, 'GET', q, signer=NoHostSigV4, expect='SL_EAUTH')
    run('botocore-other-scope-date', boto, botocore_case, 'GET', q, signer=OtherScopeDateSigV4, expect='SL_EAUTH')
    run('botocore-date-header', boto, botocore_case, 'GET', q + '/orders',
        headers={'Date': 'Sat, 21 Nov 2026 10:00:00 GMT'})
    run('botocore-presign-query', boto, presign_case, 'GET',
        '/', data={'Action': 'SendMessage', 'QueueUrl': base + '/dev/orders', 'MessageBody': 'hi there & more ~*'})
    run('botocore-presign-native', boto, presign_case, 'GET', q + '/orders/messages/next?invisibilityTimeSeconds=30',
        expires=3600)

    cv = subprocess.run(['curl', '--version'], capture_output=True, text=True).stdout.split('\n')[0]
    cv = ' '.join(cv.split()[:2])
    run('curl-get-encoded-unsorted', cv, curl_case, 'GET', q + '/my%20q/messages?z=1&a=b%2Fc&a=a&m=x:y')
    run('curl-post-json', cv, curl_case, 'POST', q + '/orders/messages/batch',
        data='{"messages": [{"message": "hi"}]}', headers=['Content-Type: application/json'])
    run('curl-put-query-body', cv, curl_case, 'PUT', q + '/orders/messages?popReceipt=AbC-_1&x=%7E%20+',
        data='{"message": "m", "newInvisibilitySeconds": 5}')
    run('curl-delete', cv, curl_case, 'DELETE', q + '/orders/messages?popReceipt=abc')
    run('curl-path-chars', cv, curl_case, 'GET', q + "/q-1.a_b~c/%C3%A9%2F!'()*@:/messages/peek?count=2")

    run('curl-amz-header', cv, curl_case, 'GET', q + '/orders/statistics', headers=['X-Amz-Meta-Test: a   b  c'])
    run('curl-path-as-is', cv, curl_case, 'GET', q + '//orders/./x/../messages/peek', extra=['--path-as-is'])

    out = ['/* Generated by tests/unit/auth_vectors/gen_vectors.py: SigV4 requests signed by',
           ' * real signers and recorded as received. Do not edit; rerun the script. */']
    for name, source, i, expect in cases:
        line, headers, body = captured[i]
        method, target, _ = line.split(' ')
        path, _, query = target.partition('?')
        amz = next((v for k, v in headers if k.lower() == 'x-amz-date'), None)
        if amz is None and 'X-Amz-Date=' in query:  # presigned
            amz = query.split('X-Amz-Date=')[1].split('&')[0]
        elif amz is None:  # the Date header form
            d = next(v for k, v in headers if k.lower() == 'date')
            amz = email.utils.parsedate_to_datetime(d).strftime('%Y%m%dT%H%M%SZ')
        out.append('{')
        out.append('    .name = %s,' % c_str(name))
        out.append('    .source = %s,' % c_str(source))
        out.append('    .method = %s,' % c_str(method))
        out.append('    .path = %s,' % c_str(path))
        out.append('    .query = %s,' % c_str(query))
        out.append('    .headers = {')
        for k, v in headers:
            out.append('        {%s, %s},' % (c_str(k), c_str(v)))
        out.append('    },')
        out.append('    .n_headers = %d,' % len(headers))
        out.append('    .body = %s,' % c_str(body))
        out.append('    .body_len = %d,' % len(body))
        out.append('    .time = %s,' % c_str(amz))
        out.append('    .expect = %s,' % expect)
        out.append('},')
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, 'vectors.inc')
    with open(path, 'w') as f:
        f.write('\n'.join(out) + '\n')
    print('wrote %d vectors to %s' % (len(cases), path))
    write_fuzz_seeds(os.path.join(here, '..', '..', '..', 'fuzz', 'corpus', 'auth'), cases)


def write_fuzz_seeds(corpus, cases):
    """The same requests, plus one per other scheme, in fuzz_auth.c's text
    form (method, path, query, headers, empty line, body)."""
    os.makedirs(corpus, exist_ok=True)

    def seed(name, method, path, query, headers, body=b''):
        text = '%s\n%s\n%s\n' % (method, path, query) + ''.join('%s: %s\n' % h for h in headers) + '\n'
        with open(os.path.join(corpus, name), 'wb') as f:
            f.write(text.encode('latin-1') + body)

    for name, _, i, _ in cases:
        line, headers, body = captured[i]
        method, target, _ = line.split(' ')
        path, _, query = target.partition('?')
        seed(name, method, path, query, headers, body)
    key = bytes(range(64))
    b64 = lambda d: base64.urlsafe_b64encode(d).decode().rstrip('=')
    path = '/api/v1/accounts/dev/queues/orders/messages/next'
    t = '2026-11-21T10:00:00Z'
    sig = b64(hmac.new(key, ('dev\nGET\n%s\n%s' % (path, t)).encode(), hashlib.sha256).digest())
    seed('signed', 'GET', path, '', [('Authorization', 'Signed ' + sig), ('X-Sluice-Request-Time', t)])
    seed('key', 'GET', path, '', [('Authorization', 'Key ' + PRIMARY)])
    msg = 'dev\nrp\nstartTime:%s\nendTime:2026-11-21T11:00:00Z\nq:orders' % t
    sig = b64(hmac.new(key, msg.encode(), hashlib.sha256).digest())
    seed('url', 'GET', path, 'auth=rp&q=orders&st=2026-11-21T10%%3A00%%3A00Z&et=2026-11-21T11:00:00Z&sig=%s' % sig,
         [])


if __name__ == '__main__':
    main()
