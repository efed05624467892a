"""The phone channel against a real redis-server and omniccd: Twilio webhooks (signatures,
the TwiML IVR, the hold loop, status callbacks, hang-ups, callbacks placed through a local
fake provider) and the generic CTI webhook (signatures, replay window, queue/forward/reject).

Requests are signed here the way Twilio signs them (checked first against the worked example
of Twilio's "Webhooks security" page); the C implementation is checked against the published
vectors themselves in tests/unit/test_voice.c. Every queue requires a skill of its own, so
each test's agents only see its own calls."""
import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness

AUTH_TOKEN = 'twilio-test-auth-token-5f2a9c'
ACCOUNT = 'AC' + 'a1' * 16
CTI_SECRET = 'cti-shared-secret-0b7e41d2'
PUBLIC = 'https://cc.example.test/omnicc'  # behind a proxy that adds a path prefix
COMPANY = '+34910000000'
INCOMING = '/v1/voice/twilio/incoming'
STATUS = '/v1/voice/twilio/status'
FORM = 'application/x-www-form-urlencoded'


def twilio_signature(token, url, params):
    """X-Twilio-Signature: HMAC-SHA1 over the URL and the parameters sorted by name."""
    data = url + ''.join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def cti_signature(secret, ts, body):
    return 'sha256=' + hmac.new(secret.encode(), ('%s.' % ts).encode() + body,
                                hashlib.sha256).hexdigest()


