"""A minimal CQL native protocol v4 client for test-side inspection.

The tests look at a few rows Sluice wrote (the repair lease's owner, a
bucket's seal marker) without adding a Python driver to the project's
dependencies: this speaks just enough of the protocol for that. STARTUP
(with SASL PLAIN when the server asks), QUERY without bound values, and the
Rows result with the simple column types. It is not Sluice's client (that is
src/cql/, in C) and is deliberately independent of it, so a bug there cannot
hide itself from the tests.
"""

import socket
import struct

OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x03, 0x07, 0x08
OP_AUTH_RESPONSE, OP_AUTH_SUCCESS = 0x0F, 0x10

CONSISTENCY = {"ANY": 0, "ONE": 1, "TWO": 2, "THREE": 3, "QUORUM": 4, "ALL": 5, "LOCAL_QUORUM": 6,
               "EACH_QUORUM": 7, "SERIAL": 8, "LOCAL_SERIAL": 9, "LOCAL_ONE": 10}


class CqlError(Exception):
    def __init__(self, code, message):
        super().__init__(f"CQL error 0x{code:04x}: {message}")
        self.code = code


def _string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _long_string(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


class _Reader:
    def __init__(self, b):
        self.b, self.o = b, 0

    def take(self, n):
        v = self.b[self.o:self.o + n]
        if len(v) != n:
            raise CqlError(0, "short frame")
        self.o += n
        return v

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def string(self):
        return self.take(self.short()).decode()

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def option(self):
        t = self.short()
        if t == 0x0000:  # custom
            return (t, self.string())
        if t in (0x0020, 0x0022):  # list, set
            return (t, self.option())
        if t == 0x0021:  # map
            return (t, self.option(), self.option())
        if t == 0x0030:  # UDT
            ks, name = self.string(), self.string()
            return (t, ks, name, [(self.string(), self.option()) for _ in range(self.short())])
        if t == 0x0031:  # tuple
            return (t, [self.option() for _ in range(self.short())])
        return (t,)


def _decode(opt, b):
    if b is None:
        return None
    t = opt[0]
    if t in (0x0001, 0x000D, 0x000A):  # ascii, varchar, text
        return b.decode()
    if t in (0x0002, 0x0005, 0x000B):  # bigint, counter, timestamp
        return struct.unpack(">q", b)[0]
    if t == 0x0009:
        return struct.unpack(">i", b)[0]
    if t == 0x0004:
        return b != b"\x00"
    if t == 0x0007:
        return struct.unpack(">d", b)[0]
    if t == 0x0013:
        return struct.unpack(">h", b)[0]
    if t == 0x0014:
        return struct.unpack(">b", b)[0]
    return b  # blob and everything else: raw bytes


class Connection:
    def __init__(self, port, host="127.0.0.1", timeout=10.0, username=None, password=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.stream = 0
        op, body = self._request(OP_STARTUP, struct.pack(">H", 1) + _string("CQL_VERSION") + _string("3.0.0"))
        if op == OP_AUTHENTICATE:
            token = b"\x00" + (username or "").encode() + b"\x00" + (password or "").encode()
            op, body = self._request(OP_AUTH_RESPONSE, struct.pack(">i", len(token)) + token)
            if op != OP_AUTH_SUCCESS:
                raise CqlError(0, f"authentication failed (opcode {op})")
        elif op != OP_READY:
            raise CqlError(0, f"unexpected answer to STARTUP (opcode {op})")

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            d = self.sock.recv(n - len(buf))
            if not d:
                raise CqlError(0, "connection closed")
            buf += d
        return buf

    def _request(self, opcode, body):
        self.stream = (self.stream + 1) % 32768
        self.sock.sendall(struct.pack(">BBhBi", 4, 0, self.stream, opcode, len(body)) + body)
        while True:
            hdr = self._recv(9)
            _, flags, stream, op, n = struct.unpack(">BBhBi", hdr)
            payload = self._recv(n)
            if stream != self.stream:
                continue  # an event or a stale answer
            r = _Reader(payload)
            if flags & 0x02:  # tracing id
                r.take(16)
            if flags & 0x08:  # warnings
                for _ in range(r.short()):
                    r.string()
            if op == OP_ERROR:
                code = r.int()
                raise CqlError(code, r.string())
            return op, r

    def query(self, cql, consistency="ONE"):
        """Runs one statement; returns a list of dicts for a Rows result,
        else None."""
        body = _long_string(cql) + struct.pack(">HB", CONSISTENCY[consistency], 0)
        op, r = self._request(OP_QUERY, body)
        if op != OP_RESULT:
            raise CqlError(0, f"unexpected opcode {op}")
        kind = r.int()
        if kind != 2:
            return None
        flags, ncols = r.int(), r.int()
        if flags & 0x0002:  # has_more_pages
            r.bytes()
        cols = []
        if not flags & 0x0004:  # metadata present
            if flags & 0x0001:  # global table spec
                r.string(); r.string()
            for _ in range(ncols):
                if not flags & 0x0001:
                    r.string(); r.string()
                cols.append((r.string(), r.option()))
        rows = []
        for _ in range(r.int()):
            rows.append({name: _decode(opt, r.bytes()) for name, opt in cols})
        return rows


def query(port, cql, consistency="ONE", **kw):
    """One statement on a fresh connection."""
    with Connection(port, **kw) as c:
        return c.query(cql, consistency)
