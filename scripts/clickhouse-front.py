#!/usr/bin/env python3
"""clickhouse-front: ClickHouse's HTTP interface in front of the embedded chDB engine.

gridmon keeps its history in ClickHouse. Where no ClickHouse server is installed (the demo,
the tests), this script serves the part of ClickHouse's HTTP interface that the Rust
`clickhouse` crate (0.15) speaks, backed by chDB (`chdb-core`), which embeds the real
ClickHouse engine in-process. Point `CLICKHOUSE_URL` at a real server and the same clients
and tests run against that instead.

This file owns:
  * the HTTP protocol: `/ping`, queries by GET `?query=` or POST body (query parameter and
    body concatenated, as ClickHouse does), `database`, `default_format`, `param_*`
    (also as multipart/form-data), any other URL parameter as a query-level setting,
    `X-ClickHouse-Exception-Code` + ClickHouse's status codes on errors, `X-ClickHouse-Summary`;
  * INSERT data in any input format, plain, `decompress=1` (ClickHouse's compressed-block
    framing, LZ4/none/ZSTD) or HTTP `Content-Encoding` (gzip, deflate, br, xz, zstd, lz4);
  * a pool of chDB connections, each with its own current database and settings, so
    concurrent requests run concurrently and never see each other's `database`/settings;
  * clean shutdown on SIGTERM/SIGINT: stop accepting, finish in-flight requests, close.

BACKUP and RESTORE work with `File('<path>')` under the `--backups` directory (the server's
`backups.allowed_path`).

Not supported (answered with a ClickHouse-style error, or ignored): compressed responses (`compress=1`; responses are never compressed,
which ClickHouse also does unless `enable_http_compression=1`), sessions (`session_id` is
ignored; a `SET`/`USE` request does not outlive its request, as without a session),
authentication (user/password are accepted and ignored), external tables in multipart bodies,
progress headers, query cancellation when the client goes away, streaming of results
(a result is built in memory before it is sent).

Usage: clickhouse-front.py --data DIR --port PORT [--host 127.0.0.1] (see --help for more)
Prints `READY <port>` on stdout once it accepts requests; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("clickhouse-front")

# --- Errors ------------------------------------------------------------------------------

# ClickHouse error codes this front raises itself.
UNKNOWN_EXCEPTION = 1002
SYNTAX_ERROR = 62
NOT_IMPLEMENTED = 48
CANNOT_DECOMPRESS = 271
UNKNOWN_COMPRESSION_METHOD = 89
CANNOT_PARSE_TEXT = 6
BAD_ARGUMENTS = 36
NETWORK_ERROR = 210

# ClickHouse's own code -> status table (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp),
# so clients and tests that look at the status see what a real server would send.
_STATUS_CODES = {
    401: (194,),
    403: (192, 193, 516, 512, 497),
    400: (36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8, 167,
          168, 223, 62, 117, 53, 321),
    404: (60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511),
    413: (229,),
    501: (48,),
    503: (209, 76, 439),
    411: (381,),
    408: (159,),
    415: (779,),
}
HTTP_STATUS = {code: status for status, codes in _STATUS_CODES.items() for code in codes}

_CODE_RE = re.compile(r"Code:\s*(\d+)\.")


class ChError(Exception):
    """An error to send to the client as ClickHouse would: code, message, HTTP status."""

    def __init__(self, code: int, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or HTTP_STATUS.get(code, 500)

    @classmethod
    def from_engine(cls, exc: BaseException) -> "ChError":
        # chDB raises its exceptions with ClickHouse's own text, `Code: N. DB::Exception: ...`.
        text = str(exc).strip()
        match = _CODE_RE.search(text)
        if match:
            return cls(int(match.group(1)), text[match.start():])
        return cls(UNKNOWN_EXCEPTION, f"Code: {UNKNOWN_EXCEPTION}. DB::Exception: {text}. (UNKNOWN_EXCEPTION)")

    @classmethod
    def new(cls, code: int, name: str, text: str, status: int | None = None) -> "ChError":
        return cls(code, f"Code: {code}. DB::Exception: {text}. ({name})", status)


# --- LZ4 and ClickHouse's compressed-block framing ---------------------------------------

# The engine reads LZ4 *frames* (FROM INFILE ... COMPRESSION 'lz4'); the client sends LZ4
# *blocks* in ClickHouse's framing. Re-wrapping each block as a frame block copies bytes but
# never decompresses them in Python, which keeps inserts fast. Frame descriptor: version 1,
# independent blocks, no checksums, 4 MiB maximum block size; 0x73 is its header checksum
# (byte 1 of xxh32 over the two descriptor bytes).
LZ4F_MAX_BLOCK = 4 * 1024 * 1024
LZ4F_HEADER = struct.pack("<I", 0x184D2204) + bytes([0x60, 0x70, 0x73])
LZ4F_END = b"\0\0\0\0"
LZ4F_UNCOMPRESSED = 0x80000000

METHOD_NONE = 0x02
METHOD_LZ4 = 0x82
METHOD_ZSTD = 0x90
BLOCK_META = 16 + 9  # CityHash128 checksum, method byte, u32 compressed size, u32 size


def lz4_block_decompress(src, size: int) -> bytes:
    """Decodes one raw LZ4 block. Pure Python, so only for small or rare inputs (query
    bodies, blocks too large to re-wrap as a frame block)."""
    dst = bytearray()
    i, n = 0, len(src)
    try:
        while True:
            token = src[i]
            i += 1
            literals = token >> 4
            if literals == 15:
                while True:
                    b = src[i]
                    i += 1
                    literals += b
                    if b != 255:
                        break
            dst += src[i:i + literals]
            i += literals
            if i >= n:
                break  # the last sequence carries literals only
            offset = src[i] | (src[i + 1] << 8)
            i += 2
            if offset == 0 or offset > len(dst):
                raise ChError.new(CANNOT_DECOMPRESS, "CANNOT_DECOMPRESS", "LZ4 block has an invalid match offset")
            length = token & 15
            if length == 15:
                while True:
                    b = src[i]
                    i += 1
                    length += b
                    if b != 255:
                        break
            length += 4
            start = len(dst) - offset
            if length <= offset:
                dst += dst[start:start + length]
            else:  # overlapping match: the last `offset` bytes repeat
                pattern = bytes(dst[start:])
                dst += (pattern * (length // offset + 1))[:length]
    except IndexError:
        raise ChError.new(CANNOT_DECOMPRESS, "CANNOT_DECOMPRESS", "LZ4 block is truncated") from None
    if len(dst) != size:
        raise ChError.new(CANNOT_DECOMPRESS, "CANNOT_DECOMPRESS",
                          f"LZ4 block decompressed to {len(dst)} bytes, header says {size}")
    return bytes(dst)


class NativeBlockReader:
    """Splits a byte stream in ClickHouse's compressed-block framing into blocks.

    Checksums are not verified (that needs CityHash128 v1.0.2, which the standard library
    lacks); TCP already guards the transfer and the engine rejects malformed rows."""

    def __init__(self):
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data):
        """Yields (method, payload, uncompressed_size) for each block completed by `data`."""
        self._buf += data
        while True:
            avail = len(self._buf) - self._pos
            if avail < BLOCK_META:
                break
            method, csize, usize = struct.unpack_from("<BII", self._buf, self._pos + 16)
            if csize < 9:
                raise ChError.new(CANNOT_DECOMPRESS, "CANNOT_DECOMPRESS",
                                  f"compressed block declares size {csize}, less than its header")
            total = 16 + csize
            if avail < total:
                break
            start = self._pos + BLOCK_META
            payload = bytes(self._buf[start:self._pos + total])
            self._pos += total
            yield method, payload, usize
        if self._pos > (1 << 20) or self._pos == len(self._buf):
            del self._buf[:self._pos]  # compact now and then, not on every block
            self._pos = 0

    def finish(self):
        if len(self._buf) != self._pos:
            raise ChError.new(CANNOT_DECOMPRESS, "CANNOT_DECOMPRESS",
                              "request body ends inside a compressed block")


def decompress_block(method: int, payload: bytes, usize: int) -> bytes:
    if method == METHOD_LZ4:
        return lz4_block_decompress(payload, usize)
    if method == METHOD_NONE:
        return payload
    raise ChError.new(UNKNOWN_COMPRESSION_METHOD, "UNKNOWN_COMPRESSION_METHOD",
                      f"compression method 0x{method:02x} is not supported in a query body")


class NativeToFile:
    """Writes a `decompress=1` body to a file the engine can read with FROM INFILE.

    LZ4 and uncompressed blocks become one LZ4 frame; ZSTD blocks are each a whole zstd
    frame already, and concatenated frames are a valid zstd stream."""

    def __init__(self, out):
        self._out = out
        self._reader = NativeBlockReader()
        self.compression = None  # 'lz4' or 'zstd', fixed by the first block

    def _mode(self, wanted: str):
        if self.compression is None:
            self.compression = wanted
            if wanted == "lz4":
                self._out.write(LZ4F_HEADER)
        elif self.compression != wanted:
            raise ChError.new(NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                              "a request body that mixes ZSTD with other compression methods is not supported")

    def _raw(self, data):
        for off in range(0, len(data), LZ4F_MAX_BLOCK):
            piece = data[off:off + LZ4F_MAX_BLOCK]
            self._out.write(struct.pack("<I", len(piece) | LZ4F_UNCOMPRESSED))
            self._out.write(piece)

    def feed(self, data):
        for method, payload, usize in self._reader.feed(data):
            if method == METHOD_LZ4:
                self._mode("lz4")
                if usize <= LZ4F_MAX_BLOCK and len(payload) <= LZ4F_MAX_BLOCK:
                    self._out.write(struct.pack("<I", len(payload)))
                    self._out.write(payload)
                else:  # larger than a frame block may be: decode here (rare, one huge row)
                    self._raw(lz4_block_decompress(payload, usize))
            elif method == METHOD_NONE:
                self._mode("lz4")
                self._raw(payload)
            elif method == METHOD_ZSTD:
                self._mode("zstd")
                self._out.write(payload)
            else:
                raise ChError.new(UNKNOWN_COMPRESSION_METHOD, "UNKNOWN_COMPRESSION_METHOD",
                                  f"unknown compression method 0x{method:02x}")

    def finish(self):
        self._reader.finish()
        if self.compression == "lz4":
            self._out.write(LZ4F_END)


# --- Engine: a pool of chDB connections --------------------------------------------------

# URL parameters that belong to the HTTP interface rather than to query settings.
HTTP_PARAMS = {
    "query", "database", "default_format", "compress", "decompress", "query_id", "session_id",
    "session_timeout", "session_check", "user", "password", "quota_key", "role", "buffer_size",
    "wait_end_of_query", "stacktrace", "client_protocol_version", "default_database",
}

_SET_OR_USE_RE = re.compile(r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(SET|USE)\b", re.I | re.S)


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Connection:
    """One chDB connection and the session state this front has put on it."""

    def __init__(self, chdb_module, path: str):
        self.conn = chdb_module.connect(path)
        self.database = "default"
        self.settings: dict[str, str] = {}
        self.tainted = False  # state we cannot undo (e.g. readonly): close after use

    def query(self, sql: str, fmt: str = "TabSeparated", params=None):
        try:
            return self.conn.query(sql, fmt, params=params or {})
        except Exception as exc:  # chDB raises ChdbError/RuntimeError with ClickHouse's text
            raise ChError.from_engine(exc) from None

    def prepare(self, database: str, settings: dict[str, str]):
        """Makes this connection's current database and settings those of the request."""
        if database != self.database:
            self.query(f"USE {sql_identifier(database)}")
            self.database = database
        for name in [n for n in self.settings if n not in settings]:
            self.query(f"SET {sql_identifier(name)} = DEFAULT")
            del self.settings[name]
        for name, value in settings.items():
            if self.settings.get(name) != value:
                self.query(f"SET {sql_identifier(name)} = {sql_string(value)}")
                self.settings[name] = value
                if name == "readonly" and value not in ("", "0"):
                    self.tainted = True  # a readonly session refuses to reset its settings

    def close(self):
        try:
            self.conn.close()
        except Exception as exc:
            log.warning("closing a chDB connection failed: %s", exc)


