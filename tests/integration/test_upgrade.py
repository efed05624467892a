"""The Redis data layout version (docs/OPERATIONS.md, "Upgrade"): an empty database gets the
current version, a layout from before versions (layout 0) is migrated, a newer layout this
omniccd cannot read is refused with a clear message and exit status 78 before anything is
written, a newer layout kept readable for this version (a rolling upgrade) is served, and
two daemons at the current version share one Redis."""
import os
import shutil
import tempfile
import time
import unittest

import harness

VERSION, COMPAT = 2, 2  # STORE_SCHEMA_VERSION, STORE_SCHEMA_COMPAT (include/omnicc/store.h)
SCHEMA = 'omnicc:{main}:schema'


class UpgradeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-upgrade-')
        self.redis = harness.RedisServer(self.tmp)
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.stop()
        self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def daemon(self, start=True, name='omniccd'):
        d = harness.Omniccd(self.tmp, self.redis.url, name=name, start=start)
        self.daemons.append(d)
        return d

    def schema(self):
        lines = self.redis.raw('HGETALL', SCHEMA)
        return dict(zip(lines[0::2], lines[1::2]))

    def ingest(self, d, ext):
        st, body, _ = d.post('/v1/interactions', {
            'channel': 'email', 'external_id': ext, 'from': 'ana@example.com',
            'customer': {'policy': 'PL-2024-001234'}, 'subject': 'Windscreen ' + ext})
        self.assertEqual(st, 202, body)
        return body

    def test_empty_database_gets_the_current_version(self):
        d = self.daemon()
        s = self.schema()
        self.assertEqual((s.get('version'), s.get('compat')), (str(VERSION), str(COMPAT)), s)
        self.assertIn('created_at', s)
        self.assertNotIn('migrated_from', s)
        self.assertIn('data layout version %d' % VERSION, d.log())

    def test_layout_0_is_migrated_and_its_data_stays_readable(self):
        d = self.daemon()
        made = [self.ingest(d, 'up-%d' % i) for i in range(5)]
        d.stop()
        # Layout 0: the same keys, no schema hash (every deployment from before versions).
        self.redis.cli('DEL', SCHEMA)
        self.assertEqual(self.redis.cli('EXISTS', SCHEMA), '(integer) 0')
        d.start()
        s = self.schema()
        self.assertEqual((s.get('version'), s.get('compat'), s.get('migrated_from')),
                         (str(VERSION), str(COMPAT), str(VERSION - 1)), s)
        self.assertIn('data layout version 0, migrating to 1', d.log())
        self.assertIn('data layout version 1, migrating to 2', d.log())
        for m in made:
            st, ix, _ = d.get('/v1/interactions/' + m['id'])
            self.assertEqual(st, 200, ix)
            self.assertEqual(ix['case_id'], m['case_id'])
        # the migrated layout takes new work on the same case and customer
        again = self.ingest(d, 'up-after')
        self.assertEqual(again['customer_id'], made[0]['customer_id'])
        # a second start finds the current version: nothing migrates again
        d.stop()
        d.start()
        self.assertEqual(d.log().count('migrating to 1'), 1)
        self.assertEqual(self.schema().get('migrated_at'), s.get('migrated_at'))

    def test_newer_layout_is_refused_before_anything_is_written(self):
        newer = VERSION + 1
        self.redis.cli('HSET', SCHEMA, 'version', newer, 'compat', newer)
        before = self.redis.cli('DBSIZE')
        d = self.daemon(start=False)
        d.start(wait=False)
        rc = d.proc.wait(15)
        d.proc = None
        self.assertEqual(rc, 78, d.log())
        self.assertIn('Redis layout is version %d, this omniccd supports up to %d: upgrade omniccd'
                      % (newer, VERSION), d.log())
        self.assertEqual(self.redis.cli('DBSIZE'), before)
        self.assertEqual(self.redis.cli('EXISTS', 'omnicc:{main}:routing:conf'), '(integer) 0')
        self.assertEqual(self.schema(), {'version': str(newer), 'compat': str(newer)})

    def test_newer_layout_kept_readable_for_this_version_is_served(self):
        # A rolling upgrade: version N+1 made only additive changes (compat stays N), so the
        # version N daemons still running keep serving, and never write the version down.
        newer = VERSION + 1
        self.redis.cli('HSET', SCHEMA, 'version', newer, 'compat', VERSION)
        d = self.daemon()
        self.assertIn('written by a newer omniccd', d.log())
        made = self.ingest(d, 'rolling-1')
        self.assertEqual(d.get('/v1/cases/' + made['case_id'])[0], 200)
        self.assertEqual(self.schema(), {'version': str(newer), 'compat': str(VERSION)})

    def test_damaged_version_is_an_error_and_changes_nothing(self):
        self.redis.cli('HSET', SCHEMA, 'version', 'seven')
        d = self.daemon(start=False)
        d.start(wait=False)
        harness.wait_for(lambda: 'is damaged' in d.log(), 10, 'the damaged-layout error')
        self.assertIsNone(d.proc.poll())  # keeps retrying: an operator can repair the key
        st, body, _ = d.get('/healthz', auth=False)
        self.assertEqual(st, 503, body)
        self.assertEqual(self.redis.cli('EXISTS', 'omnicc:{main}:routing:conf'), '(integer) 0')
        self.redis.cli('HSET', SCHEMA, 'version', VERSION, 'compat', COMPAT)
        harness.wait_for(lambda: d.get('/healthz', auth=False)[0] == 200, 15, 'healthy after repair')

    def test_two_daemons_at_the_current_version_share_redis(self):
        a = self.daemon(start=False, name='a')
        b = self.daemon(start=False, name='b')
        a.start(wait=False)
        b.start(wait=False)
        for d in (a, b):
            harness.wait_for(lambda: d.get('/healthz', auth=False)[0] == 200, 15, 'healthy')
        self.assertEqual(self.schema().get('version'), str(VERSION))
        made = self.ingest(a, 'shared-1')
        st, ix, _ = b.get('/v1/interactions/' + made['id'])
        self.assertEqual(st, 200, ix)
        dup = b.post('/v1/interactions', {'channel': 'email', 'external_id': 'shared-1'})
        self.assertEqual(dup[0], 200, dup[1])
        self.assertTrue(dup[1]['duplicate'])
        self.assertEqual(dup[1]['id'], made['id'])


if __name__ == '__main__':
    unittest.main()
