"""A small asyncio HTTP/1.1 client for the system-level tests and benchmarks: keep-alive
connection pools per daemon, JSON requests, and Server-Sent Events streams (chunked), with
nothing outside the Python standard library. One event loop drives hundreds of simulated
agents and concurrent ingests without a thread each.

Failures to reach a daemon (refused, reset, closed mid-reply, timeout) raise Unreachable,
so callers can move to another instance; HTTP error statuses are returned, not raised."""
import asyncio
import json


class Unreachable(Exception):
    """The request may or may not have reached the daemon; no reply was read."""


class _Closed(Unreachable):
    """The connection was closed before any byte of a reply."""


IDLE_MAX_S = 10.0   # well under the daemon's [http] read_timeout, after which it closes


class _Conn:
    __slots__ = ('reader', 'writer', 'idle_since', 'owner')

    def __init__(self, reader, writer, owner):
        self.reader, self.writer, self.owner = reader, writer, owner
        self.idle_since = 0.0
        owner.add(self)

    def close(self):
        self.owner.discard(self)
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing a dead socket
            pass


async def _read_head(reader):
    try:
        line = await reader.readline()
    except ConnectionResetError as e:
        raise _Closed('connection reset before the status line: %s' % e) from None
    if not line:
        raise _Closed('connection closed before the status line')
    parts = line.decode('latin-1').split(' ', 2)
    if len(parts) < 2 or not parts[0].startswith('HTTP/'):
        raise Unreachable('bad status line %r' % line[:80])
    status = int(parts[1])
    headers = {}
    while True:
        h = await reader.readline()
        if not h:
            raise Unreachable('connection closed in the headers')
        if h in (b'\r\n', b'\n'):
            break
        k, _, v = h.decode('latin-1').partition(':')
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def _read_body(reader, headers):
    if headers.get('transfer-encoding', '').lower() == 'chunked':
        out = bytearray()
        while True:
            size = int((await reader.readline()).split(b';')[0].strip() or b'0', 16)
            if size == 0:
                await reader.readline()
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    n = int(headers.get('content-length', '0'))
    return await reader.readexactly(n) if n else b''


class Client:
    """Keep-alive pools to one daemon (host, port). request() returns (status, body) where
    body is parsed JSON when it parses, else bytes."""

    def __init__(self, port, token, host='127.0.0.1', timeout=30.0):
        self.host, self.port, self.token, self.timeout = host, port, token, timeout
        self.idle = []
        self.open = set()  # every connection, so close() ends those of cancelled requests
        self.dead = False  # set by the caller when the daemon is known to be gone

    async def _connect(self):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                          self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise Unreachable('connect %s:%d: %s' % (self.host, self.port, e)) from None
        return _Conn(r, w, self.open)

    async def request(self, method, path, body=None, token=None, timeout=None,
                      content_type='application/json'):
        data = b''
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = ['%s %s HTTP/1.1' % (method, path), 'Host: %s:%d' % (self.host, self.port),
                'Authorization: Bearer %s' % (token or self.token),
                'Content-Length: %d' % len(data)]
        if body is not None:
            head.append('Content-Type: ' + content_type)
        msg = ('\r\n'.join(head) + '\r\n\r\n').encode() + data
        loop = asyncio.get_running_loop()
        while self.idle and loop.time() - self.idle[0].idle_since > IDLE_MAX_S:
            self.idle.pop(0).close()
        for attempt in (1, 2):
            reused = bool(self.idle)
            conn = self.idle.pop() if reused else await self._connect()
            try:
                conn.writer.write(msg)
                status, headers, payload = await asyncio.wait_for(self._exchange(conn),
                                                                  timeout or self.timeout)
                break
            except _Closed as e:
                conn.close()
                # a kept-alive connection the server had closed: nothing was processed
                if reused and attempt == 1:
                    continue
                raise Unreachable('%s %s on :%d: %r' % (method, path, self.port, e)) from None
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
                    Unreachable) as e:
                conn.close()
                raise Unreachable('%s %s on :%d: %r' % (method, path, self.port, e)) from None
        if headers.get('connection', '').lower() == 'close' or len(self.idle) >= 64:
            conn.close()
        else:
            conn.idle_since = loop.time()
            self.idle.append(conn)
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload

    @staticmethod
    async def _exchange(conn):
        await conn.writer.drain()
        status, headers = await _read_head(conn.reader)
        return status, headers, await _read_body(conn.reader, headers)

    def close(self):
        self.idle.clear()
        for c in list(self.open):
            c.close()


class SSE:
    """One Server-Sent Events stream. Iterate with `async for ev in stream`: ev is a dict
    {'id', 'event', 'data'} (data parsed as JSON), or {'comment': text} for comment lines
    (': live' marks the end of the catch-up). Raises Unreachable when the stream ends."""

    def __init__(self, client, path, token=None, last_event_id=None):
        self.client, self.path = client, path
        self.token, self.last_event_id = token, last_event_id
        self.conn = None
        self.status = None
        self._buf = b''

    async def open(self, timeout=15.0):
        self.conn = await self.client._connect()
        head = ['GET %s HTTP/1.1' % self.path, 'Host: 127.0.0.1',
                'Authorization: Bearer %s' % (self.token or self.client.token),
                'Accept: text/event-stream']
        if self.last_event_id:
            head.append('Last-Event-ID: %s' % self.last_event_id)
        try:
            self.conn.writer.write(('\r\n'.join(head) + '\r\n\r\n').encode())
            await self.conn.writer.drain()
            self.status, self.headers = await asyncio.wait_for(_read_head(self.conn.reader),
                                                               timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            self.close()
            raise Unreachable('SSE %s on :%d: %r' % (self.path, self.client.port, e)) from None
        if self.status != 200:
            body = b''
            try:
                body = await asyncio.wait_for(_read_body(self.conn.reader, self.headers), 5)
            except Exception:  # noqa: BLE001 - only for the message
                pass
            self.close()
            raise Unreachable('SSE %s: HTTP %d %r' % (self.path, self.status, body[:200]))
        return self

    async def _chunk(self):
        r = self.conn.reader
        line = await r.readline()
        if not line:
            raise Unreachable('stream closed')
        size = int(line.split(b';')[0].strip() or b'0', 16)
        if size == 0:
            raise Unreachable('stream ended')
        data = await r.readexactly(size)
        await r.readexactly(2)
        return data

    def __aiter__(self):
        return self._events()

    async def _events(self):
        frame = {}
        try:
            while True:
                while b'\n' not in self._buf:
                    self._buf += await self._chunk()
                line, _, self._buf = self._buf.partition(b'\n')
                line = line.decode().rstrip('\r')
                if not line:
                    if 'data' in frame:  # (a frame of only 'retry:' is not an event)
                        try:
                            frame['data'] = json.loads(frame['data'])
                        except ValueError:
                            pass
                        if 'id' in frame:
                            self.last_event_id = frame['id']
                        yield frame
                    frame = {}
                elif line.startswith(':'):
                    yield {'comment': line[1:].strip()}
                else:
                    k, _, v = line.partition(':')
                    v = v[1:] if v.startswith(' ') else v
                    if k == 'data' and 'data' in frame:
                        frame['data'] += '\n' + v
                    else:
                        frame[k] = v
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise Unreachable('SSE %s: %r' % (self.path, e)) from None
        finally:
            self.close()

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None