class Engine:
    """Hands out chDB connections; many connections to one path run queries concurrently."""

    def __init__(self, path: str, max_connections: int):
        import chdb  # deferred so that `--help` and argument errors stay instant

        self._chdb = chdb
        self._path = path
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._slots = threading.BoundedSemaphore(max_connections)
        first = self._new()
        self.version = first.query("SELECT version()").bytes().decode().strip()
        self._idle.append(first)

    def _new(self) -> Connection:
        with self._lock:  # connects one at a time: chDB starts its engine on the first
            return Connection(self._chdb, self._path)

    def acquire(self) -> Connection:
        self._slots.acquire()
        try:
            with self._lock:
                if self._idle:
                    return self._idle.pop()
            return self._new()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Connection, discard: bool = False):
        try:
            if discard or conn.tainted:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
        finally:
            self._slots.release()

    def run(self, sql: str, fmt: str, database: str, settings: dict[str, str], params: dict[str, str]):
        conn = self.acquire()
        discard = False
        try:
            conn.prepare(database, settings)
            statement = _SET_OR_USE_RE.match(sql)
            result = conn.query(sql, fmt, params)
            if statement:
                # Without a session, ClickHouse forgets a request's SET and USE when it ends.
                if statement.group(1).upper() == "SET":
                    discard = True
                else:
                    conn.database = ""  # unknown now: the next request re-selects its own
            return result
        finally:
            self.release(conn, discard)

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# --- Query parsing -------------------------------------------------------------------------

