"""Soak: crashes lose nothing (issue 12).

Two omniccd instances share one redis-server (appendonly, appendfsync always). For
OMNICC_SOAK_SECONDS (default 120; or the first argument) clients send mixed traffic at a fixed
rate, the way providers do: generic ingest, Twilio webhooks (signed, menu then queue), CTI
newCall events (signed), raw email through POST /v1/email/inbound (unique Message-IDs),
faxes through POST /v1/fax/inbound (signed), web chat sessions and messages (client_id),
branch walk-ins over the mutual-TLS bridge. Every
client retries on a timeout, a dropped connection or a 5xx with the same ids (the same
Message-ID, the same CallSid, the same client_id, the same branch msg_id), on the other
instance when one is down. Simulated agents follow their event streams, accept offers,
answer some emails (POST /v1/interactions/{id}/reply, sent to an SMTP sink through the
outbox), and complete their work; some visitors close their chat asking for the
transcript by email.

Meanwhile the harness SIGKILLs an omniccd every OMNICC_SOAK_KILL_EVERY seconds (default
30, alternating between the two) and restarts it, and SIGKILLs redis-server once (mid-run)
and restarts it on the same data directory.

Then a quiet period (agents finish everything), and a reconciliation read directly from
Redis (docs/REDIS.md, docs/ROUTING.md) and the SMTP sink:
  lost        acknowledged ids with no interaction (or another one than acknowledged),
              documents (raw emails, faxes) not on disk, acknowledged chat messages not in
              their session or case, acknowledged replies with no outbox record, sent outbox
              messages the sink never received
  duplicated  interactions sharing (channel, external_id), a web chat no start was answered
              with, an interaction with two agent replies, chat messages stored twice,
              interactions received, accepted or ended twice in case histories, messages
              the sink received more than once
  stuck       interactions not ended, agents with load, reservations or deadlines left,
              routing indexes that drifted, outbox entries neither sent nor failed with a
              reason, case histories inconsistent with their interactions
One line of figures is printed; lost, duplicated and stuck must all be zero.

Knobs (environment): OMNICC_SOAK_SECONDS, OMNICC_SOAK_KILL_EVERY, OMNICC_SOAK_RATE
(operations per second; default 6, 2.5 under AddressSanitizer), OMNICC_SOAK_AGENTS (8),
OMNICC_TEST_SEED, OMNICC_SOAK_VERBOSE."""
import asyncio
import base64
import email
import email.policy
import glob
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import signal
import ssl
import struct
import sys
import tempfile
import time
import urllib.parse
import uuid

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))

import harness  # noqa: E402
import routing_model as rm  # noqa: E402
from aioclient import SSE, Client, Unreachable, _Closed  # noqa: E402
from branch_harness import CA  # noqa: E402
from email_servers import SmtpSink  # noqa: E402
from test_fax import fax_pages, multipart  # noqa: E402

SANITIZED = rm.sanitized_build(harness.OMNICCD)
DURATION = float(sys.argv[1] if len(sys.argv) > 1 else os.environ.get('OMNICC_SOAK_SECONDS', 120))
KILL_EVERY = float(os.environ.get('OMNICC_SOAK_KILL_EVERY', 30))
RATE = float(os.environ.get('OMNICC_SOAK_RATE', 2.5 if SANITIZED else 6.0))
N_AGENTS = int(os.environ.get('OMNICC_SOAK_AGENTS', 8))
SEED = int(os.environ.get('OMNICC_TEST_SEED', random.randrange(1 << 30)))
VERBOSE = bool(os.environ.get('OMNICC_SOAK_VERBOSE'))
CLAIM_IDLE = 10           # [email] claim_idle: a dead sender's message is taken over after it
GIVE_UP_S = 60.0          # a client stops retrying one operation after this long
QUIET_MAX_S = 150.0       # how long the agents get to finish everything afterwards

AUTH_TOKEN = 'twilio-soak-auth-token-7c1d'
ACCOUNT = 'AC' + 'c3' * 16
CTI_SECRET = 'cti-soak-secret-5e9a21'
INBOUND_TOKEN = 'inbound-soak-token-0123456789'
FAX_SECRET = 'fax-gateway-soak-secret-93c1'
PUBLIC = 'https://cc.soak.test'
FORM = 'application/x-www-form-urlencoded'
K = rm.KEY
CHANNEL_WEIGHTS = [('ingest', 3), ('twilio', 2), ('cti', 1), ('email', 3), ('chat', 2),
                   ('branch', 2), ('fax', 1)]
QUEUES = {'default': {'channels': list(rm.CHANNELS)}}
ENDINGS = {'completed': 'interaction.completed', 'abandoned': 'interaction.abandoned',
           'canceled': 'interaction.canceled'}
CAPACITY = {'voice': 1, 'email': 4, 'webchat': 3, 'branch': 1, 'fax': 2}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def pct(values, p):
    if not values:
        return float('nan')
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def twilio_signature(url, params):
    data = url + ''.join(k + v for k, v in sorted(params.items()))
    return base64.b64encode(hmac.new(AUTH_TOKEN.encode(), data.encode(),
                                     hashlib.sha1).digest()).decode()


class HClient(Client):
    """aioclient.Client with extra headers and no Authorization unless asked for."""

    async def request(self, method, path, body=None, token=None, timeout=None,
                      content_type='application/json', headers=None):
        data = b''
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = ['%s %s HTTP/1.1' % (method, path), 'Host: %s:%d' % (self.host, self.port),
                'Content-Length: %d' % len(data)]
        if token:
            head.append('Authorization: Bearer %s' % token)
        for k, v in (headers or {}).items():
            head.append('%s: %s' % (k, v))
        if body is not None:
            head.append('Content-Type: ' + content_type)
        msg = ('\r\n'.join(head) + '\r\n\r\n').encode() + data
        for attempt in (1, 2):
            reused = bool(self.idle)
            conn = self.idle.pop() if reused else await self._connect()
            try:
                conn.writer.write(msg)
                status, hdrs, payload = await asyncio.wait_for(self._exchange(conn),
                                                               timeout or self.timeout)
                break
            except _Closed as e:
                conn.close()
                if reused and attempt == 1:
                    continue
                raise Unreachable('%s %s on :%d: %r' % (method, path, self.port, e)) from None
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
                    Unreachable) as e:
                conn.close()
                raise Unreachable('%s %s on :%d: %r' % (method, path, self.port, e)) from None
        # a fresh connection per request: a killed daemon leaves no stale pool behind
        conn.close()
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload


