"""Redis Sentinel failover under ingest load, with real processes on loopback: one primary,
two replicas and three redis-sentinels; omniccd finds the primary through the sentinels.
Clients POST /v1/interactions with unique external_ids and retry the same id on 5xx or a
timeout, as a provider does. Mid-load the primary is SIGKILLed; the sentinels promote a
replica and omniccd follows without a restart. The sentinels require a password (their
requirepass, and sentinel-pass between themselves): omniccd authenticates to ask for the
primary and to subscribe to +switch-master, so a failover it follows proves both.

- ack_replicas = 1: every external_id answered 2xx is on the new primary afterwards.
- ack_replicas = 0: what was acknowledged but lost is counted and printed (no assertion on
  the count: it is what docs/REDIS.md reports)."""
import http.client
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

import redis

import harness

MASTER = 'omnicc-ha'
KEY = 'omnicc:{main}:'
WORKERS = 8


def metric(d, name):
    st, text, _ = d.request('GET', '/metrics', raw=True)
    assert st == 200, st
    m = re.search(r'^%s (\d+)$' % re.escape(name), text.decode(), re.M)
    assert m, '%s not in /metrics' % name
    return int(m.group(1))


def discard(r):
    """SIGKILL a throwaway redis-server: a SIGTERMed replica may first rewrite its AOF,
    which on a loaded machine can outlast any sensible wait."""
    if r and r.proc:
        r.kill(signal.SIGKILL)


SENTINEL_PASSWORD = 'sentinel-secret-' + os.urandom(6).hex()


