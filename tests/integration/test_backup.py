"""Backup and restore (tools/backup, tools/restore; docs/OPERATIONS.md, "Back up and
restore"): a backup taken while omniccd ingests mail with attachments, restored onto a fresh
state directory and a fresh redis-server, serves every case and interaction acknowledged
before the backup began and every attachment any restored interaction refers to, byte for
byte. A damaged backup or a non-empty target is refused and changes nothing."""
import email.message
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import harness

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')
BACKUP = os.path.join(ROOT, 'tools', 'backup')
RESTORE = os.path.join(ROOT, 'tools', 'restore')


def mail(n, files):
    m = email.message.EmailMessage()
    m['From'] = 'holder%d@example.com' % (n % 7)
    m['To'] = 'claims@insurer.example'
    m['Subject'] = 'Claim photos %d' % n
    m['Message-ID'] = '<backup-%d@example.com>' % n
    m.set_content('Photos of the damage, policy PL-2024-%06d.' % (n % 7))
    for i, data in enumerate(files):
        m.add_attachment(data, maintype='application', subtype='octet-stream',
                         filename='photo-%d-%d.bin' % (n, i))
    return m.as_bytes()


class BackupTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-backup-')
        self.redis = harness.RedisServer(self.tmp)
        self.d = harness.Omniccd(self.tmp, self.redis.url, name='source')
        self.files = {}  # sha256 -> bytes, of every attachment sent
        self.acked = {}  # interaction id -> (case id, [sha256])
        self.seq = 0
        self.lock = threading.Lock()
        self.others = []

    def tearDown(self):
        for p in [self.d] + self.others:
            p.stop()
        self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def send_mail(self, d):
        with self.lock:
            self.seq += 1
            n = self.seq
        files = [os.urandom(1000 + 997 * ((n + i) % 13)) for i in range(1 + n % 2)]
        st, body, _ = d.request('POST', '/v1/email/inbound', mail(n, files),
                                content_type='message/rfc822')
        self.assertEqual(st, 202, body)
        st, ix, _ = d.get('/v1/interactions/' + body['id'])
        self.assertEqual(st, 200, ix)
        meta = ix['metadata'] if isinstance(ix['metadata'], dict) else json.loads(ix['metadata'])
        shas = [a['sha256'] for a in meta['attachments']]
        self.assertEqual(len(shas), len(files))
        with self.lock:
            for data in files:
                self.files[hashlib.sha256(data).hexdigest()] = data
            self.acked[body['id']] = (body['case_id'], shas + [meta['raw_sha256']])
        return body['id']

    def as_backup_user(self):
        """redis-cli options for tools/backup: the omnicc-backup user of config/redis-acl.conf."""
        with open(self.redis.password_file) as f:
            return ['-p', str(self.redis.port), '--user', 'omnicc-backup', '--pass', f.read().strip()]

    def run_tool(self, *args):
        return subprocess.run(list(args), capture_output=True, text=True, timeout=300)

    def test_backup_while_ingesting_restores_everything(self):
        for _ in range(30):
            self.send_mail(self.d)
        voice = [self.d.post('/v1/interactions', {'channel': 'voice', 'external_id': 'bk-v%d' % i,
                                                  'from': '+34 600 111 %03d' % i})[1]
                 for i in range(10)]
        st, _, _ = self.d.post('/v1/cases/%s/notes' % voice[0]['case_id'],
                               {'text': 'called back', 'author': 'alice'})
        self.assertEqual(st, 200)
        before = dict(self.acked)

        # keep ingesting while the backup runs
        stop = threading.Event()
        during = []

        def writer():
            while not stop.is_set():
                during.append(self.send_mail(self.d))
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3)
        out = os.path.join(self.tmp, 'backup')
        r = self.run_tool(BACKUP, '-s', self.d.state_dir, '-o', out, '--', *self.as_backup_user())
        time.sleep(0.3)
        stop.set()
        t.join(30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertFalse(os.path.exists(out + '.partial'))
        self.assertGreater(len(during), 0, 'nothing was ingested during the backup')

        # a fresh redis-server and a fresh state directory
        target = harness.Omniccd(self.tmp, None, name='restored', start=False)
        self.others.append(target)
        rdir = os.path.join(self.tmp, 'redis-restored')
        r = self.run_tool(RESTORE, out, target.state_dir, rdir)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        red2 = harness.RedisServer(self.tmp, data_dir=rdir)
        self.d.stop()
        self.redis.stop()  # the source is gone: only the backup answers from here on
        try:
            with open(target.config_path, 'a') as f:
                f.write('[redis]\nurl = %s\n%s' % (red2.url, red2.config_lines()))
            target.start()
            restored_during = 0
            for iid, (case_id, shas) in self.acked.items():
                st, ix, _ = target.get('/v1/interactions/' + iid)
                if iid not in before and st == 404:
                    continue  # acknowledged after the snapshot: not in this backup
                self.assertEqual(st, 200, (iid, ix))
                if iid not in before:
                    restored_during += 1
                self.assertEqual(ix['case_id'], case_id)
                st, case, _ = target.get('/v1/cases/' + case_id)
                self.assertEqual(st, 200, case)
                for sha in shas:
                    st, data, _ = target.request('GET', '/v1/attachments/' + sha, raw=True)
                    self.assertEqual(st, 200, (iid, sha))
                    if sha in self.files:
                        self.assertEqual(data, self.files[sha])
            for v in voice:
                st, ix, _ = target.get('/v1/interactions/' + v['id'])
                self.assertEqual(st, 200, ix)
            st, case, _ = target.get('/v1/cases/%s?limit=100' % voice[0]['case_id'])
            self.assertTrue(any(h['type'] == 'note' for h in case['history']), case)
            # the restored deployment goes on: same ids continue, an old message is a duplicate
            st, again, _ = target.request('POST', '/v1/email/inbound', mail(1, [b'x']),
                                          content_type='message/rfc822')
            self.assertEqual((st, again['duplicate']), (200, True), again)
            print('\nbackup: %d interactions before, %d acknowledged during the backup, '
                  '%d of those in it, %d attachments' % (len(before), len(during),
                                                        restored_during, len(self.files)))
        finally:
            target.stop()
            red2.stop()

    def test_damaged_backup_or_used_target_is_refused(self):
        self.send_mail(self.d)
        out = os.path.join(self.tmp, 'backup')
        r = self.run_tool(BACKUP, '-s', self.d.state_dir, '-o', out, '--', '-p', str(self.redis.port))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = self.run_tool(BACKUP, '-s', self.d.state_dir, '-o', out, '--', '-p', str(self.redis.port))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('already exists', r.stderr)

        used = os.path.join(self.tmp, 'used')
        os.makedirs(used)
        with open(os.path.join(used, 'keep'), 'w') as f:
            f.write('x')
        fresh = os.path.join(self.tmp, 'fresh')
        r = self.run_tool(RESTORE, out, used, fresh)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('is not empty', r.stderr)
        self.assertEqual(os.listdir(used), ['keep'])
        self.assertFalse(os.path.exists(fresh))

        att = os.path.join(out, 'state', 'attachments')
        sub = sorted(os.listdir(att))[0]
        victim = os.path.join(att, sub, sorted(os.listdir(os.path.join(att, sub)))[0])
        with open(victim, 'r+b') as f:
            b = f.read(1)
            f.seek(0)
            f.write(bytes([b[0] ^ 1]))
        r = self.run_tool(RESTORE, out, fresh, os.path.join(self.tmp, 'fresh-redis'))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('does not match its MANIFEST', r.stderr)
        self.assertFalse(os.path.exists(fresh))

        # a Redis that cannot be reached: no backup directory appears
        r = self.run_tool(BACKUP, '-s', self.d.state_dir, '-o', os.path.join(self.tmp, 'b2'),
                          '--', '-p', str(harness.free_port()))
        self.assertNotEqual(r.returncode, 0)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'b2')))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, 'b2.partial')))