class Node:
    """One omniccd of the pair."""

    def __init__(self, d, branch_port):
        self.d = d
        self.branch_port = branch_port
        self.alive = True
        self.http = HClient(d.port, harness.TOKEN, timeout=10.0)


class Faults:
    """When faults happened, for the latency split."""

    def __init__(self):
        self.windows = []   # [start, end] (end None while open)

    def open(self):
        w = [time.monotonic(), None]
        self.windows.append(w)
        return w

    def during(self, t0, t1):
        for s, e in self.windows:
            if t0 <= (e if e is not None else float('inf')) and t1 >= s:
                return True
        return False


class Soak:
    def __init__(self, tmp, nodes, red, sink, ca, certs, rng):
        self.tmp, self.nodes, self.red, self.sink = tmp, nodes, red, sink
        self.ca, self.certs, self.rng = ca, certs, rng
        self.r = redis.Redis(port=red.port, decode_responses=True)
        self.faults = Faults()
        self.lat = {True: [], False: []}
        self.errors = []
        self.acked = []         # (kind, channel, external_id, interaction id or None)
        self.unacked = []       # operations given up on (never acknowledged)
        self.chat_msgs = []     # (session, client_id, event id, text) acknowledged
        self.replies = []       # message ids of the replies acknowledged (200 or 202)
        self.reply_ix = {}      # interaction -> the message id its reply was given
        self.run_id = uuid.uuid4().hex[:12]
        self.transcripts = []   # sessions closed with a transcript requested
        self.sessions = {}      # session -> visitor token
        self.email_ix = set()   # interactions of mail received through /v1/email/inbound
        self.fax_docs = []      # fax documents (G3 TIFF) the fax server sends
        self.fax_docs_acked = []    # (gateway id, document sha256) acknowledged
        self.retries = 0
        self.kill_walls = []    # wall-clock times of the omniccd kills
        self.stopping = False
        self.n = 0

    # ---- clients that retry like providers ----
    def live(self):
        return [n for n in self.nodes if n.alive] or self.nodes

    async def call(self, method, path, body=None, token=None, content_type='application/json',
                   headers=None, make=None, ok=(200, 201, 202, 204), expect_fail=()):
        """One operation, retried with the same content on a timeout, a dropped connection,
        a 5xx or a 429, on a random live instance (so on the other one when this one is
        down), until acknowledged or GIVE_UP_S. make(node) builds (path, body, headers) per
        attempt when they depend on the node or the time (signatures). Returns (status,
        body, attempts) or (None, None, attempts) when given up."""
        t0 = time.monotonic()
        attempts = 0
        prev = None
        while time.monotonic() - t0 < GIVE_UP_S:
            attempts += 1
            choices = self.live()
            node = self.rng.choice([n for n in choices if n is not prev] or choices)
            p, b, h = (path, body, headers) if make is None else make(node)
            try:
                st, out = await node.http.request(method, p, b, token=token,
                                                  content_type=content_type, headers=h)
            except Unreachable:
                prev = node
                self.retries += 1
                await asyncio.sleep(0.1 + 0.1 * self.rng.random())
                continue
            if st >= 500 or st == 429:
                prev = node
                self.retries += 1
                await asyncio.sleep(0.2 + 0.2 * self.rng.random())
                continue
            if st not in ok and st not in expect_fail:
                self.errors.append('%s %s: %d %r' % (method, p, st, out))
            self.lat[self.faults.during(t0, time.monotonic())].append(time.monotonic() - t0)
            return st, out, attempts
        return None, None, attempts

    # ---- the channels ----
    def person(self):
        n = self.rng.randrange(300)
        return {'n': n, 'phone': '+34 61%07d' % n, 'email': 'holder%d@customer.example' % n,
                'policy': 'PL-2024-%06d' % (500000 + n), 'name': 'Holder %d' % n}

    async def op_ingest(self, i):
        p = self.person()
        ch = self.rng.choice(['voice', 'email', 'fax', 'webchat'])
        ext = 'soak-%d-ing-%d' % (SEED, i)
        doc = {'channel': ch, 'external_id': ext, 'from': p['phone'],
               'customer': {'policy': p['policy'], 'name': p['name']},
               'subject': 'generic %d' % i}
        st, out, _ = await self.call('POST', '/v1/interactions', doc, token=harness.TOKEN)
        self.record('ingest', ch, ext, st, out and isinstance(out, dict) and out.get('id'))

    async def op_twilio(self, i):
        p = self.person()
        sid = 'CA%08x%024x' % (SEED & 0xffffffff, i)
        params = {'AccountSid': ACCOUNT, 'ApiVersion': '2010-04-01', 'CallSid': sid,
                  'CallStatus': 'ringing', 'Called': '+34910000000', 'Caller': p['phone'],
                  'Direction': 'inbound', 'From': p['phone'], 'FromCountry': 'ES',
                  'To': '+34910000000'}

        def make(url, prm):
            body = urllib.parse.urlencode(prm).encode()
            return lambda node: (url[len(PUBLIC):], body,
                                 {'X-Twilio-Signature': twilio_signature(url, prm)})
        url = PUBLIC + '/v1/voice/twilio/incoming'
        st, out, _ = await self.call('POST', url[len(PUBLIC):], content_type=FORM,
                                     make=make(url, params))
        if st != 200:
            self.record('twilio', 'voice', sid, st, None)
            return
        url = PUBLIC + '/v1/voice/twilio/incoming?step=menu&try=0'
        prm = dict(params, Digits='1', CallStatus='in-progress')
        st, out, _ = await self.call('POST', url[len(PUBLIC):], content_type=FORM,
                                     make=make(url, prm))
        ix = None
        if st == 200:
            m = re.search(rb'ix=(I-\d+)', out if isinstance(out, bytes) else b'')
            ix = m.group(1).decode() if m else None
            if ix is None:
                self.errors.append('twilio %s: no interaction in %r' % (sid, out[:300]))
        self.record('twilio', 'voice', sid, st, ix)

    async def op_cti(self, i):
        p = self.person()
        cid = 'soak-%d-pbx-%d' % (SEED, i)
        body = json.dumps({'event': 'newCall', 'call_id': cid, 'from': p['phone'],
                           'to': '+34910000000', 'policy': p['policy'],
                           'name': p['name']}).encode()

        def make(node):
            ts = str(int(time.time()))
            sig = hmac.new(CTI_SECRET.encode(), ts.encode() + b'.' + body,
                           hashlib.sha256).hexdigest()
            return '/v1/voice/cti', body, {'X-Omnicc-Timestamp': ts,
                                           'X-Omnicc-Signature': 'sha256=' + sig}
        st, out, _ = await self.call('POST', '/v1/voice/cti', make=make)
        self.record('cti', 'voice', cid, st, out and isinstance(out, dict) and out.get('interaction'))

    async def op_email(self, i):
        p = self.person()
        mid = '<soak-%d-%d.%s@customer.example>' % (SEED, i, uuid.uuid4().hex[:8])
        raw = ('From: %s <%s>\r\nTo: claims@insurer.example\r\nSubject: Claim about %s (%d)\r\n'
               'Date: Mon, 3 Jun 2024 10:00:00 +0000\r\nMessage-ID: %s\r\n'
               'Content-Type: text/plain; charset=utf-8\r\n\r\nPolicy %s, message %d.\r\n'
               % (p['name'], p['email'], p['policy'], i, mid, p['policy'], i)).encode()
        st, out, _ = await self.call('POST', '/v1/email/inbound', raw, token=INBOUND_TOKEN,
                                     content_type='message/rfc822')
        ix = out and isinstance(out, dict) and out.get('id')
        if ix:
            self.email_ix.add(ix)
        self.record('email', 'email', mid, st, ix)

    async def op_fax(self, i):
        p = self.person()
        gid = 'soak-%d-fax-%d' % (SEED, i)
        body, ctype = multipart([('gateway_id', gid), ('from', p['phone']),
                                 ('to', '+34910000009'), ('tsi', 'SOAK %d' % p['n']),
                                 ('pages', '1'), ('status', 'received')],
                                [('file', 'fax.tif', 'image/tiff',
                                  self.rng.choice(self.fax_docs))])

        def make(node):
            ts = str(int(time.time()))
            sig = hmac.new(FAX_SECRET.encode(), ts.encode() + b'.' + body,
                           hashlib.sha256).hexdigest()
            return '/v1/fax/inbound', body, {'X-Omnicc-Timestamp': ts,
                                             'X-Omnicc-Signature': 'sha256=' + sig}
        st, out, _ = await self.call('POST', '/v1/fax/inbound', content_type=ctype, make=make)
        ok = st == 200 and isinstance(out, dict)
        if ok:
            self.fax_docs_acked.append((gid, out.get('document')))
        self.record('fax', 'fax', 'gateway:' + gid, st, ok and out.get('interaction'))

    async def op_chat(self, i):
        p = self.person()
        doc = {'name': p['name'], 'email': p['email'], 'policy': p['policy'],
               'page': 'https://www.insurer.example/claims'}
        # a widget whose request timed out asks again with the same client_id: the same
        # session (200, duplicate), never a second one
        doc['client_id'] = 'start-%s-%d' % (self.run_id, i)
        st, out, _ = await self.call('POST', '/v1/chat/sessions', doc, ok=(200, 201))
        if st not in (200, 201):
            self.unacked.append(('chat', 'webchat', 'session %d' % i))
            return
        s, vt = out['session'], out['visitor_token']
        if s in self.sessions:
            self.errors.append('chat %d: session %s given to another start' % (i, s))
        self.sessions[s] = vt
        self.record('chat', 'webchat', s, st, None)
        for k in range(self.rng.randint(1, 3)):
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))
            cid = 'c%d-%d' % (i, k)
            text = 'message %d of chat %d' % (k, i)
            st, out, _ = await self.call('POST', '/v1/chat/sessions/%s/messages' % s,
                                         {'text': text, 'client_id': cid},
                                         headers={'X-Omnicc-Visitor': vt},
                                         ok=(201,), expect_fail=(409,))
            if st == 201:
                self.chat_msgs.append((s, cid, out['id'], text))
            elif st == 409:
                break   # the chat ended (its agent completed it first)
            else:
                self.unacked.append(('chat-message', s, cid))
        if self.rng.random() < 0.3:
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            st, out, _ = await self.call('POST', '/v1/chat/sessions/%s/close' % s,
                                         {'transcript': True}, headers={'X-Omnicc-Visitor': vt})
            if st == 200 and out.get('transcript') == 'requested':
                self.transcripts.append(s)
            elif st is not None:
                self.errors.append('close %s: %d %r' % (s, st, out))

    def record(self, kind, channel, ext, st, ix):
        if st in (200, 201, 202):
            self.acked.append((kind, channel, ext, ix or None))
        else:
            self.unacked.append((kind, channel, ext))

    # ---- branch terminals: one request at a time, resent with the same msg_id ----
    async def terminal(self, name, teller, token, work):
        cert, key = self.certs[name]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca.cert)
        ctx.load_cert_chain(cert, key)
        ctx.check_hostname = False
        conn = None

        async def recv(reader):
            n = struct.unpack('>I', await reader.readexactly(4))[0]
            return json.loads(await reader.readexactly(n))

        async def exchange(c, frame):
            reader, writer = c
            data = json.dumps(frame).encode()
            writer.write(struct.pack('>I', len(data)) + data)
            await writer.drain()
            while True:
                f = await asyncio.wait_for(recv(reader), 10)
                if f.get('type') == 'EVENT':
                    continue
                if f.get('msg_id') == frame['msg_id']:
                    return f

        async def connect():
            prev = None
            while True:
                choices = self.live()
                node = self.rng.choice([n for n in choices if n is not prev] or choices)
                try:
                    c = await asyncio.wait_for(asyncio.open_connection(
                        '127.0.0.1', node.branch_port, ssl=ctx, server_hostname='localhost'), 10)
                    f = await exchange(c, {'v': 1, 'type': 'HELLO', 'msg_id': uuid.uuid4().hex})
                    if f.get('type') != 'WELCOME':
                        raise OSError('HELLO: %r' % f)
                    f = await exchange(c, {'v': 1, 'type': 'SIGNIN', 'msg_id': uuid.uuid4().hex,
                                           'agent': teller, 'token': token})
                    if f.get('type') != 'ACK':
                        raise OSError('SIGNIN: %r' % f)
                    return c
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                        ssl.SSLError, ValueError):
                    prev = node
                    try:
                        c[1].close()
                    except Exception:  # noqa: BLE001 - closing what may not exist
                        pass
                    await asyncio.sleep(0.2)

        while True:
            item = await work.get()
            if item is None:
                break
            i, frame = item
            t0 = time.monotonic()
            res = None
            while time.monotonic() - t0 < GIVE_UP_S:
                try:
                    if conn is None:
                        conn = await connect()
                    f = await exchange(conn, frame)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                        ssl.SSLError, ValueError):
                    if conn:
                        conn[1].close()
                    conn = None
                    self.retries += 1
                    continue
                if f.get('type') == 'NACK' and f.get('code') in ('unavailable', 'rate_limited'):
                    self.retries += 1
                    await asyncio.sleep(0.2)
                    continue
                res = f
                break
            ext = '%s:%s' % (name.split('/')[1], frame['msg_id'])
            if res is None:
                self.unacked.append(('branch', 'branch', ext))
            elif res.get('type') == 'ACK':
                self.lat[self.faults.during(t0, time.monotonic())].append(time.monotonic() - t0)
                self.acked.append(('branch', 'branch', ext, res['result']['visit']))
            else:
                self.errors.append('branch %s: %r' % (ext, res))
        if conn:
            conn[1].close()

    # ---- agents ----
    async def agent(self, aid, token):
        seen_offers = set()
        handled = set()
        last_id = None
        tasks = set()

        def spawn(coro):
            t = asyncio.ensure_future(coro)
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        async def work(ixid):
            await asyncio.sleep(self.rng.uniform(0.2, 1.2))
            if ixid in self.email_ix and self.rng.random() < 0.5:
                # the desktop's client_id makes a resent reply harmless: retried like any
                # other call (a lost answer included), one email in the end
                st, out, _ = await self.call(
                    'POST', '/v1/interactions/%s/reply' % ixid,
                    {'body': 'Dear customer, about your message %s.' % ixid,
                     'client_id': 'reply-%s-%s' % (self.run_id, ixid)},
                    token=token, ok=(200, 202))
                if st in (200, 202):
                    if out['message_id'] not in self.replies:
                        self.replies.append(out['message_id'])
                    self.reply_ix[ixid] = out['message_id']
                else:
                    self.unacked.append(('reply', 'email', ixid))
            path = '/v1/interactions/%s/%s' % (ixid, self.rng.choice(['complete', 'wrapup']))
            body = {'note': 'done'} if path.endswith('complete') else {'disposition': 'resolved'}
            st, out, attempts = await self.call('POST', path, body, token=token,
                                                expect_fail=(409,))
            if st == 409 and attempts == 1:
                self.errors.append('%s %s: %d %r' % (aid, path, st, out))

        async def decide(resv, ixid):
            await asyncio.sleep(self.rng.uniform(0.0, 0.2))
            op = 'reject' if self.rng.random() < 0.05 else 'accept'
            st, out, _ = await self.call('POST', '/v1/reservations/%s/%s' % (resv, op),
                                         token=token, expect_fail=(404, 409))
            if op == 'accept' and st == 200 and ixid not in handled:
                handled.add(ixid)
                spawn(work(ixid))

        while not self.stopping:
            node = self.rng.choice(self.live())
            sse = SSE(node.http, '/v1/agents/%s/events' % aid, token=token, last_event_id=last_id)
            try:
                await sse.open()
                async for ev in sse:
                    if 'comment' in ev:
                        continue
                    last_id = ev.get('id')
                    d = (ev.get('data') or {}).get('data') or {}
                    kind = ev.get('event')
                    if kind == 'offer':
                        rid = d['reservation']['id']
                        if rid not in seen_offers:
                            seen_offers.add(rid)
                            spawn(decide(rid, d['interaction']['id']))
                    elif kind == 'offer.accepted':
                        ixid = d['interaction']
                        if ixid not in handled:
                            handled.add(ixid)
                            spawn(work(ixid))
                    elif kind == 'agent.presence' and d.get('presence') == 'away':
                        spawn(self.call('PUT', '/v1/agents/%s/state' % aid,
                                        {'state': 'available'}, token=token))
            except (Unreachable, redis.RedisError):
                pass
            await asyncio.sleep(self.rng.uniform(0.1, 0.4))
        for t in list(tasks):
            t.cancel()

    # ---- faults ----
    async def chaos(self, t_end):
        nxt = time.monotonic() + KILL_EVERY
        redis_at = time.monotonic() + max(KILL_EVERY / 2, DURATION / 2 - KILL_EVERY / 2)
        redis_done = False
        k = 0
        while time.monotonic() < t_end - 3:
            now = time.monotonic()
            if not redis_done and now >= redis_at:
                redis_done = True
                self.redis_kills += 1
                w = self.faults.open()
                log('%6.1f s: SIGKILL redis-server' % (now - self.t0))
                self.red.kill(signal.SIGKILL)
                await asyncio.sleep(2.0)
                await asyncio.get_running_loop().run_in_executor(None, self.red.start)
                await asyncio.sleep(3.0)
                w[1] = time.monotonic()
                continue
            if now >= nxt:
                node = self.nodes[k % len(self.nodes)]
                k += 1
                w = self.faults.open()
                log('%6.1f s: SIGKILL omniccd :%d' % (now - self.t0, node.d.port))
                self.kill_walls.append(time.time())
                node.alive = False
                node.d.proc.send_signal(signal.SIGKILL)
                node.d.proc.wait(10)
                node.d.proc = None
                await asyncio.sleep(2.0)
                await asyncio.get_running_loop().run_in_executor(None, node.d.start)
                node.alive = True
                await asyncio.sleep(2.0)
                w[1] = time.monotonic()
                nxt = max(nxt + KILL_EVERY, time.monotonic() + 5)
                self.kills = k
                continue
            await asyncio.sleep(0.1)

    # ---- the run ----
    async def run(self, agents, tellers):
        self.t0 = time.monotonic()
        self.kills = 0
        self.redis_kills = 0
        agent_tasks = [asyncio.ensure_future(self.agent(a, t)) for a, t in agents]
        for a, t in agents:
            st, out, _ = await self.call('PUT', '/v1/agents/%s/state' % a, {'state': 'available'},
                                         token=t)
            assert st == 200, (st, out)
        queues = {}
        term_tasks = []
        for name, (teller, tok) in tellers.items():
            queues[name] = asyncio.Queue()
            term_tasks.append(asyncio.ensure_future(self.terminal(name, teller, tok, queues[name])))
        t_end = self.t0 + DURATION
        chaos = asyncio.ensure_future(self.chaos(t_end))
        kinds = [k for k, w in CHANNEL_WEIGHTS for _ in range(w)]
        ops = []
        i = 0
        while True:
            at = self.t0 + i / RATE
            if at >= t_end:
                break
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = self.rng.choice(kinds)
            if kind == 'branch':
                name = self.rng.choice(sorted(queues))
                p = self.person()
                frame = {'v': 1, 'type': 'VISIT_CREATE', 'msg_id': 'soak-%d-%d' % (SEED, i),
                         'agent': tellers[name][0],
                         'service': self.rng.choice(['claim_fnol', 'policy_inquiry']),
                         'customer': {'policy': p['policy'], 'name': p['name']},
                         'note': 'walk-in %d' % i}
                queues[name].put_nowait((i, frame))
            else:
                ops.append(asyncio.ensure_future(getattr(self, 'op_' + kind)(i)))
            i += 1
            if VERBOSE and i % 100 == 0:
                log('%6.1f s: %d operations, %d acknowledged, %d retries' % (
                    time.monotonic() - self.t0, i, len(self.acked), self.retries))
        self.n = i
        await chaos
        for q in queues.values():
            q.put_nowait(None)
        await asyncio.gather(*ops, *term_tasks)
        traffic_s = time.monotonic() - self.t0
        # quiet: the agents finish everything there is
        deadline = time.monotonic() + QUIET_MAX_S
        while time.monotonic() < deadline:
            if not self.open_work():
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(2.0)
        self.stopping = True
        for t in agent_tasks:
            t.cancel()
        await asyncio.gather(*agent_tasks, return_exceptions=True)
        # the outbox drains (a sender killed mid-send is taken over after claim_idle)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and self.outbox_pending():
            await asyncio.sleep(0.5)
        return traffic_s, time.monotonic() - self.t0

    def open_work(self):
        n = int(self.r.get(K + 'seq:ix') or 0)
        p = self.r.pipeline(transaction=False)
        for i in range(1, n + 1):
            p.hget(K + 'ix:I-%d' % i, 'state')
        return [s for s in p.execute() if s not in ('completed', 'abandoned', 'canceled', None)]

    def outbox_pending(self):
        out = []
        for k in self.r.scan_iter(match=K + 'msgout:*', count=1000):
            if self.r.hget(k, 'status') not in ('sent', 'failed'):
                out.append(k)
        return out