# `INSERT ... FORMAT Name` or `INSERT ... VALUES` at the end of the query: the body is data.
_INSERT_RE = re.compile(r"^\s*INSERT\s+INTO\b.*?(?:\bFORMAT\s+(\w+)|\bVALUES)\s*$", re.I | re.S)
_INSERT_INLINE_RE = re.compile(rb"^\s*INSERT\s+INTO\b.*?\bFORMAT\s+(\w+)[ \t]*\r?\n?", re.I | re.S)
_TRAILING_FORMAT_RE = re.compile(r"(?:\bFORMAT\s+\w+|\bVALUES)\s*$", re.I)
_SETTINGS_RE = re.compile(r"\bSETTINGS\b(?=[^'`]*$)", re.I)


def insert_from_file(insert_sql: str, path: str, compression: str | None) -> str:
    """`INSERT INTO t (c) [SETTINGS ..] FORMAT F` -> `INSERT INTO t (c) FROM INFILE 'path'
    [COMPRESSION 'x'] [SETTINGS ..] FORMAT F` (VALUES becomes FORMAT Values)."""
    match = _INSERT_RE.match(insert_sql)
    if match is None:
        raise ChError.new(SYNTAX_ERROR, "SYNTAX_ERROR", "expected INSERT ... FORMAT <name> or INSERT ... VALUES")
    fmt = match.group(1) or "Values"
    head = _TRAILING_FORMAT_RE.sub("", insert_sql).rstrip()
    settings = ""
    found = _SETTINGS_RE.search(head)
    if found:
        head, settings = head[:found.start()].rstrip(), " " + head[found.start():]
    compression_clause = f" COMPRESSION {sql_string(compression)}" if compression else ""
    return f"{head} FROM INFILE {sql_string(path)}{compression_clause}{settings} FORMAT {fmt}"


