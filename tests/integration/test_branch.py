"""The branch terminal bridge against a real redis-server and omniccd: mutual TLS with a CA,
a CRL and SIGHUP, one branch per certificate, the framed protocol and its refusals, every
teller operation, exactly-once resends, event replay, the atomic call-next race, and the
branch figures and access log through the admin API."""
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
import unittest
import uuid

import redis as redislib

import harness
from branch_harness import CA, Closed, Proxy, Terminal, tls_refused


def branch_config(port, ca, scert, skey, crl, extra=''):
    return """
[branch]
listen = 127.0.0.1:{port}
ca = {ca}
cert = {scert}
key = {skey}
crl = {crl}
{extra}
[queue mad-claims]
channels = branch voice
[queue mad-sales]
channels = branch
[queue bcn-desk]
channels = branch
[queue callcentre]
channels = voice email
[branch mad01]
name = Madrid Centro
bank = Banco Ejemplo
region = Centro
services = claim_fnol:mad-claims policy_inquiry:mad-claims new_policy:mad-sales documents:mad-claims
counters = 4
[branch bcn01]
name = Barcelona Diagonal
services = claim_fnol:bcn-desk policy_inquiry:bcn-desk
""".format(port=port, ca=ca, scert=scert, skey=skey, crl=crl, extra=extra)


class BranchBase(unittest.TestCase):
    """One CA, one redis-server and one omniccd with the bridge on, per test class."""
    bridge_extra = 'rate = 100000\nburst = 100000\n'

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-branch-')
        cls.ca = CA(os.path.join(cls.tmp, 'ca'))
        cls.scert, cls.skey = cls.ca.issue('server', 'localhost', san='DNS:localhost,IP:127.0.0.1',
                                           server=True)
        # a legacy terminal certificate that names nothing: the serial map names it
        cls.legacy_cert, cls.legacy_key = cls.ca.issue('legacy', 'old terminal 7')
        cls.serial_map = os.path.join(cls.tmp, 'serials')
        with open(cls.serial_map, 'w') as f:
            f.write('# serial branch terminal\n%s mad01 legacy-7\n' % cls.ca.serial(cls.legacy_cert))
        cls.port = harness.free_port()
        cls.redis = harness.RedisServer(cls.tmp)
        extra = cls.bridge_extra + 'serial_map = %s\n' % cls.serial_map
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url,
                                branch_config(cls.port, cls.ca.cert, cls.scert, cls.skey,
                                              cls.ca.crl, extra))
        cls.r = redislib.Redis(port=cls.redis.port)
        cls.tokens = {}
        cls.certs = {}

    @classmethod
    def tearDownClass(cls):
        harness.stop_servers(cls)

    # ---- helpers ----

    def teller(self, agent, branch='mad01', capacity=1, skills=None):
        if agent not in self.tokens:
            st, body, _ = self.d.post('/v1/agents', {'id': agent, 'name': agent.title(),
                                                     'branch': branch,
                                                     'capacity': {'branch': capacity},
                                                     'skills': skills or {}})
            self.assertEqual(st, 201, body)
            st, tok, _ = self.d.post('/v1/agents/%s/tokens' % agent, {})
            self.assertEqual(st, 201, tok)
            self.tokens[agent] = tok['token']
        return self.tokens[agent]

    def cert(self, branch='mad01', terminal='t1'):
        key = (branch, terminal)
        if key not in self.certs:
            self.certs[key] = self.ca.terminal(branch, terminal)
        return self.certs[key]

    def terminal(self, branch='mad01', terminal='t1', agent=None, cursor=None):
        cert, key = self.cert(branch, terminal)
        t = Terminal(self.port, cert, key, self.ca.cert)
        self.addCleanup(t.close)
        t.welcome = t.hello(cursor)
        if agent:
            t.ok('SIGNIN', agent=agent, token=self.teller(agent, branch))
        return t

    def snapshot(self):
        """Every key and its value in a canonical form: proof that nothing was written.
        (DUMP is not canonical: a hash's field order changes as Redis rehashes it.)"""
        out = {}
        for k in self.r.scan_iter(count=1000):
            t = self.r.type(k)
            if t == b'string':
                v = self.r.get(k)
            elif t == b'hash':
                v = sorted(self.r.hgetall(k).items())
            elif t == b'set':
                v = sorted(self.r.smembers(k))
            elif t == b'zset':
                v = self.r.zrange(k, 0, -1, withscores=True)
            elif t == b'list':
                v = self.r.lrange(k, 0, -1)
            elif t == b'stream':
                v = self.r.xrange(k)
            else:
                v = t
            out[k] = v
        return out

    def wait_quiet(self):
        """Until the data set stops changing (background sweeps, event relays)."""
        prev = self.snapshot()
        for _ in range(50):
            time.sleep(0.1)
            cur = self.snapshot()
            if cur == prev:
                return cur
            prev = cur
        raise AssertionError('data set never settles')