class Sentinel:
    def __init__(self, tmp, primary_port):
        self.port = harness.free_port()
        self.dir = tempfile.mkdtemp(prefix='sentinel-', dir=tmp)
        self.conf = os.path.join(self.dir, 'sentinel.conf')
        with open(self.conf, 'w') as f:  # redis-sentinel rewrites this file: it must be its own
            f.write('port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n'
                    'requirepass %s\nsentinel sentinel-pass %s\n'
                    'sentinel monitor %s 127.0.0.1 %d 2\n'
                    'sentinel down-after-milliseconds %s 1000\n'
                    'sentinel failover-timeout %s 10000\n'
                    'sentinel parallel-syncs %s 2\n'
                    % (self.port, self.dir, os.path.join(self.dir, 'sentinel.log'),
                       SENTINEL_PASSWORD, SENTINEL_PASSWORD, MASTER, primary_port, MASTER,
                       MASTER, MASTER))
        self.proc = subprocess.Popen(['redis-sentinel', self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        self.r = redis.Redis(port=self.port, password=SENTINEL_PASSWORD, decode_responses=True,
                             socket_timeout=5)

    def master(self):
        try:
            return self.r.sentinel_master(MASTER)
        except redis.RedisError:
            return None

    def primary_port(self):
        try:
            addr = self.r.sentinel_get_master_addr_by_name(MASTER)
        except redis.RedisError:
            return None
        return int(addr[1]) if addr else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Load:
    """WORKERS threads ingesting unique external_ids, each retried until answered 2xx."""

    def __init__(self, port, run):
        self.port = port
        self.run = run
        self.acked = []          # (external_id, monotonic time of the 2xx)
        self.statuses = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.seq = 0
        self.threads = [threading.Thread(target=self.worker, args=(i,)) for i in range(WORKERS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
            assert not t.is_alive(), 'a load thread hangs'

    def count(self, since=0.0):
        with self.lock:
            return sum(1 for _, t in self.acked if t >= since)

    def post(self, ext):
        conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=5)
        try:
            conn.request('POST', '/v1/interactions', body=json.dumps({
                'channel': 'voice', 'external_id': ext, 'from': '+34 600 %06d' % (hash(ext) % 10**6),
                'subject': 'failover load'}), headers={
                'Authorization': 'Bearer ' + harness.TOKEN, 'Content-Type': 'application/json'})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            return 'timeout/reset'
        finally:
            conn.close()

    def worker(self, i):
        while not self.stop.is_set():
            with self.lock:
                self.seq += 1
                ext = 'ha-%s-%d-%d' % (self.run, i, self.seq)
            while not self.stop.is_set():  # the same id until acknowledged, like a provider
                st = self.post(ext)
                with self.lock:
                    self.statuses[st] = self.statuses.get(st, 0) + 1
                    if st in (200, 202):
                        self.acked.append((ext, time.monotonic()))
                        break
                if st not in (503, 500, 502, 504, 'timeout/reset'):
                    raise AssertionError('unexpected answer %r for %s' % (st, ext))
                time.sleep(0.05)


class SentinelFailoverTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-ha-')
        self.redis = []
        self.sentinels = []
        self.d = None

    def tearDown(self):
        try:
            if self.d:
                rc = self.d.stop()
                log = self.d.log()
                if rc not in (0, None) or 'runtime error' in log or 'Sanitizer' in log:
                    print(log[-5000:])
                    self.fail('omniccd exited with %r' % rc)
        finally:
            for s in self.sentinels:
                s.stop()
            for r in self.redis:
                discard(r)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start_set(self):
        primary = harness.RedisServer(self.tmp, ['--repl-diskless-sync-delay', '0'])
        self.redis.append(primary)
        for _ in range(2):
            self.redis.append(harness.RedisServer(
                self.tmp, ['--replicaof', '127.0.0.1', str(primary.port),
                           '--repl-diskless-sync-delay', '0']))
        harness.wait_for(lambda: primary.cli('INFO', 'replication').count('state=online') == 2,
                         30, 'two replicas online')
        self.sentinels = [Sentinel(self.tmp, primary.port) for _ in range(3)]

        def sentinels_know_each_other():
            for s in self.sentinels:
                m = s.master()
                if not m or int(m['num-slaves']) != 2 or int(m['num-other-sentinels']) != 2:
                    return False
            return True
        harness.wait_for(sentinels_know_each_other, 30, 'sentinels to see 2 replicas, 2 peers')
        return primary

    def start_daemon(self, ack_replicas):
        secret = os.path.join(self.tmp, 'sentinel.password')
        with open(secret, 'w') as f:
            f.write(SENTINEL_PASSWORD + '\n')
        cfg = ('[redis]\nsentinels = %s\nsentinels = %s\nmaster_name = %s\n'
               'sentinel_password_file = %s\n'
               'ack_replicas = %d\nack_timeout = 1000\ncommand_timeout = 2000\n'
               % (' '.join('127.0.0.1:%d' % s.port for s in self.sentinels[:2]),
                  '127.0.0.1:%d' % self.sentinels[2].port, MASTER, secret, ack_replicas))
        self.d = harness.Omniccd(self.tmp, None, cfg, name='ha')

    def failover_under_load(self, ack_replicas):
        primary = self.start_set()
        self.start_daemon(ack_replicas)
        pid = self.d.proc.pid
        load = Load(self.d.port, '%d-%d' % (ack_replicas, os.getpid()))
        load.start()
        try:
            harness.wait_for(lambda: load.count() >= 150, 30, '150 ingests before the failover')
            old_port = primary.port
            primary.kill(signal.SIGKILL)
            killed_at = time.monotonic()
            harness.wait_for(lambda: all(s.primary_port() not in (None, old_port)
                                         for s in self.sentinels), 30, 'sentinels to fail over')
            failed_over = time.monotonic()
            # omniccd follows: ingests acknowledged again, by the same process
            harness.wait_for(lambda: load.count(since=failed_over) >= 100, 30,
                             '100 ingests acknowledged after the failover')
        finally:
            load.join()
        # The primary the sentinels settled on. On a loaded machine a first failover can be
        # aborted and retried with the other replica, so it is read now, once they agree and
        # it says it is a primary, and acknowledged ids are looked for there.
        settled = {}

        def agreed():
            ports = {s.primary_port() for s in self.sentinels}
            if len(ports) != 1 or None in ports or old_port in ports:
                return False
            settled['port'] = ports.pop()
            r = redis.Redis(port=settled['port'], decode_responses=True, socket_timeout=5)
            return r.execute_command('ROLE')[0] == 'master'
        harness.wait_for(agreed, 30, 'the sentinels to agree on a primary')
        new_port = settled['port']
        self.assertIsNone(self.d.proc.poll(), 'omniccd exited')
        self.assertEqual(self.d.proc.pid, pid)
        st, health, _ = self.d.get('/healthz', auth=False)
        self.assertEqual(st, 200, health)
        # both connections moved: commands, and the event reader's XREAD BLOCK (which no
        # ingest waits for, so it may get there a moment later)
        for conn in ('redis', 'redis reader'):
            line = '%s: ready (primary 127.0.0.1:%d of %s)' % (conn, new_port, MASTER)
            harness.wait_for(lambda: line in self.d.log(), 15, line)
        # the subscription (made after AUTH) told omniccd of the failover
        harness.wait_for(lambda: '(+switch-master)' in self.d.log(), 15,
                         '+switch-master through the authenticated subscription')
        self.assertGreaterEqual(metric(self.d, 'omnicc_redis_failovers_total'), 1)
        new = redis.Redis(port=new_port, decode_responses=True)
        self.assertEqual(new.execute_command('ROLE')[0], 'master')
        with load.lock:
            acked = [e for e, _ in load.acked]
        pipe = new.pipeline(transaction=False)
        for e in acked:
            pipe.get(KEY + 'idem:voice:' + e)
        ids = pipe.execute()
        lost = [e for e, i in zip(acked, ids) if not i]
        pipe = new.pipeline(transaction=False)
        for i in ids:
            if i:
                pipe.hget(KEY + 'ix:' + i, 'external_id')
        stored = set(pipe.execute())
        print('\nack_replicas = %d: %d acknowledged (%d after the failover), %d lost; '
              'failover took %.1f s after SIGKILL; answers %s'
              % (ack_replicas, len(acked), load.count(since=failed_over), len(lost),
                 failed_over - killed_at,
                 dict(sorted(((str(k), v) for k, v in load.statuses.items())))), flush=True)
        return acked, lost, stored

    def test_acknowledged_with_one_replica_survives_failover(self):
        acked, lost, stored = self.failover_under_load(1)
        self.assertFalse(lost, 'acknowledged but lost: %s' % lost[:20])
        self.assertEqual(stored & set(acked), set(acked))

    def test_a_refused_sentinel_password_is_logged_and_omniccd_stays_unready(self):
        self.start_set()
        secret = os.path.join(self.tmp, 'wrong.password')
        with open(secret, 'w') as f:
            f.write('not-the-password\n')
        cfg = ('[redis]\nsentinels = 127.0.0.1:%d\nmaster_name = %s\n'
               'sentinel_password_file = %s\ncommand_timeout = 2000\n'
               % (self.sentinels[0].port, MASTER, secret))
        self.d = harness.Omniccd(self.tmp, None, cfg, name='ha-wrong', start=False)
        self.d.start(wait=False)
        line = 'redis: sentinel 127.0.0.1:%d refused AUTH: WRONGPASS' % self.sentinels[0].port
        harness.wait_for(lambda: line in self.d.log(), 15, line)
        st, body, _ = self.d.get('/healthz', auth=False)
        self.assertEqual(st, 503, body)
        self.assertNotIn('ready (primary', self.d.log())

    def test_without_replica_acknowledgement_loss_is_measured(self):
        acked, lost, stored = self.failover_under_load(0)
        self.assertGreater(len(acked), 250)
        # every id that did survive is stored whole (the interaction its idempotency key names)
        self.assertEqual(len(stored & set(acked)), len(acked) - len(lost))


class AckReplicasTest(unittest.TestCase):
    """ack_replicas without Sentinel: a primary given by url, replicas attached by hand."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-ha-')
        self.primary = harness.RedisServer(self.tmp)
        self.replica = None
        self.d = harness.Omniccd(self.tmp, self.primary.url,
                                 '[redis]\nack_replicas = 1\nack_timeout = 1500\n', name='ack')

    def tearDown(self):
        try:
            rc = self.d.stop()
            log = self.d.log()
            if rc not in (0, None) or 'runtime error' in log or 'Sanitizer' in log:
                print(log[-5000:])
                self.fail('omniccd exited with %r' % rc)
        finally:
            for r in (self.replica, self.primary):
                discard(r)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def test_no_replica_means_503_then_the_retry_is_a_duplicate(self):
        doc = {'channel': 'voice', 'external_id': 'ack-%d' % os.getpid(), 'from': '+34600900001'}
        t0 = time.monotonic()
        st, body, hdrs = self.d.post('/v1/interactions', doc)
        self.assertEqual(st, 503, body)
        self.assertEqual(body['error']['code'], 'unavailable', body)
        self.assertGreaterEqual(int(hdrs['retry-after']), 1)
        self.assertLess(time.monotonic() - t0, 8.0)  # ack_timeout, not a hang
        self.assertEqual(metric(self.d, 'omnicc_redis_replica_shortfalls_total'), 1)
        # the script did run on the primary (WAIT comes after it): not acknowledged, but there
        ix_id = self.primary.cli('GET', KEY + 'idem:voice:' + doc['external_id'])
        self.assertTrue(ix_id.startswith('I-'), ix_id)
        # reads need no replica
        st, ix, _ = self.d.get('/v1/interactions/' + ix_id)
        self.assertEqual((st, ix['external_id']), (200, doc['external_id']))
        # a replica attaches: the provider's retry of the same id is the original, now confirmed
        self.replica = harness.RedisServer(self.tmp, ['--replicaof', '127.0.0.1',
                                                      str(self.primary.port)])
        harness.wait_for(lambda: 'state=online' in self.primary.cli('INFO', 'replication'), 30,
                         'replica online')

        def retried():
            st, r, _ = self.d.post('/v1/interactions', doc)
            return st == 200 and r
        harness.wait_for(retried, 20, 'the retry answered 200')
        st, r, _ = self.d.post('/v1/interactions', doc)
        self.assertEqual((st, r['duplicate'], r['id']), (200, True, ix_id))
        new = dict(doc, external_id=doc['external_id'] + '-2')
        r = self.confirmed(new)
        self.assertEqual(self.replica.cli('GET', KEY + 'idem:voice:' + new['external_id']), r['id'])
        # the script cache lost (as on a promoted replica that never loaded the scripts): the
        # reloaded and resent script gets a WAIT of its own and is confirmed as well
        self.assertEqual(self.primary.cli('SCRIPT', 'FLUSH'), 'OK')
        again = dict(doc, external_id=doc['external_id'] + '-3')
        r = self.confirmed(again)
        self.assertEqual(self.replica.cli('GET', KEY + 'idem:voice:' + again['external_id']),
                         r['id'])
        self.assertIn('NOSCRIPT for ingest', self.d.log())

    def confirmed(self, doc):
        """POST until 2xx like a provider. A loaded machine may keep the replica from
        confirming within ack_timeout, so a 503 for too few replicas is allowed (never one for
        a timeout: every script has a WAIT behind it that answers); the retry of the same id
        must then be the same interaction."""
        for _ in range(20):
            st, r, _ = self.d.post('/v1/interactions', doc)
            if st in (200, 202):
                return r
            self.assertEqual(st, 503, r)
            self.assertIn('NOREPLICAS', r['error']['message'])
            time.sleep(0.2)
        self.fail('no 2xx for %s' % doc['external_id'])


class SentinelConfigTest(unittest.TestCase):
    def check(self, redis_section):
        tmp = tempfile.mkdtemp(prefix='omnicc-ha-')
        try:
            d = harness.Omniccd(tmp, None, '[redis]\n' + redis_section, start=False)
            out = subprocess.run([harness.OMNICCD, '-c', d.config_path, '--check'],
                                 capture_output=True, text=True, timeout=30)
            return out.returncode, out.stdout + out.stderr
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_bad_sentinel_settings_are_refused_with_the_line(self):
        for section, msg in [
                ('sentinels = 127.0.0.1:26379\n', 'sentinels: needs master_name'),
                ('master_name = m\n', 'master_name: needs sentinels'),
                ('sentinels = 127.0.0.1\nmaster_name = m\n', 'is not host:port'),
                ('sentinels = 127.0.0.1:0\nmaster_name = m\n', 'is not host:port'),
                ('url = redis://127.0.0.1:6379/0\nsentinels = 127.0.0.1:26379\nmaster_name = m\n',
                 'set url or sentinels, not both'),
                ('ack_replicas = 1\n', 'embedded redis-server has no replicas'),
                ('url = redis://127.0.0.1:6379/0\nack_replicas = 17\n', 'between 0 and 16'),
                ('url = redis://127.0.0.1:6379/0\nack_timeout = 5\n', 'between 10 and 60000'),
                ('url = redis://127.0.0.1:6379/0\nsentinel_password_file = /etc/hostname\n',
                 'sentinel_password_file: needs sentinels'),
                ('sentinels = 127.0.0.1:26379\nmaster_name = m\nsentinel_user = u\n',
                 'sentinel_user: needs sentinel_password_file'),
                ('sentinels = 127.0.0.1:26379\nmaster_name = m\n'
                 'sentinel_password_file = /nonexistent/sentinel.password\n',
                 'sentinel_password_file: ')]:
            rc, out = self.check(section)
            self.assertNotEqual(rc, 0, section)
            self.assertIn(msg, out, section)
            self.assertRegex(out, r'omniccd\.conf:\d+: ', section)
        rc, out = self.check('sentinels = 127.0.0.1:26379 [::1]:26380\nsentinels = '
                             'sentinel.example:26381\nmaster_name = m\nack_replicas = 2\n')
        self.assertEqual(rc, 0, out)


if __name__ == '__main__':
    unittest.main(verbosity=2)