class EmbeddedBackupTest(unittest.TestCase):
    """Embedded mode (no [redis] url): the snapshot comes through the unix socket in
    state_dir, and the restore puts files and Redis data into one fresh directory."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='ob-', dir='/tmp')  # unix socket paths are short
        self.d = harness.Omniccd(self.tmp, None, name='e')

    def tearDown(self):
        self.d.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_embedded_backup_and_restore(self):
        made = []
        for i in range(5):
            st, body, _ = self.d.post('/v1/interactions', {'channel': 'voice', 'external_id': 'e%d' % i})
            self.assertEqual(st, 202, body)
            made.append(body)
        files = [os.urandom(3000)]
        st, body, _ = self.d.request('POST', '/v1/email/inbound', mail(900, files),
                                     content_type='message/rfc822')
        self.assertEqual(st, 202, body)
        sha = hashlib.sha256(files[0]).hexdigest()
        # relative paths, as an operator types them (the tools change directory inside)
        out = os.path.join(self.tmp, 'bk')
        rel_state = os.path.relpath(self.d.state_dir, self.tmp)
        r = subprocess.run([os.path.abspath(BACKUP), '-s', rel_state, '-o', 'bk', '--', '-s',
                            os.path.join(self.d.state_dir, 'redis.sock')],
                           capture_output=True, text=True, timeout=120, cwd=self.tmp)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # the embedded Redis's own files are not copied: the snapshot stands for them
        self.assertEqual(sorted(os.listdir(os.path.join(out, 'state'))), ['attachments', 'webchat.key'])
        self.d.stop()

        e2 = harness.Omniccd(self.tmp, None, name='f', start=False)
        rel = os.path.relpath(e2.state_dir, self.tmp)
        r = subprocess.run([os.path.abspath(RESTORE), 'bk', rel, rel], capture_output=True,
                           text=True, timeout=120, cwd=self.tmp)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        try:
            e2.start()
            for m in made:
                st, ix, _ = e2.get('/v1/interactions/' + m['id'])
                self.assertEqual((st, ix['case_id']), (200, m['case_id']))
            st, data, _ = e2.request('GET', '/v1/attachments/' + sha, raw=True)
            self.assertEqual((st, data), (200, files[0]))
        finally:
            e2.stop()


if __name__ == '__main__':
    unittest.main()
