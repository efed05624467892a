"""Redis outages and process life cycle, with real processes: Redis stopped or hung -> 503
with Retry-After and a JSON error, /healthz 503 -> Redis back on the same port -> 2xx without
restarting omniccd. Embedded mode (no [redis] url): omniccd runs its own redis-server, restarts
it after a SIGKILL, and stops it on SIGTERM (exit 0). SIGHUP re-reads [api] token_file."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import harness

RECOVERY_TIMEOUT = 20.0  # reconnect backoff is capped at 5 s (with jitter)


def healthz(d):
    return d.get('/healthz', auth=False)


class RedisOutageTest(harness.TestCase):
    def setUp(self):
        # each test starts connected, whatever the previous one left behind
        if self.redis.proc is None:
            self.redis.start()
        harness.wait_for(lambda: healthz(self.d)[0] == 200, RECOVERY_TIMEOUT, 'healthz 200')

    def assert_unavailable(self, resp):
        st, body, hdrs = resp
        self.assertEqual(st, 503, body)
        self.assertTrue(hdrs.get('content-type', '').startswith('application/json'), hdrs)
        self.assertIn('retry-after', hdrs)
        self.assertGreaterEqual(int(hdrs['retry-after']), 1)
        self.assertEqual(body['error']['code'], 'unavailable', body)
        self.assertTrue(body['error']['message'])
        return body

    def ix(self, **kw):
        doc = {'channel': 'voice', 'external_id': self.ext('out'), 'from': '+34 600 700 001'}
        doc.update(kw)
        return doc

    def test_redis_stopped_then_back_on_the_same_port(self):
        before = self.ingest(**{'from': '+34 600 700 001'}, subject='before the outage')
        pid = self.d.proc.pid
        self.redis.stop()
        try:
            harness.wait_for(lambda: healthz(self.d)[0] == 503, 10, 'healthz 503')
            st, body, hdrs = healthz(self.d)
            self.assertEqual(body['status'], 'unavailable', body)
            self.assertNotEqual(body['redis'], 'ok')
            self.assertIn('retry-after', hdrs)
            doc = self.ix()
            for _ in range(3):
                t0 = time.monotonic()
                self.assert_unavailable(self.d.post('/v1/interactions', doc))
                self.assertLess(time.monotonic() - t0, 2.0, 'a 503 must be immediate')
            self.assert_unavailable(self.d.get('/v1/interactions/' + before['id']))
            self.assert_unavailable(self.d.get('/v1/cases/' + before['case_id']))
            self.assert_unavailable(self.d.get('/v1/customers?phone=600700001'))
            self.assert_unavailable(self.d.post('/v1/cases/%s/notes' % before['case_id'],
                                                {'text': 'lost?'}))
            st, rep, hdrs = self.d.post('/v1/customers/import', '{"id":"OUT-1"}\n',
                                        content_type='application/x-ndjson')
            self.assertEqual(st, 503, rep)
            self.assertIn('retry-after', hdrs)
            self.assertEqual(rep['error']['code'], 'unavailable')
            # validation still answers without Redis
            st, err, _ = self.d.post('/v1/interactions', {'channel': 'pigeon', 'external_id': 'x'})
            self.assertEqual((st, err['error']['code']), (400, 'invalid_field'))
            self.assertEqual(self.d.get('/healthz', auth=False, headers={})[0], 503)
        finally:
            self.redis.start()
        harness.wait_for(lambda: healthz(self.d)[0] == 200, RECOVERY_TIMEOUT,
                         'healthz 200 after redis came back')
        self.assertIs(self.d.proc.poll(), None)
        self.assertEqual(self.d.proc.pid, pid, 'omniccd was restarted')
        # the rejected interaction was not half-stored: it is new now, and the old data is back
        st, r, _ = self.d.post('/v1/interactions', doc)
        self.assertEqual(st, 202, r)
        self.assertFalse(r['duplicate'])
        self.assertEqual(r['customer_id'], before['customer_id'])
        self.assertNotEqual(r['id'], before['id'])
        st, ix, _ = self.d.get('/v1/interactions/' + before['id'])
        self.assertEqual((st, ix['subject']), (200, 'before the outage'))
        st, case, _ = self.d.get('/v1/cases/' + before['case_id'])
        self.assertEqual(st, 200)
        self.assertNotIn('lost?', [h.get('text') for h in case['history']])

    def test_import_cut_by_an_outage_is_safe_to_repeat(self):
        n = 40000
        body = ''.join(json.dumps({'id': 'CUT-%d' % i, 'emails': ['cut%d@example.org' % i],
                                   'phones': ['+34 68%07d' % i], 'annual_premium': i % 3000})
                       + '\n' for i in range(n))
        result = {}

        def run():
            result['resp'] = self.d.post('/v1/customers/import', body,
                                         content_type='application/x-ndjson', timeout=120)
        t = threading.Thread(target=run)
        t.start()
        try:
            # stop Redis once the import has begun to write
            harness.wait_for(lambda: self.d.get('/v1/customers?email=cut0@example.org')[0] != 404
                             or not t.is_alive(), 30, 'import started')
            self.redis.stop()
            t.join(120)
        finally:
            if self.redis.proc is None:
                self.redis.start()
        self.assertFalse(t.is_alive())
        st, rep, hdrs = result['resp']
        if st != 200:  # the usual case: the outage cut the import
            self.assertEqual(st, 503, rep)
            self.assertIn('retry-after', hdrs)
            self.assertEqual(rep['error']['code'], 'unavailable')
            self.assertEqual(rep['lines'], n)
        harness.wait_for(lambda: healthz(self.d)[0] == 200, RECOVERY_TIMEOUT, 'healthz 200')
        st, rep, _ = self.d.post('/v1/customers/import', body, content_type='application/x-ndjson',
                                 timeout=120)
        self.assertEqual(st, 200, rep)
        self.assertEqual((rep['imported'], rep['rejected'], rep['conflicts']), (n, 0, 0), rep)
        for i in (0, 1, n // 3, n // 2, n - 2, n - 1):
            st, c, _ = self.d.get('/v1/customers?email=cut%d@example.org' % i)
            self.assertEqual((st, c['external_id']), (200, 'CUT-%d' % i))
            st, c2, _ = self.d.get('/v1/customers?phone=%%2B3468%07d' % i)
            self.assertEqual(c2['id'], c['id'])

    def test_script_cache_flushed_under_a_live_connection(self):
        # e.g. a failover to a replica, or an operator's SCRIPT FLUSH: NOSCRIPT is retried
        self.assertEqual(self.redis.cli('SCRIPT', 'FLUSH'), 'OK')
        for i in range(3):
            st, r, _ = self.d.post('/v1/interactions', self.ix(subject='after flush %d' % i))
            self.assertEqual(st, 202, r)
            st, ix, _ = self.d.get('/v1/interactions/' + r['id'])
            self.assertEqual((st, ix['subject']), (200, 'after flush %d' % i))

    def test_redis_hung_times_out_with_503_then_recovers(self):
        self.ingest()
        self.redis.kill(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            st, body, hdrs = self.d.post('/v1/interactions', self.ix())
            took = time.monotonic() - t0
            self.assert_unavailable((st, body, hdrs))
            # command_timeout is 1000 ms in the harness configuration
            self.assertLess(took, 5.0)
            harness.wait_for(lambda: healthz(self.d)[0] == 503, 10, 'healthz 503')
        finally:
            self.redis.kill(signal.SIGCONT)
        harness.wait_for(lambda: healthz(self.d)[0] == 200, RECOVERY_TIMEOUT,
                         'healthz 200 after redis resumed')
        st, r, _ = self.d.post('/v1/interactions', self.ix())
        self.assertEqual(st, 202, r)


class StopWhileRedisDownTest(unittest.TestCase):
    def test_sigterm_with_redis_down_exits_0(self):
        tmp = tempfile.mkdtemp(prefix='omnicc-test-')
        redis = harness.RedisServer(tmp)
        d = harness.Omniccd(tmp, redis.url)
        try:
            redis.stop()
            harness.wait_for(lambda: healthz(d)[0] == 503, 10, 'healthz 503')
            t0 = time.monotonic()
            rc = d.stop()
            self.assertEqual(rc, 0, d.log()[-3000:])
            self.assertLess(time.monotonic() - t0, 5.0)
        finally:
            d.stop(signal.SIGKILL)
            redis.stop()
            shutil.rmtree(tmp, ignore_errors=True)


class EmbeddedRedisTest(unittest.TestCase):
    """No [redis] url: omniccd supervises its own redis-server on a unix socket."""

    def setUp(self):
        # short path: the socket lives in state_dir and unix socket paths are ~100 bytes max
        self.tmp = tempfile.mkdtemp(prefix='oe-', dir='/tmp')
        # appendfsync always: with everysec, Redis answers while a write waits for a slow
        # background fsync, so even a SIGKILL of the process alone can lose an acknowledged
        # write on a busy disk (docs/OPERATIONS.md); only always promises nothing is lost.
        self.d = harness.Omniccd(self.tmp, None, name='e',
                                 extra_config='[redis]\nappendfsync = always\n')
        self.sock = os.path.join(self.d.state_dir, 'redis.sock')

    def tearDown(self):
        try:
            rc = self.d.stop()
            if rc not in (0, None):
                print(self.d.log()[-5000:])
                self.fail('omniccd exited with %r' % rc)
        finally:
            for pid in self.redis_pids():
                if os.path.exists('/proc/%d' % pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            shutil.rmtree(self.tmp, ignore_errors=True)

    def redis_pids(self):
        return [int(p) for p in re.findall(r'embedded redis: started \S+ \(pid (\d+)\)',
                                           self.d.log())]

    def current_redis_pid(self):
        pids = self.redis_pids()
        self.assertTrue(pids, self.d.log())
        return pids[-1]

    def parent_of(self, pid):
        with open('/proc/%d/stat' % pid) as f:
            return int(f.read().rsplit(')', 1)[1].split()[1])

    def ingest(self, **kw):
        doc = {'channel': 'voice', 'external_id': 'emb-%f' % time.time(), 'from': '+34600800001'}
        doc.update(kw)
        st, r, _ = self.d.post('/v1/interactions', doc)
        self.assertEqual(st, 202, r)
        return r

    def test_runs_its_own_redis_on_a_unix_socket(self):
        pid = self.current_redis_pid()
        self.assertEqual(self.parent_of(pid), self.d.proc.pid)
        self.assertEqual(harness.redis_cli_unix(self.sock, 'PING'), 'PONG')
        r = self.ingest(subject='embedded')
        st, ix, _ = self.d.get('/v1/interactions/' + r['id'])
        self.assertEqual((st, ix['subject']), (200, 'embedded'))
        # the data is in that redis-server, with AOF on
        out = subprocess.run(['redis-cli', '-s', self.sock, '--raw', 'CONFIG', 'GET', 'appendonly'],
                             capture_output=True, text=True, timeout=30).stdout.split()
        self.assertEqual(out, ['appendonly', 'yes'])
        self.assertNotEqual(harness.redis_cli_unix(self.sock, 'DBSIZE'), '(integer) 0')

    def test_command_line_import_uses_the_embedded_redis(self):
        path = os.path.join(self.tmp, 'h.ndjson')
        with open(path, 'w') as f:
            f.write('{"id": "E-1", "name": "Elena", "phones": ["600800009"], '
                    '"annual_premium": 2500, "tenure_years": 6}\n')
        out = subprocess.run([harness.OMNICCD, '-c', self.d.config_path, 'import', path],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(json.loads(out.stdout)['created'], 1)
        st, c, _ = self.d.get('/v1/customers?phone=600800009')
        self.assertEqual((st, c['name'], c['segment']), (200, 'Elena', 'platinum'))

    def test_sigkilled_redis_is_restarted_and_nothing_acknowledged_is_lost(self):
        before = self.ingest(subject='acknowledged before the crash')
        old = self.current_redis_pid()
        os.kill(old, signal.SIGKILL)
        harness.wait_for(lambda: self.redis_pids()[-1] != old, 10, 'redis-server restarted')
        new = self.current_redis_pid()
        self.assertNotEqual(new, old)
        self.assertFalse(os.path.exists('/proc/%d' % old), 'the killed redis-server was not reaped')
        self.assertEqual(self.parent_of(new), self.d.proc.pid)
        harness.wait_for(lambda: healthz(self.d)[0] == 200, RECOVERY_TIMEOUT,
                         'healthz 200 after the embedded redis restarted')
        self.assertIsNone(self.d.proc.poll())
        after = self.ingest(subject='after the crash')
        self.assertEqual(after['customer_id'], before['customer_id'])
        self.assertNotEqual(after['id'], before['id'])
        st, ix, _ = self.d.get('/v1/interactions/' + before['id'])
        self.assertEqual((st, ix['subject']), (200, 'acknowledged before the crash'))
        # and again: a second crash is survived too
        os.kill(new, signal.SIGKILL)
        harness.wait_for(lambda: self.redis_pids()[-1] != new, 10, 'redis-server restarted')
        harness.wait_for(lambda: healthz(self.d)[0] == 200, RECOVERY_TIMEOUT, 'healthz 200')
        self.assertEqual(self.d.get('/v1/interactions/' + after['id'])[0], 200)

    def test_sigterm_exits_0_and_stops_its_redis(self):
        self.ingest()
        pid = self.current_redis_pid()
        self.assertTrue(os.path.exists('/proc/%d' % pid))
        rc = self.d.stop(signal.SIGTERM)
        self.assertEqual(rc, 0, self.d.log()[-3000:])
        self.assertFalse(os.path.exists('/proc/%d' % pid), 'redis-server still running')
        # started again on the same state_dir, the data is still there (AOF)
        self.d.start()
        self.assertNotEqual(self.current_redis_pid(), pid)
        st, c, _ = self.d.get('/v1/customers?phone=600800001')
        self.assertEqual(st, 200, c)

    def test_sigint_also_stops_cleanly(self):
        pid = self.current_redis_pid()
        rc = self.d.stop(signal.SIGINT)
        self.assertEqual(rc, 0, self.d.log()[-3000:])
        self.assertFalse(os.path.exists('/proc/%d' % pid), 'redis-server still running')


class ReloadTokenTest(unittest.TestCase):
    OLD = 'old-admin-token-aaaaaaaaaaaa'
    NEW = 'new-admin-token-bbbbbbbbbbbb'

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-test-')
        self.redis = harness.RedisServer(self.tmp)
        self.token_file = os.path.join(self.tmp, 'admin.token')
        self.write_token(self.OLD + '\n')
        self.d = harness.Omniccd(self.tmp, self.redis.url, token=self.OLD,
                                 token_file=self.token_file)

    def tearDown(self):
        try:
            rc = self.d.stop()
            if rc not in (0, None):
                print(self.d.log()[-5000:])
                self.fail('omniccd exited with %r' % rc)
        finally:
            self.redis.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write_token(self, text):
        tmp = self.token_file + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text)
        os.replace(tmp, self.token_file)

    def status_with(self, token):
        return self.d.get('/v1/cases/C-1', auth=False,
                          headers={'Authorization': 'Bearer ' + token})[0]

    def test_sighup_rereads_the_token_file(self):
        # 404: authenticated, no such case yet
        self.assertEqual(self.status_with(self.OLD), 404)
        self.assertEqual(self.status_with(self.NEW), 401)
        self.write_token(self.NEW + '\n')
        # nothing changes until SIGHUP
        self.assertEqual(self.status_with(self.OLD), 404)
        self.d.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: self.status_with(self.NEW) != 401, 10, 'new token accepted')
        st, err, hdrs = self.d.get('/v1/cases/C-1', auth=False,
                                   headers={'Authorization': 'Bearer ' + self.OLD})
        self.assertEqual(st, 401, err)
        self.assertEqual(err['error']['code'], 'unauthorized')
        self.assertIn('www-authenticate', hdrs)
        self.d.token = self.NEW
        st, r, _ = self.d.post('/v1/interactions', {'channel': 'voice', 'external_id': 'hup-1',
                                                    'from': '+34600800002'})
        self.assertEqual(st, 202, r)
        self.assertEqual(self.status_with(self.NEW), 200 if r['case_id'] == 'C-1' else 404)
        # a reload that fails (empty token file) keeps the running token
        self.write_token('\n')
        self.d.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: 'keeping the running configuration' in self.d.log(), 10,
                         'failed reload logged')
        self.assertIsNone(self.d.proc.poll())
        self.assertNotEqual(self.status_with(self.NEW), 401)
        self.assertEqual(self.status_with(self.OLD), 401)
        self.assertEqual(self.status_with(''), 401)
        self.assertEqual(healthz(self.d)[0], 200)


if __name__ == '__main__':
    unittest.main()