def stream_id(eid):
    ms, _, seq = eid.partition('-')
    return int(ms), int(seq or 0)


def reconcile(s):
    """Everything counted from Redis and the SMTP sink. Returns (lost, dups, stuck) lists."""
    r = s.r
    lost, dups, stuck = [], [], []
    ixs = rm.load_interactions(r)
    by_ext = {}
    for i, h in ixs.items():
        by_ext.setdefault((h.get('channel'), h.get('external_id')), []).append(i)
    for key, ids in by_ext.items():
        if len(ids) > 1:
            dups.append('interactions %s share %s' % (ids, key))
    for kind, ch, ext, ix in s.acked:
        got = r.get(K + 'idem:%s:%s' % (ch, ext))
        if got is None or got not in ixs:
            lost.append('%s %s: acknowledged, no interaction (idem %r)' % (kind, ext, got))
        elif ix and got != ix:
            lost.append('%s %s: acknowledged as %s, stored as %s' % (kind, ext, ix, got))
        elif len(by_ext.get((ch, ext), [])) != 1:
            lost.append('%s %s: %d interactions' % (kind, ext, len(by_ext.get((ch, ext), []))))
    # branch: the stored result of each acknowledged walk-in names the same visit
    for kind, ch, ext, ix in s.acked:
        if kind == 'branch':
            term, _, msg = ext.partition(':')
            res = r.get(K + 'bterm:%s:msg:%s' % (term, msg))
            if res is None or ix not in res:
                lost.append('branch %s: stored result %r' % (ext, res and res[:200]))
    # documents: the raw message of each acknowledged email and the document of each
    # acknowledged fax are on disk (in either instance's store)
    docs = [(ext, json.loads(ixs[ix].get('metadata') or '{}').get('raw_sha256', ''))
            for kind, ch, ext, ix in s.acked if kind == 'email' and ix in ixs]
    docs += [('fax ' + gid, sha or '') for gid, sha in s.fax_docs_acked]
    for ext, sha in docs:
        found = False
        for n in s.nodes:
            path = os.path.join(n.d.state_dir, 'attachments', sha[:2], sha)
            try:
                with open(path, 'rb') as f:
                    found = hashlib.sha256(f.read()).hexdigest() == sha
            except OSError:
                continue
            if found:
                break
        if not sha or not found:
            lost.append('%s: document %r not stored' % (ext, sha))
    # chat messages: each acknowledged one exactly once in its session and its case
    per_session = {}
    for sess, cid, eid, text in s.chat_msgs:
        per_session.setdefault(sess, []).append((cid, eid, text))
    hist_cache = {}
    for sess, msgs in per_session.items():
        evs = r.xrange(K + 'chat:%s:events' % sess)
        counts = {}
        for eid, f in evs:
            if f.get('type') == 'chat.message':
                d = json.loads(f.get('data') or '{}')
                c = d.get('client_id') or (d.get('data') or {}).get('client_id')
                counts[c] = counts.get(c, 0) + 1
        ixid = r.get(K + 'idem:webchat:' + sess)
        case = ixs.get(ixid, {}).get('case_id')
        if case not in hist_cache:
            hist_cache[case] = r.xrange(K + 'case:%s:hist' % case) if case else []
        in_hist = {}
        for _, f in hist_cache[case]:
            if f.get('type') == 'chat.message' and f.get('session') == sess:
                in_hist[f.get('text')] = in_hist.get(f.get('text'), 0) + 1
        for cid, eid, text in msgs:
            n = counts.get(cid, 0)
            if n == 0:
                lost.append('chat %s message %s (%s) not in the session' % (sess, cid, eid))
            elif n > 1:
                dups.append('chat %s message %s stored %d times' % (sess, cid, n))
            h = in_hist.get(text, 0)
            if h == 0:
                lost.append('chat %s message %s not in the case history of %s' % (sess, cid, case))
            elif h > 1:
                dups.append('chat %s message %s %d times in the case history' % (sess, cid, h))
    # case histories against interactions, every case read whole: each interaction is
    # received once (in the case it arrived on), is on the case where its history last put
    # it (a fax whose cover sheet names another policy or case moves there: fax.relinked in
    # the old case, interaction.linked in the new one), ended once as its state says, and
    # a completed one was accepted once
    n_cases = int(r.get(K + 'seq:case') or 0)
    per_ix = {}
    for start in range(1, n_cases + 1, 500):
        ids = ['C-%d' % c for c in range(start, min(n_cases, start + 499) + 1)]
        p = r.pipeline(transaction=False)
        for c in ids:
            p.xrange(K + 'case:%s:hist' % c)
        for c, hist in zip(ids, p.execute()):
            hist_cache[c] = hist
            for eid, f in hist:
                i = f.get('interaction')
                if i:
                    per_ix.setdefault(i, []).append((stream_id(eid), c, f))
    for i, h in ixs.items():
        evs = sorted(per_ix.get(i, []), key=lambda e: e[0])
        case = h.get('case_id')
        if not case or not r.exists(K + 'case:' + case):
            stuck.append('%s names a case %r that does not exist' % (i, case))
        received = [c for _, c, f in evs if f.get('type') == 'interaction.received']
        placed = [c for _, c, f in evs if f.get('type') in ('interaction.received',
                                                               'interaction.linked')]
        if len(received) != 1:
            (dups if len(received) > 1 else stuck).append('%s received %d times in case histories (%s)' % (i, len(received),
                                                                          received))
        elif placed[-1] != case:
            stuck.append('%s is on %s, case histories last put it on %s' % (i, case, placed[-1]))
        for _, c, f in evs:
            if f.get('type') == 'interaction.linked' and f.get('from_case') not in received + placed:
                stuck.append('%s linked to %s from %s, where it never was' % (
                    i, c, f.get('from_case')))
        st = h.get('state')
        ended = [f.get('type') for _, _, f in evs if f.get('type') in ENDINGS.values()]
        if st in ENDINGS and ended != [ENDINGS[st]]:
            (dups if len(ended) > 1 else stuck).append('%s is %s, case histories end it as %s' % (i, st, ended))
        accepted = sum(1 for _, _, f in evs if f.get('type') == 'offer.accepted')
        if st == 'completed' and accepted != 1:
            (dups if accepted > 1 else stuck).append('%s completed, accepted %d times in case histories' % (i, accepted))
    for i in per_ix:
        if i not in ixs:
            stuck.append('case histories name %s, which does not exist' % i)
    # nothing left open, no agent busy, no reservation, no index drift
    for i, h in ixs.items():
        if h.get('state') not in ('completed', 'abandoned', 'canceled'):
            stuck.append('%s (%s %s) left %s, agent %s' % (i, h.get('channel'), h.get('external_id'),
                                                           h.get('state'), h.get('agent')))
    agents = rm.load_agents(r, rm.all_agent_ids(r))
    for aid, a in agents.items():
        if a['load_total'] or any(a['load'].values()):
            stuck.append('agent %s load %s total %d' % (aid, a['load'], a['load_total']))
    resv = list(r.scan_iter(match=K + 'resv:*', count=1000))
    if resv:
        stuck.append('reservations left: %s' % resv[:10])
    dl = [m for m in r.zrange(K + 'deadlines', 0, -1) if m.startswith('resv:')]
    if dl:
        stuck.append('reservation deadlines left: %s' % dl[:10])
    stuck.extend(rm.check_structures(r, QUEUES, agents, ixs))
    # the outbox: every message sent once (and received once) or failed with a reason
    outs = {}
    for k in r.scan_iter(match=K + 'msgout:*', count=1000):
        outs[k[len(K) + 7:]] = r.hgetall(k)
    received, when = {}, {}
    for path in glob.glob(os.path.join(s.sink.dir, 'msg-*.eml')):
        with open(path, 'rb') as f:
            mid = email.message_from_bytes(f.read(), policy=email.policy.default)['Message-ID']
        received[mid] = received.get(mid, 0) + 1
        when.setdefault(mid, []).append(os.stat(path).st_mtime)
    resent = []
    for mid in s.replies:
        if mid not in outs:
            lost.append('reply %s acknowledged, no outbox record' % mid)
    # one reply per interaction the agents answered, however often it was resent
    per_ix = {}
    for mid, h in outs.items():
        if h.get('kind') == 'agent':
            per_ix.setdefault(h.get('interaction'), []).append(mid)
    for ixid, mids in per_ix.items():
        if len(mids) > 1:
            dups.append('interaction %s has %d agent replies queued %s' % (ixid, len(mids), mids))
    # every chat session's interaction is a session a start was answered with (generic
    # ingests on the webchat channel have external ids of their own)
    for i, h in ixs.items():
        ext = h.get('external_id') or ''
        if h.get('channel') == 'webchat' and ext.startswith('S-') and ext not in s.sessions:
            dups.append('web chat %s (%s) opened by a start nobody was answered with'
                        % (i, h.get('external_id')))
    n_sent = n_failed = 0
    for mid, h in outs.items():
        st = h.get('status')
        if st == 'sent':
            n_sent += 1
            if received.get(mid, 0) == 0:
                lost.append('outbox %s sent, never received' % mid)
            elif received[mid] > 1:
                t = sorted(when[mid])
                if len(t) == 2 and t[1] - t[0] >= CLAIM_IDLE - 1 and any(
                        t[0] - 0.05 <= k <= t[0] + 2.0 for k in s.kill_walls):
                    # delivery is at least once (channels/email_smtp.c): the sender was
                    # killed between the server's 250 and recording it, and another one
                    # sent it again, same Message-ID, after claim_idle
                    resent.append(mid)
                else:
                    dups.append('outbox %s received %d times (%s)' % (mid, received[mid], t))
        elif st == 'failed' and h.get('smtp', '').strip():
            n_failed += 1
            if received.get(mid, 0) > 1:
                dups.append('outbox %s failed, received %d times' % (mid, received[mid]))
        else:
            stuck.append('outbox %s: %s' % (mid, h))
    for mid, n in received.items():
        if mid not in outs:
            dups.append('sink received %s (%d) that no outbox entry names' % (mid, n))
    pend = r.xpending(K + 'outbox:email', 'senders') if r.exists(K + 'outbox:email') else None
    if pend and pend.get('pending'):
        stuck.append('outbox:email has %d pending entries' % pend['pending'])
    if r.zcard(K + 'outbox:email:retry'):
        stuck.append('outbox:email:retry not empty')
    transcripts = sum(1 for h in outs.values() if h.get('mode') == 'transcript' or
                      'transcript' in h.get('kind', ''))
    return lost, dups, stuck, {'interactions': len(ixs), 'outbox': len(outs), 'sent': n_sent,
                               'failed': n_failed, 'received': sum(received.values()),
                               'transcripts': transcripts, 'resent': resent}