class BranchTLSTest(BranchBase):
    def test_terminal_with_its_certificate_is_welcomed(self):
        t = self.terminal('mad01', 'tls-ok')
        self.assertEqual(t.welcome['session'], {'branch': 'mad01', 'terminal': 'tls-ok'})
        self.assertEqual(t.welcome['branch']['name'], 'Madrid Centro')
        self.assertEqual(t.welcome['branch']['services']['claim_fnol'], 'mad-claims')
        self.assertEqual(t.welcome['max_frame'], 65536)

    def test_certificate_named_by_cn_or_serial_map(self):
        cert, key = self.ca.terminal('mad01', 'by-cn', how='cn')
        t = Terminal(self.port, cert, key, self.ca.cert)
        self.addCleanup(t.close)
        self.assertEqual(t.hello()['session'], {'branch': 'mad01', 'terminal': 'by-cn'})
        t2 = Terminal(self.port, self.legacy_cert, self.legacy_key, self.ca.cert)
        self.addCleanup(t2.close)
        self.assertEqual(t2.hello()['session'], {'branch': 'mad01', 'terminal': 'legacy-7'})

    def test_no_certificate_is_refused(self):
        self.assertTrue(tls_refused(self.port, None, None, self.ca.cert))
        self.assertIn('TLS handshake refused', self.d.log())

    def test_certificate_of_another_ca_is_refused(self):
        other = CA(os.path.join(self.tmp, 'other-ca'), name='Impostor CA')
        cert, key = other.issue('imp', 'x', san='URI:urn:omnicc:terminal:mad01:t1')
        self.assertTrue(tls_refused(self.port, cert, key, self.ca.cert))

    def test_expired_certificate_is_refused(self):
        cert, key = self.ca.issue('expired', 'expired', san='URI:urn:omnicc:terminal:mad01:old',
                                  startdate='20200101000000Z', enddate='20200201000000Z')
        self.assertTrue(tls_refused(self.port, cert, key, self.ca.cert))

    def test_certificate_naming_no_terminal_is_refused(self):
        cert, key = self.ca.issue('anon', 'just a name', san='DNS:anon.invalid')
        self.assertTrue(tls_refused(self.port, cert, key, self.ca.cert))
        self.assertIn('names no branch terminal', self.d.log())

    def test_unknown_branch_is_refused_at_hello(self):
        cert, key = self.ca.terminal('nowhere', 't1')
        t = Terminal(self.port, cert, key, self.ca.cert)
        self.addCleanup(t.close)
        r = t.request('HELLO')
        self.assertEqual((r['type'], r['code']), ('NACK', 'not_found'))
        self.assertRaises(Closed, t.recv)

    def test_revoked_certificate_is_refused_and_a_later_revocation_applies_on_sighup(self):
        # revoked before: refused at once (the CRL in force at start)
        cert, key = self.ca.terminal('mad01', 'rv-early')
        self.ca.revoke(cert)
        os.kill(self.d.proc.pid, signal.SIGHUP)
        harness.wait_for(lambda: 'CRL and certificates re-read' in self.d.log(), 5, 'reload')
        self.assertTrue(tls_refused(self.port, cert, key, self.ca.cert))
        # revoked while connected: the next SIGHUP drops that terminal, the others stay
        cert2, key2 = self.ca.terminal('mad01', 'rv-later')
        doomed = Terminal(self.port, cert2, key2, self.ca.cert)
        self.addCleanup(doomed.close)
        doomed.hello()
        keeper = self.terminal('mad01', 'rv-keeper')
        self.ca.revoke(cert2)
        self.assertFalse(tls_refused(self.port, cert2, key2, self.ca.cert),
                         'the running CRL does not know yet')
        n = self.d.log().count('CRL and certificates re-read')
        os.kill(self.d.proc.pid, signal.SIGHUP)
        harness.wait_for(lambda: self.d.log().count('CRL and certificates re-read') > n, 5, 'reload')
        self.assertTrue(tls_refused(self.port, cert2, key2, self.ca.cert))
        self.assertRaises((Closed, OSError), doomed.ok, 'PING')
        self.assertEqual(keeper.ok('PING')['type'], 'PONG')


