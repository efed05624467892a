"""Web chat API against a real redis-server and omniccd: sessions, visitor tokens, identity
hashes, CORS, limits (size, per visitor, per IP), agents' replies, the visitor's event stream
with Last-Event-ID, abandoning a chat the customer left, case notes by agents, and the static
pages (path validation). Rendering (escaping) is checked in the browser test."""
import hashlib
import hmac
import http.client
import json
import os
import shutil
import tempfile
import time
import unittest
import uuid

import harness
from email_servers import SmtpSink

SECRET = 'insurer-site-shared-secret-0123456789'
ORIGIN = 'https://www.insurer.example'


def identity(kind, value, secret=SECRET, **extra):
    h = hmac.new(secret.encode(), ('%s:%s' % (kind, value)).encode(), hashlib.sha256).hexdigest()
    return dict(type=kind, id=value, hash=h, **extra)


class ChatCase(harness.TestCase):
    chat_config = ''

    @classmethod
    def setUpClass(cls):
        cls.secret_dir = tempfile.mkdtemp(prefix='omnicc-webchat-')
        path = os.path.join(cls.secret_dir, 'identity.secret')
        with open(path, 'w') as f:
            f.write(SECRET + '\n')
        cls.extra_config = ('[webchat]\nallowed_origins = %s http://localhost:9\n'
                            'identity_secret_file = %s\ntopics = general claims:claims\n'
                            'leave_grace = 1\n' % (ORIGIN, path) + cls.chat_config +
                            '[queue claims]\nchannels = webchat voice email\n')
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.secret_dir, ignore_errors=True)

    # ---- helpers ----
    def chat(self, method, path, body=None, token=None, headers=None, **kw):
        h = dict(headers or {})
        if token:
            h['X-Omnicc-Visitor'] = token
        return self.d.request(method, path, body, auth=False, headers=h, **kw)

    def open_session(self, expect=201, **fields):
        fields.setdefault('name', 'Test Visitor')
        if 'identity' not in fields:
            fields.setdefault('email', 'visitor-%s@example.com' % self.ext('v'))
        st, body, hdrs = self.chat('POST', '/v1/chat/sessions', fields,
                                   token=fields.pop('_token', None))
        self.assertEqual(st, expect, body)
        if st == 201:  # nothing of one test waits in a queue for the next one's agents
            self.addCleanup(self.chat, 'POST', '/v1/chat/sessions/%s/close' % body['session'],
                            token=body['visitor_token'])
        return body, hdrs

    def interaction_of(self, session):
        return self.redis.cli('GET', 'omnicc:{main}:idem:webchat:' + session)

    def send(self, s, text, token=None, expect=201, **extra):
        st, body, hdrs = self.chat('POST', '/v1/chat/sessions/%s/messages' % s['session'],
                                   dict(text=text, **extra), token=token or s['visitor_token'])
        self.assertEqual(st, expect, body)
        return body, hdrs

    def agent(self, name=None):
        aid = name or self.ext('agent').replace('-', '_')
        st, body, _ = self.d.post('/v1/agents', {'id': aid, 'name': 'Alex Doe',
                                                 'capacity': {'webchat': 2}})
        self.assertIn(st, (200, 201), body)
        st, tok, _ = self.d.post('/v1/agents/%s/tokens' % aid, None)
        self.assertEqual(st, 201, tok)
        # no agent of one test stays available for the next one's chats
        self.addCleanup(self.d.request, 'PUT', '/v1/agents/%s/state' % aid, {'state': 'offline'})
        return aid, tok['token']

    def as_agent(self, token, method, path, body=None):
        return self.d.request(method, path, body, auth=False,
                              headers={'Authorization': 'Bearer ' + token})

    def sse(self, path, headers, until, timeout=5.0):
        """Read an SSE stream until an event of type `until` (or timeout); returns frames."""
        conn = http.client.HTTPConnection('127.0.0.1', self.d.port, timeout=timeout)
        conn.request('GET', path, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            self.fail('%s: %d %r' % (path, resp.status, resp.read()[:300]))
        frames, cur, deadline = [], {}, time.time() + timeout
        try:
            while time.time() < deadline:
                line = resp.readline().decode()
                if not line:
                    break
                line = line.rstrip('\n')
                if line == '':
                    if 'data' in cur:
                        frames.append(cur)
                        if cur.get('event') == until:
                            break
                    cur = {}
                elif line.startswith('id: '):
                    cur['id'] = line[4:]
                elif line.startswith('event: '):
                    cur['event'] = line[7:]
                elif line.startswith('data: '):
                    cur['data'] = json.loads(line[6:])
        finally:
            conn.close()
        return frames


class WebchatTest(ChatCase):
    def test_config_lists_topics(self):
        st, cfg, _ = self.chat('GET', '/v1/chat/config')
        self.assertEqual(st, 200)
        self.assertEqual(cfg['topics'], ['general', 'claims'])
        self.assertTrue(cfg['identity'])

    def test_session_is_a_webchat_interaction_with_a_visitor_cookie(self):
        s, hdrs = self.open_session(email='ana.chat@example.com', policy='pl-2024-009001',
                                    topic='claims')
        self.assertFalse(s['verified'])
        self.assertRegex(s['session'], r'^S-[0-9a-f]{32}$')
        cookie = hdrs['set-cookie']
        self.assertIn('omnicc_chat=' + s['visitor_token'], cookie)
        self.assertIn('HttpOnly', cookie)
        self.assertIn('Path=/v1/chat/', cookie)
        ix = self.interaction_of(s['session'])
        st, body, _ = self.d.get('/v1/interactions/' + ix)
        self.assertEqual(st, 200)
        self.assertEqual((body['channel'], body['external_id'], body['queue']),
                         ('webchat', s['session'], 'claims'))
        self.assertEqual(body['metadata']['topic'], 'claims')
        # the cookie alone authenticates the visitor
        st, m, _ = self.chat('POST', '/v1/chat/sessions/%s/messages' % s['session'],
                             {'text': 'by cookie'},
                             headers={'Cookie': 'a=b; omnicc_chat=' + s['visitor_token']})
        self.assertEqual(st, 201, m)
        # messages are case history
        st, case, _ = self.d.get('/v1/cases/' + body['case_id'])
        texts = [h.get('text') for h in case['history'] if h['type'] == 'chat.message']
        self.assertEqual(texts, ['by cookie'])

    def test_pre_chat_form_is_validated(self):
        cases = [
            ({'name': 'X'}, 400, 'email or phone'),
            ({'name': 'X', 'email': 'not-an-email'}, 400, 'email'),
            ({'name': 'X', 'phone': '12'}, 400, 'phone'),
            ({'name': 'X', 'email': 'a@example.com', 'topic': 'nope'}, 400, 'topic'),
            ({'name': 'X', 'email': 'a@example.com', 'admin': True}, 400, 'admin: unknown field'),
            ({'name': 'X\nY', 'email': 'a@example.com'}, 400, 'name'),
            ({'email': 'a@example.com', 'policy': 'nonsense!'}, 400, 'policy'),
        ]
        for body, status, needle in cases:
            st, err, _ = self.chat('POST', '/v1/chat/sessions', body)
            self.assertEqual(st, status, (body, err))
            self.assertIn(needle, err['error']['message'], body)

    def test_visitor_token_is_checked(self):
        s, _ = self.open_session()
        other, _ = self.open_session()
        path = '/v1/chat/sessions/%s/messages' % s['session']
        # no token, a forged one, a tampered one: 401
        tampered = s['visitor_token'][:-1] + ('0' if s['visitor_token'][-1] != '0' else '1')
        for tok in (None, 'v1.' + 'a' * 32 + '.9999999999.' + 'b' * 64, tampered):
            st, err, _ = self.chat('POST', path, {'text': 'hi'}, token=tok)
            self.assertEqual(st, 401, err)
        # another visitor's valid token: 403
        st, err, _ = self.chat('POST', path, {'text': 'hi'}, token=other['visitor_token'])
        self.assertEqual(st, 403, err)
        # an unknown session: 404
        st, err, _ = self.chat('POST', '/v1/chat/sessions/S-%s/messages' % ('0' * 32),
                               {'text': 'hi'}, token=s['visitor_token'])
        self.assertEqual(st, 404, err)
        # a returning visitor keeps their identity
        again, _ = self.open_session(_token=s['visitor_token'])
        st, _, _ = self.chat('POST', '/v1/chat/sessions/%s/messages' % again['session'],
                             {'text': 'hi'}, token=s['visitor_token'])
        self.assertEqual(st, 201)

    def test_identity_hash_joins_the_customer_record(self):
        call = self.ingest(channel='voice', **{'from': '+34 600 900 100'},
                           customer={'policy': 'PL-2024-900100', 'name': 'Berta Ruiz'},
                           subject='Theft')
        s, _ = self.open_session(identity=identity('policy', 'PL-2024-900100', name='Berta Ruiz'))
        self.assertTrue(s['verified'])
        st, ix, _ = self.d.get('/v1/interactions/' + self.interaction_of(s['session']))
        self.assertEqual(ix['customer_id'], call['customer_id'])
        self.assertEqual(ix['case_id'], call['case_id'])
        self.assertTrue(ix['metadata']['verified'])
        self.assertEqual(ix['metadata']['identity'], 'policy')

    def test_forged_identity_hash_is_refused(self):
        forged = [identity('policy', 'PL-2024-900200', secret='another-secret-0123456789'),
                  dict(identity('policy', 'PL-2024-900200'), id='PL-2024-900201'),
                  dict(identity('policy', 'PL-2024-900200'), type='email')]
        for idn in forged:
            st, err, _ = self.chat('POST', '/v1/chat/sessions', {'identity': idn})
            self.assertIn(st, (400, 403), err)
        st, err, _ = self.chat('POST', '/v1/chat/sessions', {'identity': forged[0]})
        self.assertEqual(st, 403, err)
        self.assertIn('hash', err['error']['message'])
        st, err, _ = self.chat('POST', '/v1/chat/sessions',
                               {'identity': dict(type='policy', id='PL-2024-900200', hash='zz')})
        self.assertEqual(st, 400, err)
        # nothing was written for the refused sessions
        self.assertEqual(self.redis.cli('EXISTS', 'omnicc:{main}:idx:policy:PL-2024-900200'), '(integer) 0')

    def test_cors(self):
        # preflight from an allowed origin
        st, _, h = self.chat('OPTIONS', '/v1/chat/sessions', headers={
            'Origin': ORIGIN, 'Access-Control-Request-Method': 'POST',
            'Access-Control-Request-Headers': 'content-type,x-omnicc-visitor'})
        self.assertEqual(st, 204)
        self.assertEqual(h['access-control-allow-origin'], ORIGIN)
        self.assertEqual(h['access-control-allow-credentials'], 'true')
        self.assertIn('POST', h['access-control-allow-methods'])
        self.assertIn('X-Omnicc-Visitor', h['access-control-allow-headers'])
        self.assertIn('Origin', h['vary'])
        # the real request from it
        st, body, h = self.chat('POST', '/v1/chat/sessions',
                                {'name': 'C', 'email': 'cors@example.com'},
                                headers={'Origin': ORIGIN})
        self.assertEqual(st, 201, body)
        self.addCleanup(self.chat, 'POST', '/v1/chat/sessions/%s/close' % body['session'],
                        token=body['visitor_token'])
        self.assertEqual(h['access-control-allow-origin'], ORIGIN)
        # any other origin: refused, without CORS headers
        for origin in ('https://evil.example', 'null', ORIGIN + '.evil.example'):
            st, err, h = self.chat('POST', '/v1/chat/sessions',
                                   {'name': 'C', 'email': 'cors@example.com'},
                                   headers={'Origin': origin})
            self.assertEqual(st, 403, origin)
            self.assertEqual(err['error']['code'], 'origin_not_allowed')
            self.assertNotIn('access-control-allow-origin', h)
            st, _, h = self.chat('OPTIONS', '/v1/chat/sessions/%s/messages' % body['session'],
                                 headers={'Origin': origin})
            self.assertEqual(st, 403)
            self.assertNotIn('access-control-allow-origin', h)
        # our own origin needs nothing
        st, _, h = self.chat('GET', '/v1/chat/config',
                             headers={'Origin': 'http://127.0.0.1:%d' % self.d.port})
        self.assertEqual(st, 200)
        self.assertNotIn('access-control-allow-origin', h)

    def test_message_size_and_content(self):
        s, _ = self.open_session()
        self.send(s, 'é' * 1000)                         # 2000 bytes: the limit
        _, _ = self.send(s, 'é' * 1000 + 'x', expect=413)
        for bad in ('', '   \n ', 'bell\x07', {'text': 'x', 'extra': 1}):
            body = bad if isinstance(bad, dict) else {'text': bad}
            st, err, _ = self.chat('POST', '/v1/chat/sessions/%s/messages' % s['session'], body,
                                   token=s['visitor_token'])
            self.assertEqual(st, 400, (bad, err))
        # markup is stored and returned as the text it is (pages render it as text)
        html = '<b>hi</b><script>alert(1)</script>'
        m, _ = self.send(s, html)
        st, t, _ = self.chat('GET', '/v1/chat/sessions/%s/messages' % s['session'],
                             token=s['visitor_token'])
        self.assertEqual(st, 200)
        self.assertEqual([e['data']['text'] for e in t['events'] if e['id'] == m['id']], [html])

    def test_client_id_makes_retries_harmless(self):
        s, _ = self.open_session()
        a, _ = self.send(s, 'once', client_id='c-123')
        b, _ = self.send(s, 'once', client_id='c-123')
        self.assertEqual(a['id'], b['id'])
        self.assertTrue(b['duplicate'])
        st, t, _ = self.chat('GET', '/v1/chat/sessions/%s/messages' % s['session'],
                             token=s['visitor_token'])
        self.assertEqual(len([e for e in t['events'] if e['type'] == 'chat.message']), 1)

    def test_session_client_id_makes_a_retried_start_harmless(self):
        # the answer to the first start was lost (the visitor has no token yet): the retry
        # with the same client_id finds the same session, visitor and interaction
        email = 'retry-%s@example.com' % self.ext('v')
        cid = 'start-' + uuid.uuid4().hex
        a, _ = self.open_session(email=email, client_id=cid)
        self.assertFalse(a['duplicate'])
        b, _ = self.open_session(expect=200, email=email, client_id=cid)
        self.assertTrue(b['duplicate'])
        self.assertEqual(b['session'], a['session'])
        self.assertEqual(b['visitor_token'].split('.')[1], a['visitor_token'].split('.')[1])
        iid = self.interaction_of(a['session'])
        self.assertTrue(iid)
        st, c, _ = self.d.get('/v1/cases/%s?limit=100' % self.d.get('/v1/interactions/' + iid)[1]['case_id'])
        self.assertEqual(st, 200, c)
        created = [h for h in c['history'] if h['type'] == 'interaction.received']
        self.assertEqual(len(created), 1, c['history'])
        # the same client_id from another visitor is another chat, and a short one is refused
        other, _ = self.open_session(email=email, client_id=cid, _token=self.open_session()[0]['visitor_token'])
        self.assertNotEqual(other['session'], a['session'])
        st, err, _ = self.chat('POST', '/v1/chat/sessions', {'email': email, 'client_id': 'short'})
        self.assertEqual(st, 400, err)
        self.assertIn('client_id', err['error']['message'])

    def test_agent_conversation_and_visitor_stream(self):
        aid, tok = self.agent()
        s, _ = self.open_session(topic='claims')
        first, _ = self.send(s, 'hello, anyone?')
        ix = self.interaction_of(s['session'])
        path = '/v1/chat/sessions/%s/messages' % s['session']
        # before the offer: no agent may write
        st, err, _ = self.as_agent(tok, 'POST', path, {'text': 'too early'})
        self.assertEqual(st, 403, err)
        st, _, _ = self.as_agent(tok, 'PUT', '/v1/agents/%s/state' % aid, {'state': 'available'})
        self.assertEqual(st, 200)
        resv = self.redis.cli('HGET', 'omnicc:{main}:ix:' + ix, 'reservation')
        self.assertTrue(resv.startswith('R-'), resv)
        st, err, _ = self.as_agent(tok, 'POST', path, {'text': 'offered, not accepted'})
        self.assertEqual(st, 409, err)
        # the agent reads the transcript and the timeline of the offer
        st, t, _ = self.as_agent(tok, 'GET', path)
        self.assertEqual(st, 200, t)
        self.assertIn('hello, anyone?', [e['data'].get('text') for e in t['events']])
        st, tl, _ = self.as_agent(tok, 'GET', '/v1/interactions/%s/timeline' % ix)
        self.assertEqual(st, 200, tl)
        self.assertIn('chat.message', [e['type'] for e in tl['timeline']])
        st, _, _ = self.as_agent(tok, 'POST', '/v1/reservations/%s/accept' % resv)
        self.assertEqual(st, 200)
        st, reply, _ = self.as_agent(tok, 'POST', path, {'text': 'Hi, this is your agent'})
        self.assertEqual(st, 201, reply)
        # another agent may neither write nor read
        other, other_tok = self.agent()
        for method, body in (('POST', {'text': 'intruder'}), ('GET', None)):
            st, err, _ = self.as_agent(other_tok, method, path, body)
            self.assertEqual(st, 403, err)
        st, err, _ = self.as_agent(other_tok, 'GET', '/v1/interactions/%s/timeline' % ix)
        self.assertEqual(st, 403, err)
        # the visitor's stream replays after Last-Event-ID and never names agents
        frames = self.sse('/v1/chat/sessions/%s/events' % s['session'],
                          {'X-Omnicc-Visitor': s['visitor_token'], 'Last-Event-ID': first['id']},
                          until='chat.message')
        types = [f['event'] for f in frames]
        self.assertEqual(types, ['chat.agent_joined', 'chat.message'], frames)
        self.assertEqual(frames[-1]['id'], reply['id'])
        self.assertEqual(frames[-1]['data']['data']['from'], 'agent')
        self.assertEqual(frames[-1]['data']['agent'], '')
        self.assertNotIn(aid, json.dumps(frames))
        # the agent's stream has the visitor's messages
        v, _ = self.send(s, 'thanks')
        frames = self.sse('/v1/agents/%s/events' % aid,
                          {'Authorization': 'Bearer ' + tok, 'Last-Event-ID': reply['id']},
                          until='chat.message')
        self.assertEqual(frames[-1]['id'], v['id'])
        self.assertEqual(frames[-1]['data']['data']['text'], 'thanks')
        # wrap-up ends the chat for the visitor
        st, _, _ = self.as_agent(tok, 'POST', '/v1/interactions/%s/wrapup' % ix,
                                 {'disposition': 'resolved'})
        self.assertEqual(st, 200)
        frames = self.sse('/v1/chat/sessions/%s/events' % s['session'],
                          {'X-Omnicc-Visitor': s['visitor_token'], 'Last-Event-ID': v['id']},
                          until='chat.ended')
        self.assertEqual([f['event'] for f in frames], ['chat.agent_left', 'chat.ended'])
        self.assertEqual(frames[-1]['data']['data']['by'], 'agent')
        self.send(s, 'after the end', expect=409)

    def test_transfer_tells_the_visitor(self):
        a1, t1 = self.agent()
        s, _ = self.open_session(topic='claims')
        ix = self.interaction_of(s['session'])
        self.as_agent(t1, 'PUT', '/v1/agents/%s/state' % a1, {'state': 'available'})
        resv = self.redis.cli('HGET', 'omnicc:{main}:ix:' + ix, 'reservation')
        st, _, _ = self.as_agent(t1, 'POST', '/v1/reservations/%s/accept' % resv)
        self.assertEqual(st, 200)
        st, _, _ = self.as_agent(t1, 'POST', '/v1/chat/sessions/%s/messages' % s['session'],
                                 {'text': 'let me pass you on'})
        self.assertEqual(st, 201)
        st, _, _ = self.as_agent(t1, 'PUT', '/v1/agents/%s/state' % a1, {'state': 'away'})
        a2, t2 = self.agent()
        st, body, _ = self.as_agent(t1, 'POST', '/v1/interactions/%s/transfer' % ix,
                                    {'queue': 'default'})
        self.assertEqual(st, 200, body)
        self.as_agent(t2, 'PUT', '/v1/agents/%s/state' % a2, {'state': 'available'})
        harness.wait_for(lambda: self.redis.cli('HGET', 'omnicc:{main}:ix:' + ix, 'agent') == a2,
                         5, 'offered to the second agent')
        resv = self.redis.cli('HGET', 'omnicc:{main}:ix:' + ix, 'reservation')
        st, _, _ = self.as_agent(t2, 'POST', '/v1/reservations/%s/accept' % resv)
        self.assertEqual(st, 200)
        st, m, _ = self.as_agent(t2, 'POST', '/v1/chat/sessions/%s/messages' % s['session'],
                                 {'text': 'hello from the second agent'})
        self.assertEqual(st, 201, m)
        # the first agent may no longer write
        st, _, _ = self.as_agent(t1, 'POST', '/v1/chat/sessions/%s/messages' % s['session'],
                                 {'text': 'me again'})
        self.assertEqual(st, 403)
        frames = self.sse('/v1/chat/sessions/%s/events' % s['session'],
                          {'X-Omnicc-Visitor': s['visitor_token'], 'Last-Event-ID': '0-1'},
                          until='chat.message', timeout=5)
        # read on until the second agent's message
        frames = self.sse('/v1/chat/sessions/%s/events' % s['session'],
                          {'X-Omnicc-Visitor': s['visitor_token'], 'Last-Event-ID': frames[-1]['id']},
                          until='chat.message', timeout=5)
        self.assertEqual([f['event'] for f in frames],
                         ['chat.agent_left', 'chat.agent_joined', 'chat.message'], frames)
        self.assertEqual(frames[0]['data']['data']['reason'], 'transferred')
        self.assertEqual(frames[-1]['data']['data']['text'], 'hello from the second agent')

    def test_transcript_unavailable_without_smtp(self):
        s, _ = self.open_session()
        st, body, _ = self.chat('POST', '/v1/chat/sessions/%s/close' % s['session'],
                                {'transcript': True}, token=s['visitor_token'])
        self.assertEqual(st, 200, body)
        self.assertEqual(body['transcript'], 'unavailable')

    def test_customer_closing_while_waiting_abandons(self):
        s, _ = self.open_session(topic='general')
        ix = self.interaction_of(s['session'])
        st, body, _ = self.chat('POST', '/v1/chat/sessions/%s/close' % s['session'],
                                token=s['visitor_token'])
        self.assertEqual((st, body['state']), (200, 'ended'))
        harness.wait_for(lambda: self.d.get('/v1/interactions/' + ix)[1]['state'] == 'abandoned',
                         5, 'abandoned')
        self.send(s, 'still there?', expect=409)

    def test_customer_leaving_while_waiting_abandons(self):
        s, _ = self.open_session(topic='general')
        ix = self.interaction_of(s['session'])
        # the stream opens and closes (the tab is gone); leave_grace is 1 s here
        self.sse('/v1/chat/sessions/%s/events' % s['session'],
                 {'X-Omnicc-Visitor': s['visitor_token'], 'Last-Event-ID': '0-1'},
                 until='chat.opened', timeout=2)
        harness.wait_for(lambda: self.d.get('/v1/interactions/' + ix)[1]['state'] == 'abandoned',
                         10, 'abandoned after the visitor left')

    def test_agents_write_case_notes_as_themselves(self):
        aid, tok = self.agent()
        other, _ = self.agent()
        r = self.ingest(customer={'policy': 'PL-2024-900300'})
        path = '/v1/cases/%s/notes' % r['case_id']
        st, body, _ = self.as_agent(tok, 'POST', path, {'text': 'called back', 'author': aid})
        self.assertEqual(st, 200, body)
        st, body, _ = self.as_agent(tok, 'POST', path, {'text': 'as someone else', 'author': other})
        self.assertEqual(st, 403, body)
        st, body, _ = self.as_agent(tok, 'POST', path, {'text': 'anonymous'})
        self.assertEqual(st, 400, body)
        st, body, _ = self.as_agent('not-a-token', 'POST', path, {'text': 'x', 'author': aid})
        self.assertEqual(st, 403, body)
        st, case, _ = self.d.get('/v1/cases/' + r['case_id'])
        notes = [(h['by'], h['text']) for h in case['history'] if h['type'] == 'note']
        self.assertEqual(notes, [(aid, 'called back')])

    def test_static_pages_and_path_validation(self):
        for path, ctype in (('/chat/', 'text/html'), ('/chat/widget.js', 'text/javascript'),
                            ('/chat/widget.css', 'text/css'), ('/agent/', 'text/html'),
                            ('/agent/agent.js', 'text/javascript'), ('/supervisor/', 'text/html'),
                            ('/common/omnicc.js', 'text/javascript')):
            st, body, h = self.d.request('GET', path, auth=False, raw=True)
            self.assertEqual(st, 200, path)
            self.assertTrue(h['content-type'].startswith(ctype), (path, h['content-type']))
            self.assertEqual(h['x-content-type-options'], 'nosniff')
            if ctype == 'text/html':
                self.assertIn("script-src 'self'", h['content-security-policy'])
        st, _, h = self.d.request('GET', '/agent/', auth=False, raw=True)
        self.assertIn("frame-ancestors 'none'", h['content-security-policy'])
        # attachments fetched with the agent's token are shown as blob: images, there only
        self.assertIn("img-src 'self' data: blob:;", h['content-security-policy'])
        st, _, h = self.d.request('GET', '/chat/', auth=False, raw=True)
        self.assertIn(ORIGIN, h['content-security-policy'])
        self.assertIn("img-src 'self' data:;", h['content-security-policy'])
        st, _, h = self.d.request('GET', '/agent', auth=False, raw=True)
        self.assertEqual((st, h['location']), (301, '/agent/'))
        for bad in ('/chat/..%2fagent%2fagent.js', '/chat/%2e%2e', '/chat/.hidden.js',
                    '/chat/missing.js', '/chat/widget.js%00.css', '/chat/index.php',
                    '/agent/..', '/common/%2e%2e%2f%2e%2e%2fmeson.build', '/chat/a/b.js',
                    '/chat/widget', '/static/../README.md', '/agent/agent.js/'):
            st, _, _ = self.d.request('GET', bad, auth=False, raw=True)
            self.assertEqual(st, 404, bad)


class TranscriptTest(ChatCase):
    """End of chat with the transcript by email, through the email outbox to a real SMTP
    server (aiosmtpd, smtp_sink.py)."""

    @classmethod
    def setUpClass(cls):
        cls.mail_tmp = tempfile.mkdtemp(prefix='omnicc-transcript-')
        cls.smtp = SmtpSink(cls.mail_tmp)
        cls.chat_config = ('[email]\nfrom_address = chat@insurer.example\nfrom_name = Acme Chat\n'
                           'smtp_url = smtp://127.0.0.1:%d\nsmtp_starttls = no\n'
                           'retry_base = 1\nretry_max = 1\noutbox_poll_ms = 100\n' % cls.smtp.port)
        try:
            super().setUpClass()
        except Exception:
            cls.smtp.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.smtp.stop()
            shutil.rmtree(cls.mail_tmp, ignore_errors=True)

    def to(self, addr):
        return [m for m in self.smtp.messages() if m['To'] and addr in str(m['To'])]

    def close(self, s, body=None, token=None):
        return self.chat('POST', '/v1/chat/sessions/%s/close' % s['session'], body,
                         token=token or s['visitor_token'])

    def test_transcript_sent_once_with_the_messages(self):
        aid, tok = self.agent()
        addr = 'ana.transcript-%s@example.com' % self.ext('t')
        s, _ = self.open_session(email=addr, name='Ana García', topic='claims')
        self.send(s, 'My windscreen is cracked')
        ix = self.interaction_of(s['session'])
        st, _, _ = self.as_agent(tok, 'PUT', '/v1/agents/%s/state' % aid, {'state': 'available'})
        self.assertEqual(st, 200)
        resv = self.redis.cli('HGET', 'omnicc:{main}:ix:' + ix, 'reservation')
        st, _, _ = self.as_agent(tok, 'POST', '/v1/reservations/%s/accept' % resv)
        self.assertEqual(st, 200)
        path = '/v1/chat/sessions/%s/messages' % s['session']
        st, reply, _ = self.as_agent(tok, 'POST', path, {'text': 'We will replace it, Ana.'})
        self.assertEqual(st, 201, reply)
        self.send(s, 'Thank you!')
        # only the visitor may ask, and only with a well-formed body
        st, err, _ = self.as_agent(tok, 'POST', '/v1/chat/sessions/%s/close' % s['session'],
                                   {'transcript': True})
        self.assertEqual(st, 400, err)
        st, err, _ = self.close(s, {'transcript': 'yes'})
        self.assertEqual(st, 400, err)
        st, body, _ = self.close(s, {'transcript': True})
        self.assertEqual(st, 200, body)
        self.assertEqual(body['transcript'], 'requested')
        # asked again (the end screen's checkbox after the close): still one email
        st, body, _ = self.close(s, {'transcript': True})
        self.assertEqual(st, 200, body)
        harness.wait_for(lambda: self.to(addr), 20, 'the transcript by SMTP')
        time.sleep(1.5)
        got = self.to(addr)
        self.assertEqual(len(got), 1, [str(m['Subject']) for m in got])
        m = got[0]
        self.assertIn('chat@insurer.example', str(m['From']))
        case_id = self.redis.cli('HGET', 'omnicc:{main}:ix:' + ix, 'case_id')
        self.assertIn('[#%s]' % case_id, str(m['Subject']))
        self.assertEqual(m.get_content_type(), 'text/plain')
        text = m.get_content()
        lines = [l for l in text.splitlines() if l.startswith('[')]
        self.assertEqual(len(lines), 3, text)
        self.assertRegex(lines[0], r'^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\] Ana García \(you\): '
                                   r'My windscreen is cracked$')
        self.assertRegex(lines[1], r'UTC\] Alex Doe: We will replace it, Ana\.$')
        self.assertRegex(lines[2], r'UTC\] Ana García \(you\): Thank you!$')
        # recorded like any outbound email: the case history and the delivery state
        mid = self.redis.cli('HGET', 'omnicc:{main}:chat:' + s['session'], 'transcript')
        self.assertEqual(m['Message-ID'], mid)
        harness.wait_for(lambda: self.redis.cli('HGET', 'omnicc:{main}:msgout:' + mid,
                                                'status') == 'sent', 20, 'status sent')

    def test_close_says_when_no_email_is_known(self):
        # a visitor who gave only a phone number, of no customer with an email: the close
        # says so, and nothing is queued
        s, _ = self.open_session(email=None, phone='+34 6%08d' % (int(time.time() * 1000) % 10 ** 8))
        self.send(s, 'call me instead')
        st, body, _ = self.close(s, {'transcript': True})
        self.assertEqual(st, 200, body)
        self.assertEqual(body, {'session': s['session'], 'state': 'ended', 'transcript': 'no_email'})
        self.assertEqual(self.redis.cli('HGET', 'omnicc:{main}:chat:' + s['session'],
                                        'transcript'), '(nil)')

    def test_no_transcript_unless_asked_nor_to_automatic_addresses(self):
        addr = 'plain-%s@example.com' % self.ext('t')
        s, _ = self.open_session(email=addr)
        self.send(s, 'just a question')
        st, body, _ = self.close(s)
        self.assertEqual(st, 200, body)
        self.assertNotIn('transcript', body)
        auto = 'noreply-%s@example.com' % self.ext('t')
        s2, _ = self.open_session(email=auto)
        self.send(s2, 'from a robot')
        st, body, _ = self.close(s2, {'transcript': True})
        self.assertEqual(st, 200, body)
        self.assertEqual(body['transcript'], 'automatic')
        time.sleep(2)
        self.assertEqual(self.to(addr), [])
        self.assertEqual(self.to(auto), [])
        self.assertEqual(self.redis.cli('HGET', 'omnicc:{main}:chat:' + s2['session'],
                                        'transcript'), '(nil)')


class RateLimitTest(ChatCase):
    chat_config = 'visitor_rate = 5\nip_session_rate = 4\nip_rate = 60\nmax_message = 100\n'

    def test_limits(self):
        # sessions per address per hour (counted in Redis)
        statuses = []
        first = None
        for _ in range(10):
            st, body, h = self.chat('POST', '/v1/chat/sessions',
                                    {'name': 'R', 'email': 'rate@example.com'})
            statuses.append(st)
            if st == 201 and not first:
                first = body
            if st == 429:
                self.assertIn('retry-after', h)
        self.assertIn(429, statuses)
        self.assertLessEqual(statuses.count(201), 8)
        # messages per visitor per minute
        statuses = []
        for i in range(12):
            st, body, h = self.chat('POST', '/v1/chat/sessions/%s/messages' % first['session'],
                                    {'text': 'm%d' % i}, token=first['visitor_token'])
            statuses.append(st)
        self.assertIn(429, statuses)
        self.assertLessEqual(statuses.count(201), 10)
        # the message size limit is configurable
        st, _, _ = self.chat('POST', '/v1/chat/sessions/%s/messages' % first['session'],
                             {'text': 'x' * 101}, token=first['visitor_token'])
        self.assertEqual(st, 413)
        # requests per address per minute (in memory)
        statuses = [self.chat('GET', '/v1/chat/config')[0] for _ in range(130)]
        self.assertIn(429, statuses)
        self.assertLessEqual(statuses.count(200), 120)


if __name__ == '__main__':
    unittest.main()