def config(tmp, sink, ca, scert, skey):
    def put(name, text):
        p = os.path.join(tmp, name)
        with open(p, 'w') as f:
            f.write(text + '\n')
        return p
    twilio = put('twilio-token', AUTH_TOKEN)
    cti = put('cti-secret', CTI_SECRET)
    inbound = put('inbound-token', INBOUND_TOKEN)
    fax = put('fax-secret', FAX_SECRET)
    vkey = put('webchat.key', 'soak-visitor-key-' + uuid.uuid4().hex)
    routing = dict([('offer_timeout_' + ch, 6) for ch in rm.CHANNELS] +
                   [('reject_block', 1), ('max_no_answer', 100)])
    return rm.config_text(QUEUES, routing) + (
        '[daemon]\nlog_level = info\n'
        '[redis]\ncommand_timeout = 5000\n'
        '[voice]\nauth_token_file = %s\naccount_sid = %s\npublic_url = %s\n'
        'cti_secret_file = %s\nmenu = 1=claims@default 2=sales@default\nask_policy = no\n'
        'hold_seconds = 5\n'
        '[email]\ninbound_token_file = %s\nfrom_address = claims@insurer.example\n'
        'smtp_url = smtp://127.0.0.1:%d\nsmtp_starttls = no\nretry_base = 1\nretry_max = 2\n'
        'claim_idle = %d\noutbox_poll_ms = 200\nsmtp_timeout = 30\n'
        '[webchat]\nvisitor_key_file = %s\nip_rate = 1000000\nip_session_rate = 1000000\n'
        'visitor_rate = 1000\nleave_grace = 3600\n'
        '[fax]\ngateway_secret_file = %s\n'
        '[branch mad01]\nname = Madrid Centro\nservices = claim_fnol:default '
        'policy_inquiry:default\ncounters = 4\n'
        % (twilio, ACCOUNT, PUBLIC, cti, inbound, sink.port, CLAIM_IDLE, vkey, fax))