def parse_multipart(body: bytes, content_type: str) -> dict[str, str]:
    """Fields of a multipart/form-data body (the crate sends `query` and `param_*` so)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ChError.new(BAD_ARGUMENTS, "BAD_ARGUMENTS", "multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode()
    fields = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        name = re.search(rb'name="([^"]*)"', head)
        if not name:
            continue
        if b"filename=" in head:
            raise ChError.new(NOT_IMPLEMENTED, "NOT_IMPLEMENTED", "external tables are not supported")
        fields[name.group(1).decode()] = value[:-2].decode() if value.endswith(b"\r\n") else value.decode()
    return fields


# --- HTTP ----------------------------------------------------------------------------------

READ_CHUNK = 1 << 20
OK_PATHS = {"/ping", "/replicas_status"}
CONTENT_ENCODINGS = {"gzip", "deflate", "br", "xz", "zstd", "lz4"}
TEXT_FORMATS = re.compile(r"^(TSV|TabSeparated|CSV|JSON|Pretty|Values|Vertical|Markdown|XML|Template|CustomSeparated|LineAsString)", re.I)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the crate pools connections
    server: "FrontServer"

    # -- plumbing --

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self):
        self._serve(has_body=False)

    def do_POST(self):
        self._serve(has_body=True)

    def _serve(self, has_body: bool):
        server = self.server
        self._body_started = not has_body
        self._body_consumed = not has_body
        if not server.enter():
            self._discard_body()
            self._send(503, b"Code: 210. DB::Exception: Server is shutting down. (NETWORK_ERROR)\n",
                       {"X-ClickHouse-Exception-Code": "210"}, close=True)
            return
        try:
            self._handle(has_body)
        except ChError as err:
            log.info("query failed: %s", err.message.splitlines()[0] if err.message else err.code)
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in this front must not kill the connection thread
            log.exception("unexpected error")
            self._send_error(ChError.new(UNKNOWN_EXCEPTION, "UNKNOWN_EXCEPTION", f"front error: {exc!r}"))
        finally:
            server.leave()

    def _send(self, status: int, body: bytes, headers: dict[str, str], close: bool = False):
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_error(self, err: ChError):
        if not self._body_started:
            # Refused before reading the body: read it anyway, so the client gets to read
            # our answer instead of a reset, and the connection stays usable.
            self._discard_body()
        self._send(err.status, (err.message + "\n").encode(), {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(err.code),
            "X-ClickHouse-Server-Display-Name": "clickhouse-front",
        }, close=not self._body_consumed)  # else the rest of the body would be the next request

    # -- request body --

    def _body_chunks(self):
        """Yields the raw (still content-encoded) request body."""
        self._body_started = True
        self._body_consumed = False
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ChError.new(NETWORK_ERROR, "NETWORK_ERROR", "connection closed inside a chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ChError.new(CANNOT_PARSE_TEXT, "CANNOT_PARSE_TEXT", "malformed chunked body") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                while size > 0:
                    data = self.rfile.read(min(size, READ_CHUNK))
                    if not data:
                        raise ChError.new(NETWORK_ERROR, "NETWORK_ERROR", "connection closed inside a chunk")
                    size -= len(data)
                    yield data
                self.rfile.readline(1024)  # CRLF after the chunk
        else:
            length = self.headers.get("Content-Length")
            remaining = int(length) if length and length.isdigit() else 0
            while remaining > 0:
                data = self.rfile.read(min(remaining, READ_CHUNK))
                if not data:
                    raise ChError.new(NETWORK_ERROR, "NETWORK_ERROR", "connection closed inside the body")
                remaining -= len(data)
                yield data
        self._body_consumed = True

    def _discard_body(self):
        try:
            for _ in self._body_chunks():
                pass
        except ChError:
            self.close_connection = True

    def _read_body(self, decompress: bool, encoding: str) -> bytes:
        """The whole body, decoded; for query text, which is small."""
        raw = b"".join(self._body_chunks())
        if encoding in ("gzip", "deflate"):
            try:
                raw = zlib.decompress(raw, 47 if encoding == "gzip" else 15)
            except zlib.error as exc:
                raise ChError.new(CANNOT_DECOMPRESS, "CANNOT_DECOMPRESS", f"{encoding} body: {exc}") from None
        elif encoding:
            raise ChError.new(NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                              f"Content-Encoding {encoding} is supported for INSERT data only")
        if decompress:
            reader = NativeBlockReader()
            raw = b"".join(decompress_block(*block) for block in reader.feed(raw))
            reader.finish()
        return raw

    # -- the request --

    def _handle(self, has_body: bool):
        url = urllib.parse.urlsplit(self.path)
        args = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if url.path in OK_PATHS or (url.path == "/" and "query" not in args and not has_body):
            self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        if url.path not in ("/", "/query"):
            self._discard_body()
            raise ChError.new(NOT_IMPLEMENTED, "NOT_IMPLEMENTED", f"no handler for path {url.path}", 404)

        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity"):
            encoding = ""
        elif encoding not in CONTENT_ENCODINGS:
            raise ChError.new(UNKNOWN_COMPRESSION_METHOD, "UNKNOWN_COMPRESSION_METHOD",
                              f"unknown Content-Encoding {encoding}")
        decompress = args.get("decompress", "0") not in ("", "0")
        if decompress and encoding:
            raise ChError.new(NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                              "decompress=1 together with Content-Encoding is not supported")
        if args.get("compress", "0") not in ("", "0"):
            raise ChError.new(NOT_IMPLEMENTED, "NOT_IMPLEMENTED",
                              "compressed responses (compress=1) are not supported by this front")

        query = args.get("query", "")
        params = {k[len("param_"):]: v for k, v in args.items() if k.startswith("param_")}
        settings = {k: v for k, v in args.items() if k not in HTTP_PARAMS and not k.startswith("param_")}
        database = args.get("database") or args.get("default_database") or "default"
        fmt = args.get("default_format") or "TabSeparated"
        query_id = args.get("query_id") or str(uuid.uuid4())
        if "session_id" in args:
            warn_once("session_id", "session_id is ignored: every request is sessionless here")
        content_type = self.headers.get("Content-Type", "")

        engine = self.server.engine
        started = time.monotonic()
        if has_body and query and _INSERT_RE.match(query):
            result = self._insert(query, decompress, encoding, database, settings, params)
        else:
            if has_body and content_type.lower().startswith("multipart/form-data"):
                # The crate sends the query and its `param_*` values as form fields.
                fields = parse_multipart(self._read_body(decompress, encoding), content_type)
                if "query" in fields:
                    query = query + "\n" + fields["query"] if query else fields["query"]
                params.update({k[len("param_"):]: v for k, v in fields.items() if k.startswith("param_")})
                body = b""
            else:
                body = self._read_body(decompress, encoding) if has_body else b""
            if body and not query and _INSERT_INLINE_RE.match(body) and not _is_utf8(body):
                # Binary data inline after `INSERT ... FORMAT X`: the engine takes SQL as text.
                match = _INSERT_INLINE_RE.match(body)
                result = self._insert_bytes(body[:match.end()].decode(), body[match.end():],
                                            database, settings, params)
            else:
                text = body.decode("utf-8", "replace")
                sql = f"{query}\n{text}" if query and text else query or text
                if not sql.strip():
                    raise ChError.new(SYNTAX_ERROR, "SYNTAX_ERROR", "Empty query")
                result = engine.run(sql, fmt, database, settings, params)

        data = result.bytes() if result is not None else b""
        summary = _summary(result, started)
        binary = not TEXT_FORMATS.match(fmt)
        self._send(200, data, {
            "Content-Type": "application/octet-stream" if binary else "text/plain; charset=UTF-8",
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Server-Display-Name": "clickhouse-front",
            "X-ClickHouse-Summary": summary,
        })

    def _spool_path(self) -> str:
        fd, path = tempfile.mkstemp(dir=self.server.spool_dir, suffix=".data")
        os.close(fd)
        return path

    def _insert(self, query, decompress, encoding, database, settings, params):
        """INSERT whose data is the body: spool it to a file (no engine connection held
        while the client is still sending), then one `INSERT ... FROM INFILE`."""
        path = self._spool_path()
        try:
            chunks = self._body_chunks()
            with open(path, "wb") as out:
                try:
                    if decompress:
                        writer = NativeToFile(out)
                        for chunk in chunks:
                            writer.feed(chunk)
                        writer.finish()
                        compression = writer.compression
                    else:
                        for chunk in chunks:
                            out.write(chunk)
                        compression = encoding or None
                except ChError:
                    for _ in chunks:
                        pass  # read the rest, so the client gets to read our answer
                    raise
            sql = insert_from_file(query, path, compression)
            result = self.server.engine.run(sql, "TabSeparated", database, settings, params)
            log.debug("insert: %d bytes spooled (%s), %d rows written", os.path.getsize(path),
                      compression or "plain", result.rows_written())
            return result
        finally:
            os.unlink(path)

    def _insert_bytes(self, query, data, database, settings, params):
        path = self._spool_path()
        try:
            with open(path, "wb") as out:
                out.write(data)
            return self.server.engine.run(insert_from_file(query, path, None), "TabSeparated",
                                          database, settings, params)
        finally:
            os.unlink(path)


_warned: set[str] = set()


def warn_once(key: str, message: str):
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _summary(result, started: float) -> str:
    fields = {"read_rows": 0, "read_bytes": 0, "written_rows": 0, "written_bytes": 0}
    if result is not None:
        fields = {
            "read_rows": result.rows_read(),
            "read_bytes": result.bytes_read(),
            "written_rows": result.rows_written(),
            "written_bytes": result.bytes_written(),
        }
    fields["elapsed_ns"] = int((time.monotonic() - started) * 1e9)
    # ClickHouse sends every number as a string.
    return json.dumps({k: str(v) for k, v in fields.items()}, separators=(",", ":"))


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up exit
    allow_reuse_address = True  # a restart binds the same port again at once
    request_queue_size = 128

    def __init__(self, address, engine: Engine, spool_dir: str):
        super().__init__(address, Handler)
        self.engine = engine
        self.spool_dir = spool_dir
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stopping = False

    def enter(self) -> bool:
        with self._cond:
            if self._stopping:
                return False
            self._in_flight += 1
            return True

    def leave(self):
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def drain(self, timeout: float) -> int:
        """Refuses new requests and waits for the in-flight ones; returns how many remain."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            while self._in_flight and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return self._in_flight


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="chDB data directory (kept across restarts)")
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-connections", type=int, default=16,
                        help="chDB connections, i.e. queries running at once")
    parser.add_argument("--log-level", default=os.environ.get("CLICKHOUSE_FRONT_LOG", "INFO"))
    parser.add_argument("--stop-on-stdin-eof", action="store_true",
                        help="also stop when stdin closes: a test harness holds the pipe, so the "
                             "front goes away with the test process even if that is killed")
    parser.add_argument("--backups", metavar="DIR",
                        help="allow BACKUP/RESTORE with File('<path under DIR>') (the server's "
                             "backups.allowed_path; default <data>/backups)")
    parser.add_argument("--remove-data-on-exit", action="store_true",
                        help="delete --data after stopping (throwaway engines of test processes)")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s clickhouse-front %(levelname)s %(message)s")

    stop = threading.Event()
    # Installed before the engine starts, so a SIGTERM during startup still exits cleanly.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.stop_on_stdin_eof:
        def watch_stdin():
            # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader's lock
            # makes interpreter shutdown abort.
            while os.read(0, 4096):
                pass
            log.info("stdin closed")
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()

    started = time.monotonic()
    os.makedirs(args.data, exist_ok=True)
    backups = os.path.abspath(args.backups or os.path.join(args.data, "backups"))
    os.makedirs(backups, exist_ok=True)
    try:
        # The first connection of the process fixes the engine's server settings.
        engine = Engine(os.path.abspath(args.data) + "?backups.allowed_path=" + urllib.parse.quote(backups, safe="/"),
                        args.max_connections)
    except ImportError as exc:
        log.error("cannot import chdb (%s); install it with scripts/setup", exc)
        return 2
    except ChError as exc:
        log.error("the engine did not start: %s", exc.message)
        return 2
    spool_dir = tempfile.mkdtemp(prefix="clickhouse-front-")
    try:
        server = FrontServer((args.host, args.port), engine, spool_dir)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        engine.close()
        shutil.rmtree(spool_dir, ignore_errors=True)
        return 2
    port = server.server_address[1]
    serving = threading.Thread(target=server.serve_forever, args=(0.1,), name="accept", daemon=True)
    serving.start()
    log.info("ClickHouse %s (chDB) on http://%s:%d, data in %s, backups under %s, ready in %.2fs",
             engine.version, args.host, port, args.data, backups, time.monotonic() - started)
    print(f"READY {port}", flush=True)

    while not stop.wait(3600):
        pass
    log.info("stopping: finishing in-flight requests")
    server.shutdown()  # stop accepting
    server.server_close()
    left = server.drain(timeout=30)
    if left:
        log.warning("%d requests still running after 30s; closing anyway", left)
    engine.close()
    shutil.rmtree(spool_dir, ignore_errors=True)
    if args.remove_data_on_exit:
        shutil.rmtree(args.data, ignore_errors=True)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    # Everything is closed by now. Skipping interpreter finalization avoids waiting on (or
    # tripping over) idle keep-alive threads and the engine's own threads.
    os._exit(code)