class FakeProvider:
    """The provider's REST API for placing calls: records each request, answers 201 with a
    call SID like Twilio's Calls resource, or first the error statuses put in `answers`
    (with Twilio's JSON error body)."""

    def __init__(self):
        self.requests = queue.Queue()
        self.answers = queue.Queue()
        self.count = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n).decode()
                outer.count += 1
                sid = 'CA%032d' % (900000 + outer.count)
                try:
                    status = outer.answers.get_nowait()
                except queue.Empty:
                    status = 201
                outer.requests.put({'path': self.path, 'auth': self.headers.get('Authorization'),
                                    'content_type': self.headers.get('Content-Type'),
                                    'form': urllib.parse.parse_qs(body), 'sid': sid,
                                    'status': status})
                out = json.dumps({'sid': sid, 'status': 'queued'} if status == 201 else
                                 {'code': 20000 + status, 'message': 'refused by the test',
                                  'status': status}).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class SSE:
    """An agent's (or the supervisor's) event stream, read by a thread."""

    def __init__(self, d, path, token):
        self.conn = http.client.HTTPConnection('127.0.0.1', d.port, timeout=300)
        self.conn.request('GET', path, headers={'Authorization': 'Bearer ' + token})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        self.events = queue.Queue()
        self.live = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        harness.wait_for(self.live.is_set, 15, 'SSE live')

    def _run(self):
        data = None
        try:
            for raw in self.resp:
                line = raw.decode().rstrip('\r\n')
                if line == ': live':
                    self.live.set()
                elif line.startswith('data: '):
                    data = json.loads(line[6:])
                elif line == '' and data is not None:
                    self.events.put(data)
                    data = None
        except Exception:  # closed under the reader (close())
            pass
        self.events.put(None)

    def wait(self, etype, timeout=20, pred=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                ev = self.events.get(timeout=max(0.05, deadline - time.time()))
            except queue.Empty:
                break
            if ev is None:
                break
            if ev['type'] == etype and (pred is None or pred(ev)):
                return ev
        return None

    def close(self):
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self.conn.close()
        self.thread.join(10)


def twiml(payload):
    root = ET.fromstring(payload)
    assert root.tag == 'Response', payload
    return root


def qs(url):
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


class Call:
    """One caller, as Twilio drives it: each request signed, each TwiML link followed."""

    def __init__(self, test, sid, caller, called=COMPANY):
        self.t, self.sid, self.caller, self.called = test, sid, caller, called

    def params(self, **extra):
        p = {'AccountSid': ACCOUNT, 'ApiVersion': '2010-04-01', 'CallSid': self.sid,
             'CallStatus': 'in-progress', 'Called': self.called, 'Caller': self.caller,
             'Direction': 'inbound', 'From': self.caller, 'FromCountry': 'ES', 'To': self.called}
        p.update(extra)
        return p

    def post(self, url, params, expect=200, sign=True, signature=None):
        assert url.startswith(PUBLIC), url
        path = url[len(PUBLIC):]
        headers = {}
        if sign:
            headers['X-Twilio-Signature'] = signature or twilio_signature(AUTH_TOKEN, url,
                                                                           params.items())
        st, body, _ = self.t.d.request('POST', path, urllib.parse.urlencode(params), auth=False,
                                       headers=headers, content_type=FORM, raw=True)
        self.t.assertEqual(st, expect, body)
        return body

    def webhook(self, url, **extra):
        return twiml(self.post(url, self.params(**extra)))

    def start(self):
        return self.webhook(PUBLIC + INCOMING)

    def status(self, status, ix=None, leg=None, expect=204, **extra):
        q = {}
        if ix:
            q['ix'] = ix
        if leg:
            q['leg'] = leg
        url = PUBLIC + STATUS + ('?' + urllib.parse.urlencode(q) if q else '')
        return self.post(url, self.params(CallStatus=status, **extra), expect=expect)

    def queue_via_menu(self, key, policy_digits=''):
        """start -> menu choice -> policy number -> the first hold answer (and the ix)."""
        root = self.start()
        menu = root.find('Gather').get('action')
        root = self.webhook(menu, Digits=key)
        gather = root.find('Gather')
        if gather is not None and 'step=policy' in gather.get('action'):
            root = self.webhook(gather.get('action'), Digits=policy_digits + '#')
        redirect = root.find('Redirect')
        self.t.assertIsNotNone(redirect, ET.tostring(root))
        return root, qs(redirect.text)['ix']

    def wait_step(self, ix, pos=-1, cbo=False):
        url = PUBLIC + INCOMING + '?step=wait&ix=%s&pos=%d%s' % (ix, pos, '&cbo=1' if cbo else '')
        return self.webhook(url)


class VoiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-voice-')
        cls.provider = FakeProvider()
        token_file = os.path.join(cls.tmp, 'twilio-token')
        cti_file = os.path.join(cls.tmp, 'cti-secret')
        with open(token_file, 'w') as f:
            f.write(AUTH_TOKEN + '\n')
        with open(cti_file, 'w') as f:
            f.write(CTI_SECRET + '\n')
        queues = ''.join('[queue %s]\nchannels = voice\nskills = %s\n%s' % (q, skill, extra)
                         for q, skill, extra in [
                             ('default', 'nobody', ''), ('claims', 'claims', ''),
                             ('sales', 'sales', ''), ('bulk', 'bulk', ''), ('cti', 'cti', ''),
                             ('cbq', 'cb', 'max_wait = 1\non_max_wait = callback\n'),
                             ('cbr', 'cbr', 'max_wait = 1\non_max_wait = callback\n'),
                             ('closing', 'closing', 'max_wait = 1\non_max_wait = close\n')])
        config = queues + (
            '[routing]\noffer_timeout_voice = 60\n'
            '[voice]\nauth_token_file = %s\naccount_sid = %s\npublic_url = %s\n'
            'api_base = http://127.0.0.1:%d\ncti_secret_file = %s\n'
            'menu = 1=claims@claims(accident,damage) 2=policies@sales 4=callback@cbq '
            '5=bulk@bulk 6=closing@closing 7=cti@cti 8=retry@cbr 0=operator\n'
            'ask_policy = yes\npolicy_format = PL-####-######\nhold_seconds = 5\nrecord = yes\n'
            % (token_file, ACCOUNT, PUBLIC, cls.provider.port, cti_file))
        cls.redis = harness.RedisServer(cls.tmp)
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url, config)

    @classmethod
    def tearDownClass(cls):
        harness.stop_servers(cls, cls.provider)

    _seq = 0

    def call(self, caller=None):
        VoiceTest._seq += 1
        n = VoiceTest._seq
        return Call(self, 'CA%032x' % (os.getpid() * 100000 + n), caller or '+3460%07d' % n)

    # ---- REST helpers (agents) ----

    def agent(self, aid, skill, softphone=None, available=True):
        body = {'id': aid, 'name': aid, 'skills': {skill: 1}, 'capacity': {'voice': 1}}
        if softphone is not None:
            body['softphone'] = softphone
        st, a, _ = self.d.post('/v1/agents', body)
        self.assertIn(st, (200, 201), a)
        st, tok, _ = self.d.post('/v1/agents/%s/tokens' % aid, None)
        self.assertEqual(st, 201, tok)
        if available:
            self.presence(aid, 'available', tok['token'])
        self.addCleanup(self.presence, aid, 'offline', tok['token'])
        return tok['token']

    def presence(self, aid, state, token):
        st, out, _ = self.d.request('PUT', '/v1/agents/%s/state' % aid, {'state': state},
                                    headers={'Authorization': 'Bearer ' + token})
        self.assertEqual(st, 200, out)

    def ix(self, iid):
        st, ix, _ = self.d.get('/v1/interactions/' + iid)
        self.assertEqual(st, 200, ix)
        return ix

    def wait_state(self, iid, state, timeout=15):
        box = {}

        def ok():
            box['ix'] = self.ix(iid)
            return box['ix']['state'] == state
        try:
            harness.wait_for(ok, timeout, '%s %s' % (iid, state))
        except AssertionError as e:
            raise AssertionError('%s; last: %r' % (e, box.get('ix'))) from None
        return box['ix']

    def accept(self, resv, token, expect=200):
        st, out, _ = self.d.request('POST', '/v1/reservations/%s/accept' % resv, None,
                                    headers={'Authorization': 'Bearer ' + token})
        self.assertEqual(st, expect, out)
        return out

    def history(self, case_id):
        st, case, _ = self.d.get('/v1/cases/%s?limit=500' % case_id)
        self.assertEqual(st, 200, case)
        return case['history']

    def dbsize(self):
        return self.redis.cli('DBSIZE')

    # ---- signatures ----

    def test_a_python_signer_matches_twilios_documented_example(self):
        # Twilio's "Webhooks security" page: auth token 12345 and this request
        params = [('CallSid', 'CA1234567890ABCDE'), ('Caller', '+12349013030'), ('Digits', '1234'),
                  ('From', '+12349013030'), ('To', '+18005551212')]
        self.assertEqual(twilio_signature('12345', 'https://mycompany.com/myapp.php?foo=1&bar=2',
                                          params), '0/KCTR6DLpKmkAf8muzZqo1nDgQ=')

    def test_signature_valid_tampered_wrong_url_missing(self):
        c = self.call()
        url = PUBLIC + INCOMING + '?step=menu&try=0'
        params = c.params(Digits='1')
        good = twilio_signature(AUTH_TOKEN, url, params.items())
        before = self.dbsize()
        # tampered parameter: signed for Digits=1, sent with Digits=2
        c.post(url, dict(params, Digits='2'), expect=403, signature=good)
        # signed for another URL (the daemon's own address instead of the public one)
        wrong = 'http://127.0.0.1:%d%s?step=menu&try=0' % (self.d.port, INCOMING)
        c.post(url, params, expect=403, signature=twilio_signature(AUTH_TOKEN, wrong,
                                                                   params.items()))
        # signed with another token, and no header at all
        c.post(url, params, expect=403, signature=twilio_signature('x' * 32, url, params.items()))
        c.post(url, params, expect=403, sign=False)
        # another account, correctly signed: refused too
        other = dict(params, AccountSid='AC' + 'b2' * 16)
        c.post(url, other, expect=403)
        self.assertEqual(self.dbsize(), before, 'a refused webhook wrote something')
        # the status callback is checked the same way
        st, _, _ = self.d.request('POST', STATUS, urllib.parse.urlencode(c.params()), auth=False,
                                  content_type=FORM, raw=True)
        self.assertEqual(st, 403)
        # and the good one gets TwiML (the policy question, ask_policy = yes)
        root = twiml(c.post(url, params, signature=good))
        self.assertIn('step=policy', root.find('Gather').get('action'))
        # Twilio's SDKs accept the URL with the scheme's default port added
        ported = PUBLIC.replace('cc.example.test', 'cc.example.test:443') + INCOMING
        c.post(PUBLIC + INCOMING, c.params(),
               signature=twilio_signature(AUTH_TOKEN, ported, c.params().items()))

    def test_cti_signature_and_replay_window(self):
        body = json.dumps({'event': 'newCall', 'call_id': 'pbx-replay-1', 'from': '+34600999001',
                           'to': COMPANY, 'intent': 'cti'}).encode()
        now = int(time.time())

        def post(ts, sig, expect):
            h = {}
            if ts is not None:
                h['X-Omnicc-Timestamp'] = str(ts)
            if sig is not None:
                h['X-Omnicc-Signature'] = sig
            st, out, _ = self.d.request('POST', '/v1/voice/cti', body, auth=False, headers=h,
                                        content_type='application/json')
            self.assertEqual(st, expect, out)
            return out
        before = self.dbsize()
        old = now - 301
        out = post(old, cti_signature(CTI_SECRET, old, body), 403)  # replay outside the window
        self.assertIn('window', out['error']['message'])
        future = now + 400
        post(future, cti_signature(CTI_SECRET, future, body), 403)
        post(now, cti_signature('wrong-secret', now, body), 403)
        post(now, cti_signature(CTI_SECRET, now - 1, body), 403)  # signed for another timestamp
        post(now, None, 403)
        post(None, cti_signature(CTI_SECRET, now, body), 403)
        self.assertEqual(self.dbsize(), before)
        out = post(now, cti_signature(CTI_SECRET, now, body), 200)
        self.assertEqual(out['action'], 'queue')
        # replayed inside the window: the same call, nothing new
        again = post(now, cti_signature(CTI_SECRET, now, body), 200)
        self.assertEqual(again['interaction'], out['interaction'])
        self.assertTrue(again['duplicate'])

    # ---- the IVR ----

    def test_ivr_menu_policy_and_queue(self):
        c = self.call('+34 600 700 001')
        root = c.start()
        gather = root.find('Gather')
        self.assertEqual(gather.get('input'), 'dtmf speech')
        self.assertTrue(gather.get('action').startswith(PUBLIC + INCOMING + '?step=menu'))
        said = ' '.join(s.text for s in gather.iter('Say'))
        self.assertIn('For claims, press 1.', said)
        self.assertIn('For operator, press 0.', said)
        # an unknown key repeats the menu; speech picks by keyword
        root = c.webhook(gather.get('action'), Digits='9')
        self.assertIn('try=1', root.find('Gather').get('action'))
        root = c.webhook(root.find('Gather').get('action'),
                         SpeechResult='I had a car accident yesterday', Confidence='0.9')
        policy = root.find('Gather')
        self.assertIn('step=policy', policy.get('action'))
        self.assertEqual(policy.get('finishOnKey'), '#')
        before = self.dbsize()
        root = c.webhook(policy.get('action'), Digits='2024700001#')
        redirect = root.find('Redirect').text
        self.assertIn('step=wait', redirect)
        self.assertEqual(root.find('Pause').get('length'), '5')
        said = ' '.join(s.text for s in root.iter('Say'))
        self.assertIn('You are number 1 in the queue.', said)
        iid = qs(redirect)['ix']
        ix = self.ix(iid)
        self.assertEqual((ix['channel'], ix['queue'], ix['state'], ix['external_id']),
                         ('voice', 'claims', 'queued', c.sid))
        self.assertEqual(ix['subject'], 'Phone call: claims (policy PL-2024-700001)')
        ivr = ix['metadata']['ivr']
        self.assertEqual(ivr['intent'], 'claims')
        self.assertEqual(ivr['policy'], 'PL-2024-700001')
        self.assertEqual(ivr['path'][0], {'step': 'menu', 'key': '1', 'intent': 'claims',
                                          'via': 'speech'})
        st, cust, _ = self.d.get('/v1/customers/' + ix['customer_id'])
        self.assertIn({'type': 'phone', 'value': '+34600700001'}, cust['identifiers'])
        self.assertIn({'type': 'policy', 'value': 'PL-2024-700001'}, cust['identifiers'])
        hist = self.history(ix['case_id'])
        ivr_events = [h for h in hist if h['type'] == 'voice.ivr']
        self.assertEqual(len(ivr_events), 1)
        self.assertEqual(ivr_events[0]['intent'], 'claims')
        # Twilio retries the same webhook: the same interaction, nothing new written
        keys, n_hist = self.dbsize(), len(hist)
        self.assertNotEqual(keys, before)
        root = c.webhook(policy.get('action'), Digits='2024700001#')
        self.assertEqual(qs(root.find('Redirect').text)['ix'], iid)
        self.assertEqual(self.dbsize(), keys)
        self.assertEqual(len(self.history(ix['case_id'])), n_hist)
        # a wrong policy number is asked again once, then the call goes on without it
        c2 = self.call()
        root = c2.start()
        root = c2.webhook(root.find('Gather').get('action'), Digits='2')
        root = c2.webhook(root.find('Gather').get('action'), Digits='12#')
        self.assertIn('try=1', root.find('Gather').get('action'))
        root = c2.webhook(root.find('Gather').get('action'), Digits='34#')
        ix2 = self.ix(qs(root.find('Redirect').text)['ix'])
        self.assertEqual(ix2['queue'], 'sales')
        self.assertEqual(ix2['metadata']['ivr']['path'][1], {'step': 'policy', 'result': 'invalid',
                                                             'via': 'dtmf'})
        c.status('completed')
        c2.status('completed')

    # ---- status callbacks, agent connection, history ----

    def test_full_status_sequence_and_case_history(self):
        token = self.agent('va-seq', 'claims', softphone='sip:va-seq@pbx.example.com')
        c = self.call()
        for st in ('queued', 'ringing', 'in-progress'):  # before the IVR: nothing queued yet
            c.status(st)
        _, iid = c.queue_via_menu('1', '2024700002')
        offered = self.wait_state(iid, 'offered')
        self.assertEqual(offered['agent'], 'va-seq')
        root = c.wait_step(iid, pos=1)  # still holding while the offer rings
        self.assertIsNotNone(root.find('Redirect'))
        self.accept(offered['reservation'], token)
        root = c.wait_step(iid, pos=1)
        dial = root.find('Dial')
        self.assertEqual(dial.find('Sip').text, 'sip:va-seq@pbx.example.com')
        self.assertEqual(dial.get('record'), 'record-from-answer-dual')
        self.assertIn('step=dialed', dial.get('action'))
        c.status('in-progress', ix=iid)  # a status after queueing: in the history
        c.status('in-progress', ix=iid)  # retried: nothing new
        rec = 'https://api.twilio.com/2010-04-01/Accounts/%s/Recordings/RE%s' % (ACCOUNT, 'c' * 32)
        c.post(PUBLIC + STATUS + '?ix=' + iid,
               c.params(RecordingUrl=rec, RecordingSid='RE' + 'c' * 32, RecordingStatus='completed',
                        RecordingDuration='41', CallStatus=''), expect=204)
        root = c.webhook(dial.get('action'), DialCallStatus='completed', DialCallDuration='42',
                         DialCallSid='CA' + 'd' * 32)
        self.assertIsNotNone(root.find('Hangup'))
        for _ in range(2):  # the final status, then Twilio's retry of it
            c.status('completed', CallDuration='95')
        ix = self.ix(iid)
        self.assertEqual(ix['state'], 'assigned')  # the agent still wraps up
        hist = self.history(ix['case_id'])
        types = [h['type'] for h in hist]
        for t in ('interaction.received', 'voice.ivr', 'offer.created', 'offer.accepted',
                  'voice.connected', 'voice.status', 'voice.recording', 'voice.dial_ended',
                  'voice.call_ended'):
            self.assertEqual(types.count(t), 1, (t, types))
        ended = [h for h in hist if h['type'] == 'voice.call_ended'][0]
        self.assertEqual(ended['disposition'], 'answered')
        self.assertEqual(ended['agent'], 'va-seq')
        self.assertEqual(ended['talk_s'], '42')
        self.assertEqual(ended['duration_s'], '95')
        self.assertEqual(ended['recording_url'], rec)
        self.assertGreaterEqual(int(ended['wait_ms']), 0)
        self.assertEqual(json.loads(ended['ivr'])['intent'], 'claims')
        st, out, _ = self.d.request('POST', '/v1/interactions/%s/wrapup' % iid,
                                    {'disposition': 'claim_opened'},
                                    headers={'Authorization': 'Bearer ' + token})
        self.assertEqual(st, 200, out)

    def test_agent_phone_not_answering_puts_the_caller_back_in_line(self):
        token = self.agent('va-noans', 'sales', softphone='+34910000111')
        c = self.call()
        _, iid = c.queue_via_menu('2', '2024700003')
        self.accept(self.wait_state(iid, 'offered')['reservation'], token)
        dial = c.wait_step(iid).find('Dial')
        self.assertEqual(dial.find('Number').text, '+34910000111')
        self.presence('va-noans', 'away', token)
        root = c.webhook(dial.get('action'), DialCallStatus='no-answer', DialCallSid='CA' + 'e' * 32)
        self.assertIn('step=wait', root.find('Redirect').text)
        self.assertEqual(self.ix(iid)['state'], 'queued')
        c.status('completed')
        self.assertEqual(self.ix(iid)['state'], 'abandoned')

    # ---- hang-ups ----

    def test_hang_up_while_queued(self):
        c = self.call()
        _, iid = c.queue_via_menu('1', '2024700004')
        self.assertEqual(self.ix(iid)['state'], 'queued')
        c.status('completed', CallDuration='30')
        ix = self.ix(iid)
        self.assertEqual(ix['state'], 'abandoned')
        keys = self.dbsize()
        c.status('completed', CallDuration='30')  # retried: nothing new
        self.assertEqual(self.dbsize(), keys)
        ended = [h for h in self.history(ix['case_id']) if h['type'] == 'voice.call_ended']
        self.assertEqual([e['disposition'] for e in ended], ['abandoned'])
        # a redirect still in flight gets a hang-up
        self.assertIsNotNone(c.wait_step(iid).find('Hangup'))
        st, q, _ = self.d.get('/v1/queues/claims')
        self.assertEqual(q['waiting']['voice'], 0)

    def test_hang_up_while_offered_withdraws_the_offer(self):
        token = self.agent('va-offer', 'claims')
        events = SSE(self.d, '/v1/agents/va-offer/events', token)
        try:
            c = self.call()
            _, iid = c.queue_via_menu('1', '2024700005')
            offer = events.wait('offer')
            self.assertIsNotNone(offer)
            resv = offer['data']['reservation']['id']
            self.assertEqual(offer['data']['interaction']['id'], iid)
            self.assertIn('claims', offer['data']['interaction']['subject'])
            c.status('canceled')
            withdrawn = events.wait('offer.withdrawn')
            self.assertIsNotNone(withdrawn)
            self.assertEqual(withdrawn['data']['reservation'], resv)
            self.assertEqual(self.ix(iid)['state'], 'abandoned')
            st, a, _ = self.d.get('/v1/agents/va-offer')
            self.assertEqual(a['load']['voice'], 0)
            self.accept(resv, token, expect=404)
        finally:
            events.close()

    def test_hang_up_during_the_ivr_stores_nothing_and_a_late_queueing_ends_at_once(self):
        c = self.call()
        root = c.start()
        c.status('completed')  # hung up in the menu: no interaction
        root = c.webhook(root.find('Gather').get('action'), Digits='1')
        root = c.webhook(root.find('Gather').get('action'), Digits='2024700006#')
        self.assertIsNotNone(root.find('Hangup'))
        found = self.redis.cli('GET', 'omnicc:{main}:idem:voice:' + c.sid)
        self.assertEqual(self.ix(found)['state'], 'abandoned')

    def test_queue_closing_at_max_wait_says_goodbye(self):
        c = self.call()
        _, iid = c.queue_via_menu('6', '2024700007')
        self.wait_state(iid, 'canceled', timeout=10)
        root = c.wait_step(iid)
        self.assertIsNotNone(root.find('Hangup'))
        self.assertIn('Goodbye', root.find('Say').text)
        c.status('completed')

    # ---- callbacks ----

    def test_callback_flow_end_to_end(self):
        c = self.call('+34600700008')
        _, iid = c.queue_via_menu('4', '2024700008')
        self.wait_state(iid, 'queued')
        harness.wait_for(lambda: self.ix(iid).get('max_wait_reached'), 10, 'max_wait')
        root = c.wait_step(iid, pos=1)
        gather = root.find('Gather')
        self.assertIsNotNone(gather, ET.tostring(root))
        self.assertIn('step=callback', gather.get('action'))
        self.assertIn('press 1', gather.find('Say').text)
        # no key: holding goes on, not offered again
        root = c.webhook(root.find('Redirect').text)
        self.assertIsNotNone(root.find('Pause'))
        self.assertIn('cbo=1', root.find('Redirect').text)
        root = c.webhook(gather.get('action'), Digits='1')
        self.assertIsNotNone(root.find('Hangup'))
        self.assertIn('call you back', root.find('Say').text)
        c.status('completed', CallDuration='70')
        ix = self.ix(iid)
        self.assertEqual(ix['state'], 'queued')  # still in line, as a callback
        self.assertEqual(ix['callback_state'], 'waiting')
        self.assertTrue(ix['subject'].startswith('Callback: '))
        self.assertEqual(ix['metadata']['callback']['number'], '+34600700008')
        self.assertTrue(self.provider.requests.empty())
        token = self.agent('va-cb', 'cb', softphone='sip:va-cb@pbx.example.com')
        offered = self.wait_state(iid, 'offered')
        self.accept(offered['reservation'], token)
        req = self.provider.requests.get(timeout=10)
        self.assertEqual(req['path'], '/2010-04-01/Accounts/%s/Calls.json' % ACCOUNT)
        self.assertEqual(req['auth'], 'Basic ' + base64.b64encode(
            ('%s:%s' % (ACCOUNT, AUTH_TOKEN)).encode()).decode())
        self.assertTrue(req['content_type'].startswith(FORM))
        form = req['form']
        self.assertEqual(form['To'], ['+34600700008'])
        self.assertEqual(form['From'], [COMPANY])
        self.assertEqual(form['Url'], [PUBLIC + INCOMING + '?step=connect&ix=' + iid])
        self.assertEqual(form['StatusCallback'], [PUBLIC + STATUS + '?ix=%s&leg=callback' % iid])
        harness.wait_for(lambda: self.ix(iid).get('callback_state') == 'dialed', 10, 'dialed')
        self.assertTrue(self.provider.requests.empty())  # placed exactly once
        # the provider calls the customer, who answers: TwiML puts them through to the agent
        leg = Call(self, req['sid'], COMPANY, '+34600700008')
        leg.status('ringing', ix=iid, leg='callback')
        root = leg.webhook(form['Url'][0], Direction='outbound-api')
        self.assertEqual(root.find('Dial').find('Sip').text, 'sip:va-cb@pbx.example.com')
        leg.status('in-progress', ix=iid, leg='callback')
        leg.status('completed', ix=iid, leg='callback', CallDuration='120')
        hist = self.history(ix['case_id'])
        types = [h['type'] for h in hist]
        for t in ('voice.callback_requested', 'voice.callback_dialed', 'voice.connected'):
            self.assertIn(t, types)
        dispositions = [h['disposition'] for h in hist if h['type'] == 'voice.call_ended']
        self.assertEqual(dispositions, ['callback_requested', 'callback_answered'])
        self.assertEqual(self.ix(iid)['state'], 'assigned')

    def callback_accepted(self, caller, key, agent_id, skill):
        """A caller who asks to be called back, and the agent who accepts the callback."""
        c = self.call(caller)
        _, iid = c.queue_via_menu(key, caller[-10:])
        harness.wait_for(lambda: self.ix(iid).get('max_wait_reached'), 10, 'max_wait')
        gather = c.wait_step(iid, pos=1).find('Gather')
        self.assertIsNotNone(gather)
        c.webhook(gather.get('action'), Digits='1')
        c.status('completed', CallDuration='30')
        token = self.agent(agent_id, skill, softphone='sip:%s@pbx.example.com' % agent_id)
        self.accept(self.wait_state(iid, 'offered')['reservation'], token)
        return iid

    def test_callback_dialled_again_while_the_provider_is_busy(self):
        # Twilio answers 429 when an account places calls faster than its limit, 5xx when
        # it is in trouble: the callback is dialled again later, not dropped
        self.provider.answers.put(429)
        self.provider.answers.put(503)
        iid = self.callback_accepted('+34600700031', '8', 'va-cbr1', 'cbr')
        got = [self.provider.requests.get(timeout=20)['status'] for _ in range(3)]
        self.assertEqual(got, [429, 503, 201])
        harness.wait_for(lambda: self.ix(iid).get('callback_state') == 'dialed', 10, 'dialed')
        self.assertTrue(self.provider.requests.empty())  # no further call once placed
        types = [h['type'] for h in self.history(self.ix(iid)['case_id'])]
        self.assertIn('voice.callback_dialed', types)
        self.assertNotIn('voice.callback_failed', types)
        # a refusal about the request itself (4xx) is final at once: one request, failed
        self.provider.answers.put(400)
        iid = self.callback_accepted('+34600700032', '8', 'va-cbr2', 'cbr')
        self.assertEqual(self.provider.requests.get(timeout=20)['status'], 400)
        harness.wait_for(lambda: self.ix(iid).get('callback_state') == 'failed', 10, 'failed')
        time.sleep(3)  # longer than the first retry would wait
        self.assertTrue(self.provider.requests.empty())
        failed = [h for h in self.history(self.ix(iid)['case_id'])
                  if h['type'] == 'voice.callback_failed']
        self.assertEqual(len(failed), 1)
        self.assertIn('HTTP 400', failed[0]['error'])

    # ---- CTI ----

    def cti(self, event, expect=200, **fields):
        body = json.dumps(dict(event=event, **fields)).encode()
        ts = int(time.time())
        st, out, _ = self.d.request('POST', '/v1/voice/cti', body, auth=False,
                                    content_type='application/json',
                                    headers={'X-Omnicc-Timestamp': str(ts),
                                             'X-Omnicc-Signature': cti_signature(CTI_SECRET, ts,
                                                                                 body)})
        self.assertEqual(st, expect, out)
        return out

    def test_cti_queue_forward_answer_hangup(self):
        call = dict(call_id='1712345678.101', to=COMPANY, direction='inbound')
        out = self.cti('newCall', **{'from': '+34600700009'}, digits='7', policy='PL-2024-700009',
                       **call)
        self.assertEqual(out['action'], 'queue')
        self.assertEqual(out['queue'], 'cti')
        self.assertEqual(out['retry_after'], 5)
        self.assertEqual(out['position'], 1)
        iid = out['interaction']
        ix = self.ix(iid)
        self.assertEqual(ix['metadata']['ivr']['intent'], 'cti')
        self.assertEqual(ix['subject'], 'Phone call: cti (policy PL-2024-700009)')
        token = self.agent('va-cti', 'cti', softphone='sip:va-cti@asterisk.example.com')
        self.assertEqual(self.cti('newCall', **call)['action'], 'queue')  # offered, not accepted
        self.accept(self.wait_state(iid, 'offered')['reservation'], token)
        out = self.cti('newCall', **call)
        self.assertEqual((out['action'], out['agent'], out['uri']),
                         ('forward', 'va-cti', 'sip:va-cti@asterisk.example.com'))
        self.assertEqual(self.cti('answer', agent='va-cti', **call)['interaction'], iid)
        out = self.cti('hangup', cause='NORMAL_CLEARING', **call)
        self.assertEqual(out['disposition'], 'answered')
        self.cti('hangup', cause='NORMAL_CLEARING', **call)  # resent: nothing new
        hist = self.history(ix['case_id'])
        ended = [h for h in hist if h['type'] == 'voice.call_ended']
        self.assertEqual(len(ended), 1)
        self.assertEqual((ended[0]['cause'], ended[0]['agent']), ('NORMAL_CLEARING', 'va-cti'))
        self.assertEqual(len([h for h in hist if h['type'] == 'voice.connected']), 1)
        # hang-up while waiting abandons; an unknown call is acknowledged
        out = self.cti('newCall', call_id='1712345678.102', intent='cti', **{'from': '+346007'})
        out = self.cti('hangup', call_id='1712345678.102', cause='16')
        self.assertEqual(out['state'], 'abandoned')
        self.assertIsNone(self.cti('hangup', call_id='1712345678.999')['interaction'])
        # invalid events
        self.cti('newCall', expect=400, call_id='x y')
        self.cti('answer', expect=400, call_id='1712345678.101')
        self.cti('dance', expect=400, call_id='1712345678.101')
        out = self.cti('newCall', call_id='1712345678.103', queue='nope')
        self.assertEqual(out['action'], 'reject')

    # ---- load: 1,000 concurrent callers drained by agents ----

    def test_thousand_concurrent_callers_queued_and_drained(self):
        n_calls, n_agents = 1000, 20
        calls = [self.call() for _ in range(n_calls)]

        def enqueue(i):
            _, iid = calls[i].queue_via_menu('5', '2025%06d' % i)
            return iid
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            ids = list(pool.map(enqueue, range(n_calls)))
        queued_s = time.time() - t0
        self.assertEqual(len(set(ids)), n_calls)
        st, q, _ = self.d.get('/v1/queues/bulk')
        self.assertEqual(q['waiting']['voice'], n_calls)
        by_ix = {iid: calls[i] for i, iid in enumerate(ids)}
        done, lock, errors = [], threading.Lock(), []

        def agent_loop(k):
            aid = 'bulk-%02d' % k
            token = self.agent(aid, 'bulk', softphone='sip:%s@pbx.example.com' % aid,
                               available=False)
            events = SSE(self.d, '/v1/agents/%s/events' % aid, token)
            auth = {'Authorization': 'Bearer ' + token}
            try:
                self.presence(aid, 'available', token)
                while True:
                    with lock:
                        if len(done) >= n_calls:
                            return
                    offer = events.wait('offer', timeout=5)
                    if offer is None:
                        continue
                    iid = offer['data']['interaction']['id']
                    resv = offer['data']['reservation']['id']
                    st, out, _ = self.d.request('POST', '/v1/reservations/%s/accept' % resv,
                                                None, headers=auth)
                    if st != 200:
                        errors.append(('accept', st, out))
                        continue
                    call = by_ix[iid]
                    dial = call.wait_step(iid, pos=3).find('Dial')
                    if dial is None or dial.find('Sip').text != 'sip:%s@pbx.example.com' % aid:
                        errors.append(('dial', iid))
                    call.status('completed', CallDuration='10')
                    st, out, _ = self.d.request('POST', '/v1/interactions/%s/complete' % iid, {},
                                                headers=auth)
                    if st != 200:
                        errors.append(('complete', st, out))
                    with lock:
                        done.append(iid)
            except Exception as e:  # surfaced below
                errors.append(('exception', aid, repr(e)))
            finally:
                events.close()
        t0 = time.time()
        threads = [threading.Thread(target=agent_loop, args=(k,)) for k in range(n_agents)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        drained_s = time.time() - t0
        self.assertEqual(errors, [])
        self.assertEqual(sorted(done), sorted(ids))
        st, q, _ = self.d.get('/v1/queues/bulk')
        self.assertEqual(q['waiting']['voice'], 0)
        for iid in ids[::97]:
            self.assertEqual(self.ix(iid)['state'], 'completed')
        print('\n%d callers queued in %.1f s, drained by %d agents in %.1f s'
              % (n_calls, queued_s, n_agents, drained_s))



class VoiceWithoutMenuTest(unittest.TestCase):
    """[voice] with neither menu nor policy question: the call is queued on the first webhook
    (default queue), and the CTI webhook is off."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-voice2-')
        token_file = os.path.join(cls.tmp, 'twilio-token')
        with open(token_file, 'w') as f:
            f.write(AUTH_TOKEN + '\n')
        cls.token_file = token_file
        cls.redis = harness.RedisServer(cls.tmp)
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url,
                                '[voice]\nauth_token_file = %s\npublic_url = %s\n'
                                'hold_music_url = https://media.example.com/hold.mp3\n'
                                'position_message =\n' % (token_file, PUBLIC))

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d.stop()
        finally:
            cls.redis.stop()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_first_webhook_queues_the_call(self):
        c = Call(self, 'CA' + '7' * 32, '+34600800001')
        root = c.start()
        said = [s.text for s in root.iter('Say')]
        self.assertEqual(said, ['All our agents are busy. Please stay on the line.'])
        self.assertEqual(root.find('Play').text, 'https://media.example.com/hold.mp3')
        iid = qs(root.find('Redirect').text)['ix']
        st, ix, _ = self.d.get('/v1/interactions/' + iid)
        self.assertEqual((ix['queue'], ix['subject'], ix['state']), ('default', 'Phone call', 'queued'))
        self.assertNotIn('ivr', ix['metadata'])  # no IVR ran
        self.assertEqual(ix['metadata']['provider'], 'twilio')
        again = c.start()  # a retried first webhook: the same call
        self.assertEqual(qs(again.find('Redirect').text)['ix'], iid)
        self.assertEqual(again.find('Say').text, 'All our agents are busy. Please stay on the line.')

    def test_sighup_rereads_the_auth_token(self):
        c = Call(self, 'CA' + '8' * 32, '+34600800002')
        url = PUBLIC + INCOMING

        def accepts(token):
            sig = twilio_signature(token, url, c.params().items())
            st, _, _ = self.d.request('POST', INCOMING, urllib.parse.urlencode(c.params()),
                                      auth=False, content_type=FORM, raw=True,
                                      headers={'X-Twilio-Signature': sig})
            return st == 200

        def rotate(token):
            with open(self.token_file, 'w') as f:
                f.write(token + '\n')
            self.d.proc.send_signal(signal.SIGHUP)
            harness.wait_for(lambda: accepts(token), 10, 'token re-read')
        try:
            rotate('rotated-token-0123456789')
            self.assertFalse(accepts(AUTH_TOKEN))  # the old token no longer signs
        finally:
            rotate(AUTH_TOKEN)

    def test_cti_is_off_without_its_secret(self):
        st, out, _ = self.d.request('POST', '/v1/voice/cti', b'{}', auth=False,
                                    content_type='application/json')
        self.assertEqual(st, 404, out)

    def test_wrong_content_type_and_malformed_forms(self):
        st, _, _ = self.d.request('POST', INCOMING, b'{}', auth=False,
                                  content_type='application/json', raw=True)
        self.assertEqual(st, 415)
        st, _, _ = self.d.request('POST', INCOMING, b'CallSid&x=%00', auth=False,
                                  content_type=FORM, raw=True)
        self.assertEqual(st, 400)

    def test_a_menu_naming_an_unknown_queue_stops_startup(self):
        bad = harness.Omniccd(self.tmp, self.redis.url,
                              '[voice]\nauth_token_file = %s\npublic_url = %s\nmenu = 1=x@nowhere\n'
                              % (self.token_file, PUBLIC), name='bad', start=False)
        bad.start(wait=False)
        self.assertNotEqual(bad.proc.wait(15), 0)
        self.assertIn('[voice] menu: queue "nowhere" is not defined', bad.log())
        nourl = harness.Omniccd(self.tmp, self.redis.url,
                                '[voice]\nauth_token_file = %s\n' % self.token_file,
                                name='nourl', start=False)
        nourl.start(wait=False)
        self.assertNotEqual(nourl.proc.wait(15), 0)
        self.assertIn('public_url: required', nourl.log())


if __name__ == '__main__':
    unittest.main()