def branch_section(port, ca, scert, skey):
    return ('[branch]\nlisten = 127.0.0.1:%d\nca = %s\ncert = %s\nkey = %s\ncrl = %s\n'
            'rate = 100000\nburst = 100000\n' % (port, ca.cert, scert, skey, ca.crl))


async def setup_floor(node, rng):
    """Agents (REST) and tellers (branch terminals), through the API."""
    async def req(method, path, body=None):
        return await node.http.request(method, path, body, token=harness.TOKEN)
    agents, tellers = [], {}
    for n in range(N_AGENTS):
        aid = 'soak-%02d' % n
        st, out = await req('POST', '/v1/agents', {
            'id': aid, 'name': 'Agent %d' % n, 'capacity': dict(CAPACITY),
            'capacity_total': 6})
        assert st in (200, 201), (st, out)
        st, tok = await req('POST', '/v1/agents/%s/tokens' % aid)
        assert st == 201, (st, tok)
        agents.append((aid, tok['token']))
    for t in ('t1', 't2'):
        aid = 'teller-' + t
        st, out = await req('POST', '/v1/agents', {'id': aid, 'name': 'Teller ' + t,
                                                         'branch': 'mad01', 'capacity': {}})
        if st not in (200, 201):  # a teller with no capacity at all may be refused
            st, out = await req('POST', '/v1/agents', {
                'id': aid, 'name': 'Teller ' + t, 'branch': 'mad01',
                'capacity': {'branch': 1}})
        assert st in (200, 201), (st, out)
        st, tok = await req('POST', '/v1/agents/%s/tokens' % aid)
        assert st == 201, (st, tok)
        tellers['mad01/' + t] = (aid, tok['token'])
    return agents, tellers


