"""The least-privilege Redis user (config/redis-acl.conf, docs/OPERATIONS.md): omniccd's
connections (commands and the blocking reader) log in as it, and it can do nothing else:
no command beyond the list, no key outside the deployment's prefix, not even from inside a
script. Every other integration test also runs omniccd as this user (harness.RedisServer)."""
import os
import shutil
import subprocess
import tempfile
import unittest

import harness


class AclTest(harness.TestCase):
    def as_omnicc(self, *args):
        with open(self.redis.password_file) as f:
            password = f.read().strip()
        out = subprocess.run(['redis-cli', '-p', str(self.redis.port), '--user', harness.REDIS_USER,
                              '--pass', password, '--no-auth-warning', '--no-raw']
                             + [str(a) for a in args], capture_output=True, text=True, timeout=30)
        return (out.stdout + out.stderr).strip()

    def test_both_connections_run_as_the_acl_user(self):
        self.ingest()  # the reader's XREAD BLOCK wakes up for the event and blocks again

        def clients():
            return [l for l in self.redis.raw('CLIENT', 'LIST') if 'cmd=client' not in l]
        harness.wait_for(lambda: any('cmd=xread' in l for l in clients()), 10, 'the reader')
        users = sorted(l.split(' user=')[1].split(' ')[0] for l in clients())
        self.assertEqual(users, ['omnicc', 'omnicc'], clients())

    def test_the_acl_user_can_do_nothing_else(self):
        self.assertIn('PONG', self.as_omnicc('PING'))
        for cmd in (['FLUSHALL'], ['CONFIG', 'GET', 'appendfsync'], ['KEYS', '*'],
                    ['EVAL', 'return 1', '0'], ['SCRIPT', 'FLUSH'], ['INFO'], ['CLIENT', 'LIST'],
                    ['SUBSCRIBE', 'x'], ['SHUTDOWN'], ['ACL', 'LIST']):
            self.assertIn('NOPERM', self.as_omnicc(*cmd), cmd)
        self.assertIn('NOPERM', self.as_omnicc('GET', 'other:{main}:seq:ix'))
        self.assertIn('NOPERM', self.as_omnicc('XADD', 'omnicc:x', '*', 'a', 'b'))
        self.assertNotIn('NOPERM', self.as_omnicc('GET', 'omnicc:{main}:seq:ix'))

    def test_the_backup_user_can_only_take_a_snapshot(self):
        with open(self.redis.password_file) as f:
            password = f.read().strip()

        def as_backup(*args):
            out = subprocess.run(['redis-cli', '-p', str(self.redis.port), '--user', 'omnicc-backup',
                                  '--pass', password, '--no-auth-warning', '--no-raw'] + list(args),
                                 capture_output=True, text=True, timeout=30)
            return out.returncode, (out.stdout + out.stderr).strip()
        for cmd in (['GET', 'omnicc:{main}:seq:ix'], ['HGETALL', 'omnicc:{main}:schema'],
                    ['EVALSHA', '0' * 40, '0'], ['FLUSHALL'], ['CONFIG', 'GET', 'dir']):
            self.assertIn('NOPERM', as_backup(*cmd)[1], cmd)
        rdb = os.path.join(self.tmp, 'snapshot.rdb')
        rc, out = as_backup('--rdb', rdb)
        self.assertEqual(rc, 0, out)
        self.assertGreater(os.path.getsize(rdb), 100)

    def test_a_script_cannot_reach_a_key_outside_the_prefix(self):
        # Scripts get only the key base as KEYS[1] and build the rest (docs/REDIS.md); the ACL
        # still checks each key a script touches when it touches it.
        sha = self.redis.cli('SCRIPT', 'LOAD', "return redis.call('GET', ARGV[1])")
        inside = self.as_omnicc('EVALSHA', sha, 1, 'omnicc:{main}:', 'omnicc:{main}:seq:ix')
        self.assertNotIn('NOPERM', inside)
        outside = self.as_omnicc('EVALSHA', sha, 1, 'omnicc:{main}:', 'elsewhere')
        self.assertIn("can't access at least one of the keys", outside)


class AclConfigTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-acl-')
        self.redis = harness.RedisServer(self.tmp)

    def tearDown(self):
        self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_wrong_password_never_serves(self):
        bad = os.path.join(self.tmp, 'bad.password')
        with open(bad, 'w') as f:
            f.write('not-the-password\n')
        d = harness.Omniccd(self.tmp, self.redis.url, start=False,
                            extra_config='[redis]\npassword_file = %s\n' % bad)
        d.start(wait=False)
        try:
            harness.wait_for(lambda: 'WRONGPASS' in d.log(), 10, 'the AUTH error in the log')
            st, body, _ = d.get('/healthz', auth=False)
            self.assertEqual(st, 503, body)
        finally:
            d.stop()

    def test_user_without_password_file_is_a_config_error(self):
        d = harness.Omniccd(self.tmp, None, start=False,
                            extra_config='[redis]\nurl = %s\nuser = omnicc\n' % self.redis.url)
        out = subprocess.run([harness.OMNICCD, '-c', d.config_path, '--check'],
                             capture_output=True, text=True)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn('user: needs password_file', out.stdout + out.stderr)


if __name__ == '__main__':
    unittest.main()