class BranchProtocolTest(BranchBase):
    def test_terminal_of_branch_a_cannot_act_for_branch_b(self):
        self.teller('bea', branch='bcn01')
        t = self.terminal('mad01', 'ab-1', agent='aaron')
        tb = self.terminal('bcn01', 'ab-b', agent='bea')
        visit_b = tb.ok('VISIT_CREATE', service='claim_fnol',
                        customer={'phone': '600 123 001'})['result']['visit']
        before = self.wait_quiet()
        # naming the other branch in the envelope
        r = t.request('CALL_NEXT', counter='1', branch='bcn01')
        self.assertEqual((r['type'], r['code']), ('NACK', 'forbidden'))
        # a teller of branch B signing in at a terminal of branch A
        r = t.request('SIGNIN', agent='bea', token=self.tokens['bea'])
        self.assertEqual((r['type'], r['code']), ('NACK', 'forbidden'))
        # touching a visit of branch B
        for typ, extra in (('VISIT_END', {'outcome': 'resolved'}), ('NOTE', {'text': 'x'}),
                           ('VISIT_SERVE', {})):
            r = t.request(typ, visit=visit_b, **extra)
            self.assertEqual((r['type'], r['code']), ('NACK', 'forbidden'), r)
        # a case it never looked up
        case_b = self.r.hget('omnicc:{main}:ix:' + visit_b, 'case_id').decode()
        r = t.request('NOTE', case=case_b, text='not mine')
        self.assertEqual((r['type'], r['code']), ('NACK', 'forbidden'))
        after = self.snapshot()
        self.assertEqual([k for k in set(before) | set(after) if before.get(k) != after.get(k)], [])

    def test_malformed_frames_are_refused_and_write_nothing(self):
        t = self.terminal('mad01', 'bad-1', agent='mal')
        before = self.wait_quiet()

        def frame(payload):
            return struct.pack('>I', len(payload)) + payload

        cases = [
            (b'{not json', 'bad_json'),
            (b'[1,2,3]', 'bad_json'),
            (b'{"v":1,"type":"NOTE","msg_id":"a","text":"\xff\xfe"}', 'bad_json'),
            (b'{"v":1,"v":1,"type":"PING","msg_id":"dup"}', 'bad_json'),
            (b'{"v":2,"type":"PING","msg_id":"m1"}', 'bad_version'),
            (b'{"type":"PING","msg_id":"m2"}', 'invalid'),
            (b'{"v":1,"type":"TELEPORT","msg_id":"m3"}', 'unknown_type'),
            (b'{"v":1,"type":"VISIT_CREATE"}', 'invalid'),
            (b'{"v":1,"type":"VISIT_CREATE","msg_id":"has space"}', 'invalid'),
            (b'{"v":1,"type":"VISIT_CREATE","msg_id":"m4"}', 'invalid'),
            (b'{"v":1,"type":"VISIT_CREATE","msg_id":"m5","service":"claim_fnol","colour":"red"}',
             'invalid'),
            (b'{"v":1,"type":"CALL_NEXT","msg_id":"m6","counter":7}', 'invalid'),
            (b'{"v":1,"type":"NOTE","msg_id":"m7","text":"x"}', 'invalid'),
            (b'{"v":1,"type":"NOTE","msg_id":"m8","text":"x","visit":"I-1","case":"C-1"}', 'invalid'),
            (b'{"v":1,"type":"NOTE","msg_id":"m9","case":"C-1","text":"' + b'x' * 9000 + b'"}',
             'invalid'),
            (b'{"v":1,"type":"LOOKUP","msg_id":"m10","by":"policy","value":"PL-2024-000001"}',
             'invalid'),
            (b'{"v":1,"type":"LOOKUP","msg_id":"m11","by":"policy","value":"PL-2024-000001",'
             b'"purpose":"curiosity"}', 'invalid'),
            (b'{"v":1,"type":"LOOKUP","msg_id":"m12","by":"phone","value":"not a phone",'
             b'"purpose":"service"}', 'invalid'),
            (b'{"v":1,"type":"DOCUMENT","msg_id":"m13","case":"C-1","name":"a.pdf",'
             b'"mime":"application/pdf","content":"@@@="}', 'invalid'),
            (b'{"v":1,"type":"FNOL","msg_id":"m14","case":"C-1","loss_at":5,"loss_kind":"water",'
             b'"description":"d","captured_at":1700000000000}', 'invalid'),
            (b'{"v":1,"type":"HELLO","msg_id":"m15"}', 'conflict'),
            (b'{"v":1,"type":"VISIT_CREATE","msg_id":"m16","service":"claim_fnol",'
             b'"customer":{"policy":"not-a-policy"}}', 'invalid'),
        ]
        for i, (payload, code) in enumerate(cases):
            if i % 10 == 9:  # 20 malformed frames in a row close the connection
                self.assertEqual(t.ok('PING')['type'], 'PONG')
            t.send_raw(frame(payload))
            try:
                r = t.recv()
            except Closed:
                raise AssertionError('closed after %r' % payload[:80])
            self.assertEqual((r['type'], r['code']), ('NACK', code), (payload[:80], r))
        # the NACK names the msg_id when the frame had a well-formed one
        t.send_raw(frame(b'{"v":1,"type":"TELEPORT","msg_id":"named"}'))
        self.assertEqual(t.recv()['msg_id'], 'named')
        # a frame split across writes is still one frame
        payload = json.dumps({'v': 1, 'type': 'PING', 'msg_id': 'split'}).encode()
        data = frame(payload)
        t.send_raw(data[:3])
        time.sleep(0.05)
        t.send_raw(data[3:10])
        time.sleep(0.05)
        t.send_raw(data[10:])
        self.assertEqual(t.recv()['type'], 'PONG')
        self.assertEqual(self.snapshot(), before)

        # length 0 closes the connection
        t0 = self.terminal('mad01', 'bad-2')
        t0.send_raw(struct.pack('>I', 0))
        self.assertRaises(Closed, t0.recv)
        # a length above max_frame closes at once, before the body is sent or buffered
        t1 = self.terminal('mad01', 'bad-3')
        t1.send_raw(struct.pack('>I', 64 * 1024 * 1024))
        started = time.time()
        self.assertRaises(Closed, t1.recv)
        self.assertLess(time.time() - started, 2)
        self.assertIn('above max_frame', self.d.log())
        # a truncated frame followed by a disconnect does nothing
        t2 = self.terminal('mad01', 'bad-4', agent='mal')
        body = json.dumps({'v': 1, 'type': 'NOTE', 'msg_id': 'cut', 'case': 'C-1',
                           'text': 'never arrives whole'}).encode()
        t2.send_raw(struct.pack('>I', len(body)) + body[:len(body) // 2])
        t2.close()
        # frames before HELLO are refused
        cert, key = self.cert('mad01', 'bad-5')
        t3 = Terminal(self.port, cert, key, self.ca.cert)
        self.addCleanup(t3.close)
        r = t3.request('CALL_NEXT', counter='1')
        self.assertEqual((r['type'], r['code']), ('NACK', 'no_session'))
        # too many refused frames close the connection
        for i in range(25):
            try:
                t3.send_raw(frame(b'{oops'))
            except OSError:
                break
        with self.assertRaises(Closed):
            while True:
                t3.recv()
        time.sleep(0.3)
        after = self.snapshot()
        # the terminals that said HELLO registered themselves; nothing else changed
        for k in set(after) - set(before):
            self.assertRegex(k.decode(), r'^omnicc:\{main\}:bterm:bad-\d')
        for k in before:
            if not k.decode().startswith('omnicc:{main}:branch:mad01:terminals'):
                self.assertEqual(after.get(k), before[k], k)

    def test_resend_after_reconnect_returns_the_first_result_and_changes_nothing(self):
        t = self.terminal('mad01', 'rs-1', agent='rosa')
        mid = str(uuid.uuid4())
        first = t.ok('VISIT_CREATE', msg_id=mid, service='policy_inquiry',
                     customer={'phone': '600 555 001', 'name': 'Rosa C'}, serve_now=True,
                     counter='2')
        self.assertFalse(first['replayed'])
        visit = first['result']['visit']
        note_id = str(uuid.uuid4())
        t.send({'v': 1, 'type': 'NOTE', 'msg_id': note_id, 'visit': visit, 'text': 'once'})
        t.close()  # the link drops before the ACK is read
        time.sleep(0.2)
        before = self.wait_quiet()
        t2 = self.terminal('mad01', 'rs-1', agent='rosa')
        again = t2.ok('VISIT_CREATE', msg_id=mid, service='policy_inquiry',
                      customer={'phone': '600 555 001', 'name': 'Rosa C'}, serve_now=True,
                      counter='2')
        self.assertTrue(again['replayed'])
        self.assertEqual(again['result'], first['result'])
        n1 = t2.ok('NOTE', msg_id=note_id, visit=visit, text='once')
        self.assertTrue(n1['replayed'])
        # the same msg_id for another operation is refused
        r = t2.request('VISIT_END', msg_id=note_id, visit=visit, outcome='resolved')
        self.assertEqual((r['type'], r['code']), ('NACK', 'conflict'))
        after = self.snapshot()
        changed = [k for k in set(before) | set(after) if before.get(k) != after.get(k)]
        self.assertTrue(all(b'bterm:rs-1' in k or k.endswith(b'mad01:terminals') for k in changed),
                        changed)
        st, case, _ = self.d.get('/v1/cases/' + first['result']['case_id'])
        notes = [h for h in case['history'] if h['type'] == 'note']
        self.assertEqual([n['text'] for n in notes], ['once'])
        self.assertEqual(len([h for h in case['history'] if h['type'] == 'visit.created']), 1)

    def test_events_carry_a_sequence_and_are_replayed_from_the_cursor(self):
        t = self.terminal('mad01', 'ev-1', agent='eva')
        watcher = self.terminal('mad01', 'ev-2')
        v = t.ok('VISIT_CREATE', service='claim_fnol', customer={'phone': '600 777 001'})
        e = watcher.wait_event('visit.created', pred=lambda e: e['data']['visit'] == v['result']['visit'])
        cursor = e['seq']
        watcher.close()
        # while the watcher is away: two more events for the branch
        t.ok('CALL_NEXT', counter='3')
        t.ok('VISIT_END', visit=v['result']['visit'], outcome='resolved')
        back = self.terminal('mad01', 'ev-2', cursor=cursor)
        self.assertEqual(back.welcome['replay_from'], cursor)
        called = back.wait_event('visit.called')
        ended = back.wait_event('visit.ended')
        self.assertEqual(called['data']['counter'], '3')
        self.assertEqual([called['seq'], ended['seq']], [cursor + 1, cursor + 2])
        # without a cursor a session starts from now
        fresh = self.terminal('mad01', 'ev-2')
        self.assertEqual(fresh.welcome['replay_from'], fresh.welcome['cursor'])

    def test_two_tellers_calling_next_at_the_same_instant_never_get_the_same_visit(self):
        rounds = 1000
        front = self.terminal('mad01', 'race-front', agent='front')
        # 2 x rounds walk-ins, pipelined
        ids = [str(uuid.uuid4()) for _ in range(2 * rounds)]
        for i, mid in enumerate(ids):
            front.send({'v': 1, 'type': 'VISIT_CREATE', 'msg_id': mid, 'service': 'documents',
                        'customer': {'branch_customer_id': 'RACE-%d' % i}})
        for mid in ids:
            self.assertEqual(front.reply(mid)['type'], 'ACK')
        a = self.terminal('mad01', 'race-a', agent='racer_a')
        b = self.terminal('mad01', 'race-b', agent='racer_b')
        barrier = threading.Barrier(2)
        got = {'racer_a': [], 'racer_b': []}
        errors = []

        def run(term, name):
            try:
                for _ in range(rounds):
                    barrier.wait(timeout=30)
                    r = term.ok('CALL_NEXT', counter=name)
                    v = r['result']['visit']['visit']
                    got[name].append(v)
                    term.ok('VISIT_END', visit=v, outcome='resolved')
            except Exception as e:  # reported below
                errors.append(e)
                barrier.abort()

        threads = [threading.Thread(target=run, args=(a, 'racer_a')),
                   threading.Thread(target=run, args=(b, 'racer_b'))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(300)
        self.assertEqual(errors, [])
        all_visits = got['racer_a'] + got['racer_b']
        self.assertEqual(len(all_visits), 2 * rounds)
        self.assertEqual(len(set(all_visits)), 2 * rounds, 'a visit was called twice')
        for v in all_visits[:50]:
            self.assertEqual(self.r.hget('omnicc:{main}:ix:' + v, 'state'), b'completed')
        st, stats, _ = self.d.get('/v1/branches/mad01/stats')
        self.assertGreaterEqual(stats['totals']['served'], 2 * rounds)


class BranchOperationsTest(BranchBase):
    def test_a_visit_from_walk_in_to_outcome(self):
        t = self.terminal('mad01', 'op-1', agent='olga')
        board = self.terminal('mad01', 'op-board')
        r = t.ok('VISIT_CREATE', service='claim_fnol', note='hail damage',
                 customer={'policy': 'PL-2024-100001', 'national_id': '12345678-z',
                           'name': 'Olga Ruiz'})['result']
        self.assertRegex(r['ticket'], r'^C\d{3}$')
        self.assertEqual(r['state'], 'waiting')
        ix = self.d.get('/v1/interactions/' + r['visit'])[1]
        self.assertEqual((ix['channel'], ix['state'], ix['queue']), ('branch', 'queued', 'mad-claims'))
        st, stats, _ = self.d.get('/v1/branches/mad01/stats')
        self.assertEqual(stats['waiting'], 1)
        self.assertGreaterEqual(stats['longest_wait_ms'], 0)
        nxt = t.ok('CALL_NEXT', counter='2')['result']
        self.assertEqual(nxt['visit']['visit'], r['visit'])
        self.assertEqual(nxt['customer']['name'], 'Olga Ruiz')
        self.assertEqual(board.wait_event('visit.called')['data']['counter'], '2')
        self.assertEqual(t.ok('VISIT_SERVE', visit=r['visit'])['result']['state'], 'serving')
        self.assertEqual(t.ok('VISIT_RECALL', visit=r['visit'])['result']['recalls'], 1)
        self.assertEqual(t.ok('VISIT_PARK', visit=r['visit'], reason='fetching_docs')['result']['state'],
                         'parked')
        self.assertEqual(self.d.get('/v1/branches/mad01/stats')[1]['parked'], 1)
        self.assertEqual(t.ok('VISIT_RECALL', visit=r['visit'], counter='2')['result']['state'], 'called')
        t.ok('NOTE', visit=r['visit'], text='Photos of the roof on file')
        c = t.ok('CONSENT', visit=r['visit'], kind='data_processing', granted=True,
                 text='Signed on the pad')['result']
        self.assertTrue(c['granted'])
        captured = int(time.time() * 1000) - 3600 * 1000
        f = t.ok('FNOL', visit=r['visit'], loss_at=captured - 86400000, loss_kind='hail',
                 description='Hail broke roof tiles', captured_at=captured,
                 location='Calle Mayor 1')['result']
        self.assertEqual(f['captured_at'], captured)
        self.assertGreater(f['received_at'], captured)
        doc = b'%PDF-1.4 scanned claim form\n' * 40
        d = t.ok('DOCUMENT', visit=r['visit'], name='claim form.pdf', mime='application/pdf',
                 content=base64.b64encode(doc).decode(),
                 sha256=hashlib.sha256(doc).hexdigest())['result']
        path = os.path.join(self.d.state_dir, 'branch-documents', d['sha256'][:2], d['sha256'])
        with open(path, 'rb') as fh:
            self.assertEqual(fh.read(), doc)
        a = t.ok('APPOINTMENT', visit=r['visit'], service='documents',
                 at=int(time.time() * 1000) + 86400000, note='bring the invoice')['result']
        self.assertRegex(a['appointment'], r'^A-\d+$')
        e = t.ok('VISIT_END', visit=r['visit'], outcome='claim_opened', note='FNOL taken')['result']
        self.assertEqual((e['state'], e['outcome']), ('ended', 'claim_opened'))
        case = self.d.get('/v1/cases/' + r['case_id'])[1]
        types = [h['type'] for h in case['history']]
        for want in ('visit.created', 'visit.called', 'visit.serving', 'visit.recalled',
                     'visit.parked', 'note', 'consent', 'claim.fnol', 'document', 'appointment',
                     'visit.ended'):
            self.assertIn(want, types)
        fnol = [h for h in case['history'] if h['type'] == 'claim.fnol'][0]
        self.assertEqual(int(fnol['captured_at']), captured)
        self.assertGreater(int(fnol['received_at']), captured)
        stats = self.d.get('/v1/branches/mad01/stats')[1]
        self.assertEqual(stats['waiting'], 0)
        for k in ('served', 'fnol', 'documents', 'appointments'):
            self.assertGreaterEqual(stats['today'][k], 1, k)

    def test_no_show_transfer_and_handover(self):
        t = self.terminal('mad01', 'op-2', agent='nico')
        v1 = t.ok('VISIT_CREATE', service='claim_fnol', customer={'phone': '600 100 200'})['result']
        t.ok('CALL_NEXT', counter='1')
        t.ok('VISIT_NO_SHOW', visit=v1['visit'])
        self.assertEqual(self.r.hget('omnicc:{main}:ix:' + v1['visit'], 'state'), b'abandoned')
        v2 = t.ok('VISIT_CREATE', service='claim_fnol', customer={'phone': '600 100 201'})['result']
        t.ok('CALL_NEXT', counter='1')
        tr = t.ok('VISIT_TRANSFER', visit=v2['visit'], service='new_policy', note='wants a quote')['result']
        self.assertEqual((tr['state'], tr['service']), ('waiting', 'new_policy'))
        self.assertEqual(self.r.hget('omnicc:{main}:ix:' + v2['visit'], 'queue'), b'mad-sales')
        # the sales queue needs no skill: nico may call it back himself
        self.assertEqual(t.ok('CALL_NEXT', counter='1', service='new_policy')['result']['visit']['visit'],
                         v2['visit'])
        h = t.ok('HANDOVER', visit=v2['visit'], queue='callcentre',
                 note='Call back tomorrow about the quote')['result']
        ix = self.d.get('/v1/interactions/' + h['interaction'])[1]
        self.assertEqual((ix['queue'], ix['state'], ix['channel'], ix['direction']),
                         ('callcentre', 'queued', 'voice', 'outbound'))
        self.assertEqual(ix['case_id'], v2['case_id'])
        self.assertEqual(ix['body'], 'Call back tomorrow about the quote')
        self.assertEqual(self.r.hget('omnicc:{main}:ix:' + v2['visit'], 'outcome'), b'handover')
        r = t.request('HANDOVER', case=v2['case_id'], queue='nope', note='x')
        self.assertEqual(r['code'], 'not_found')
        stats = self.d.get('/v1/branches/mad01/stats')[1]['today']
        self.assertGreaterEqual(stats['no_shows'], 1)
        self.assertGreaterEqual(stats['handovers'], 1)
        self.assertGreaterEqual(stats['transfers'], 1)

    def test_lookup_needs_a_purpose_and_is_logged(self):
        self.d.post('/v1/interactions', {'channel': 'voice', 'external_id': 'lk-1',
                                         'from': '+34 600 900 900',
                                         'customer': {'policy': 'PL-2024-900900', 'name': 'Luis'}})
        t = self.terminal('mad01', 'op-3', agent='lola')
        r = t.ok('LOOKUP', by='policy', value='pl-2024-900900', purpose='claim')['result']
        self.assertTrue(r['found'])
        self.assertEqual(r['customer']['name'], 'Luis')
        self.assertIn('voice', [h.get('channel') for h in r['history']])
        miss = t.ok('LOOKUP', by='phone', value='+34 699 000 000', purpose='service')['result']
        self.assertFalse(miss['found'])
        cust = r['customer']['id']
        log = self.d.get('/v1/access-log?customer=' + cust)[1]['entries']
        self.assertEqual(len(log), 1)
        self.assertEqual((log[0]['agent'], log[0]['purpose'], log[0]['branch'], log[0]['terminal']),
                         ('lola', 'claim', 'mad01', 'op-3'))
        self.assertEqual(log[0]['value'], '***0900')
        mine = self.d.get('/v1/access-log?agent=lola')[1]['entries']
        self.assertEqual([e['result'] for e in mine], ['not_found', 'found'])
        self.assertEqual(self.d.get('/v1/access-log?agent=lola&customer=P-1')[0], 400)
        # the case is now known to this terminal: a note may name it directly
        t.ok('NOTE', case=r['cases'][0]['id'], text='Customer called in person')
        # the log is append-only: nothing in the API changes or deletes it
        self.assertIn(self.d.request('DELETE', '/v1/access-log')[0], (404, 405))

    def test_offers_are_pushed_and_accepted_on_the_terminal(self):
        t = self.terminal('mad01', 'op-4', agent='ofelia')
        st, body, _ = self.d.request('PUT', '/v1/agents/ofelia/state', {'state': 'available'})
        self.assertEqual(st, 200, body)
        v = t.ok('VISIT_CREATE', service='policy_inquiry', customer={'phone': '600 300 400'})['result']
        offer = t.wait_event('offer', pred=lambda e: e['data']['interaction']['id'] == v['visit'])
        resv = offer['data']['reservation']['id']
        acc = t.ok('OFFER_ACCEPT', reservation=resv, counter='3')['result']
        self.assertEqual(acc['state'], 'assigned')
        self.assertEqual(self.r.hget('omnicc:{main}:ix:' + v['visit'], 'visit_state'), b'called')
        t.ok('VISIT_END', visit=v['visit'], outcome='resolved')
        v2 = t.ok('VISIT_CREATE', service='policy_inquiry', customer={'phone': '600 300 401'})['result']
        offer = t.wait_event('offer', pred=lambda e: e['data']['interaction']['id'] == v2['visit'])
        t.ok('OFFER_REJECT', reservation=offer['data']['reservation']['id'])
        self.d.request('PUT', '/v1/agents/ofelia/state', {'state': 'away'})

    def test_capacity_busy_and_empty_and_signout(self):
        t = self.terminal('mad01', 'op-5', agent='pablo')
        r = t.request('CALL_NEXT', counter='1', service='new_policy')
        self.assertEqual(r['code'], 'empty')
        v = t.ok('VISIT_CREATE', service='new_policy', serve_now=True, counter='1',
                 customer={'phone': '600 400 500'})['result']
        self.assertEqual(v['state'], 'called')
        r = t.request('CALL_NEXT', counter='1')
        self.assertEqual(r['code'], 'busy')
        # a second walk-in to serve now while busy: registered, it waits instead
        w = t.ok('VISIT_CREATE', service='new_policy', serve_now=True, counter='1',
                 customer={'phone': '600 400 501'})['result']
        self.assertEqual(w['state'], 'waiting')
        self.assertIn('busy', w['serve_now_refused'])
        self.assertRegex(w['ticket'], r'^N\d{3}$')
        t.ok('VISIT_END', visit=v['visit'], outcome='quote_given')
        nxt = t.ok('CALL_NEXT', counter='1', service='new_policy')['result']['visit']
        self.assertEqual(nxt['visit'], w['visit'])
        t.ok('VISIT_END', visit=w['visit'], outcome='quote_given')
        t.ok('SIGNOUT')
        r = t.request('NOTE', case=v['case_id'], text='after sign out')
        self.assertEqual(r['code'], 'no_teller')
        # a revoked token stops the teller on the next request
        t.ok('SIGNIN', agent='pablo', token=self.tokens['pablo'])
        self.d.request('DELETE', '/v1/agents/pablo/tokens')
        r = t.request('NOTE', case=v['case_id'], text='token revoked')
        self.assertEqual(r['code'], 'forbidden')
        del self.tokens['pablo']

    def test_visit_ref_names_a_visit_created_offline(self):
        t = self.terminal('mad01', 'op-6', agent='quim')
        mid = 'spool-' + uuid.uuid4().hex
        t.ok('VISIT_CREATE', msg_id=mid, service='documents', serve_now=True, counter='4',
             customer={'branch_customer_id': 'BC-77'}, captured_at=int(time.time() * 1000) - 60000)
        n = t.ok('NOTE', visit_ref=mid, text='created while the link was down')['result']
        e = t.ok('VISIT_END', visit_ref=mid, outcome='documents_received')['result']
        self.assertEqual(e['state'], 'ended')
        r = t.request('NOTE', visit_ref='never-sent', text='x')
        self.assertEqual(r['code'], 'not_found')
        self.assertTrue(n['history_id'])

    def test_admin_api_for_branches(self):
        st, b, _ = self.d.post('/v1/branches', {'id': 'sev01', 'name': 'Sevilla Triana',
                                                'bank': 'Banco Ejemplo',
                                                'services': {'claim_fnol': 'mad-claims'},
                                                'counters': 2})
        self.assertEqual(st, 201, b)
        self.assertEqual(b['services'], {'claim_fnol': 'mad-claims'})
        st, b, _ = self.d.post('/v1/branches', {'id': 'sev01', 'name': 'Sevilla Triana',
                                                'services': {'claim_fnol': 'mad-claims'}})
        self.assertEqual(st, 200)
        self.assertEqual(self.d.post('/v1/branches', {'id': 'x y', 'services': {}})[0], 400)
        st, err, _ = self.d.post('/v1/branches', {'id': 'sev02', 'services': {'a': 'callcentre'}})
        self.assertEqual(st, 400)
        self.assertIn('does not serve the branch channel', err['error']['message'])
        ids = [x['id'] for x in self.d.get('/v1/branches')[1]['branches']]
        self.assertTrue({'mad01', 'bcn01', 'sev01'} <= set(ids))
        self.assertEqual(self.d.get('/v1/branches/nope')[0], 404)
        self.assertEqual(self.d.get('/v1/branches/mad01', auth=False)[0], 401)
        # a terminal of the new branch is welcomed
        t = self.terminal('sev01', 'st-1')
        self.assertEqual(t.welcome['branch']['name'], 'Sevilla Triana')


class BranchRateLimitTest(BranchBase):
    bridge_extra = 'rate = 5\nburst = 10\n'

    def test_a_branch_is_limited_by_its_token_bucket(self):
        t = self.terminal('mad01', 'rl-1')
        codes = []
        for i in range(30):
            codes.append(t.request('NOTE', case='C-1', text='x')['code'])
        self.assertIn('rate_limited', codes)
        self.assertLessEqual(codes.count('no_teller'), 12)
        self.assertEqual(t.ok('PING')['type'], 'PONG')  # heartbeats are never limited
        time.sleep(1.2)
        self.assertEqual(t.request('NOTE', case='C-1', text='x')['code'], 'no_teller')


if __name__ == '__main__':
    unittest.main()