def main():
    rng = random.Random(SEED)
    log('soak: seed %d, %.0f s at %.1f operations/s, omniccd SIGKILL every %.0f s, '
        '%d agents%s' % (SEED, DURATION, RATE, KILL_EVERY, N_AGENTS,
                         ' (ASan build: lower rate)' if SANITIZED else ''))
    tmp = tempfile.mkdtemp(prefix='omnicc-soak-')
    os.chmod(tmp, 0o755)
    red = sink = None
    daemons = []
    ok = False
    try:
        red = harness.RedisServer(tmp, ['--appendfsync', 'always'])
        sink = SmtpSink(tmp)
        # most attempts are accepted; some deferred (4xx: retried), some refused for good
        # (5xx: recorded as failed with the server's answer)
        sink.script(data=['451 4.3.0 try again later' if n % 11 == 0 else
                          '550 5.1.1 mailbox unavailable' if n % 23 == 0 else
                          '250 2.0.0 OK' for n in range(1, 20001)])
        ca = CA(os.path.join(tmp, 'ca'))
        scert, skey = ca.issue('server', 'localhost', san='DNS:localhost,IP:127.0.0.1',
                               server=True)
        certs = {'mad01/t1': ca.terminal('mad01', 't1'), 'mad01/t2': ca.terminal('mad01', 't2')}
        base = config(tmp, sink, ca, scert, skey)
        nodes = []
        for n in range(2):
            bport = harness.free_port()
            d = harness.Omniccd(tmp, red.url, base + branch_section(bport, ca, scert, skey),
                                name='omniccd%d' % n)
            daemons.append(d)
            nodes.append(Node(d, bport))
        s = Soak(tmp, nodes, red, sink, ca, certs, rng)
        s.fax_docs = [fax_pages(tmp, [['FAX COVER SHEET', 'Claim for policy PL-2024-%06d' % (500000 + n),
                                       'Please call back']]) for n in range(4)]
        agents, tellers = asyncio.run(setup_floor(nodes[0], rng))
        traffic_s, total_s = asyncio.run(s.run(agents, tellers))
        lost, dups, stuck, fig = reconcile(s)
        for name, items in (('LOST', lost), ('DUPLICATED', dups), ('STUCK', stuck),
                            ('CLIENT ERROR', s.errors)):
            for x in items[:20]:
                log('%s: %s' % (name, x))
        f, q = s.lat[True], s.lat[False]
        kinds = {}
        for a in s.acked:
            kinds[a[0]] = kinds.get(a[0], 0) + 1
        log('soak: %d operations in %.0f s (%s), %d chat messages, %d replies, %d transcripts; '
            '%d interactions, outbox %d (sent %d, failed %d, sink received %d); %d retries, '
            '%d never acknowledged; %d omniccd kills, %d redis kill; done after %.0f s' % (
                s.n, traffic_s, ' '.join('%s %d' % kv for kv in sorted(kinds.items())),
                len(s.chat_msgs), len(s.replies), len(s.transcripts), fig['interactions'],
                fig['outbox'], fig['sent'], fig['failed'], fig['received'], s.retries,
                len(s.unacked), s.kills, s.redis_kills, total_s))
        acknowledged = len(s.acked) + len(s.chat_msgs) + len(s.replies)
        print('SOAK acknowledged=%d lost=%d duplicated=%d stuck=%d resent_after_crash=%d latency_ms '
              'faults p50=%.0f p99=%.0f (n=%d) outside p50=%.0f p99=%.0f (n=%d)' % (
                  acknowledged, len(lost), len(dups), len(stuck), len(fig['resent']),
                  pct(f, 50) * 1000, pct(f, 99) * 1000, len(f),
                  pct(q, 50) * 1000, pct(q, 99) * 1000, len(q)), flush=True)
        assert s.kills > 0 and s.redis_kills == 1, 'the faults did not happen'
        if DURATION >= 60:  # long enough for every kind of traffic to have happened
            missing = {k for k, _ in CHANNEL_WEIGHTS} - set(kinds)
            assert not missing, 'no %s acknowledged' % sorted(missing)
            assert s.chat_msgs and s.replies and s.transcripts and fig['sent'], \
                'no chat message, reply, transcript or sent email'
        assert not lost, 'lost %d' % len(lost)
        assert not dups, 'duplicated %d' % len(dups)
        assert not stuck, 'stuck %d' % len(stuck)
        assert not s.errors, 'client errors %d' % len(s.errors)
        ok = True
    finally:
        failed = []
        for d in daemons:
            if d.proc and d.proc.poll() is None:
                rc = d.stop()
                if rc not in (0, None):
                    failed.append('%s exited %r' % (d.dir, rc))
            if not ok or failed:
                log('---- %s (last lines)\n%s' % (d.dir, d.log()[-3000:]))
        if sink:
            sink.stop()
        if red:
            red.stop()
        if ok and not failed:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log('kept %s' % tmp)
        if failed:
            raise AssertionError('; '.join(failed))


if __name__ == '__main__':
    main()
