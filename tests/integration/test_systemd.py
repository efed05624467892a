"""The systemd notify protocol spoken for real, and the unit checked by systemd's tools."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import harness

UNIT = os.path.join(os.path.dirname(__file__), '..', '..', 'systemd', 'omniccd.service.in')
BUILD = os.path.dirname(os.path.dirname(os.path.abspath(harness.OMNICCD)))


class NotifyTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-notify-')
        self.redis = harness.RedisServer(self.tmp)
        self.sock_path = os.path.join(self.tmp, 'notify.sock')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(0.2)
        self.messages = []

    def tearDown(self):
        self.sock.close()
        self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def wait_message(self, pred, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.messages.append((time.time(), msg))
            if pred(msg):
                return msg
        raise AssertionError('no matching notify message; got %r' % self.messages)

    def test_ready_watchdog_reload_stopping(self):
        os.environ['NOTIFY_SOCKET'] = self.sock_path
        os.environ['WATCHDOG_USEC'] = '400000'
        try:
            d = self.start_daemon()
        finally:
            del os.environ['NOTIFY_SOCKET']
            del os.environ['WATCHDOG_USEC']
        self.wait_message(lambda m: 'READY=1' in m.split('\n'))
        # READY means Redis answers and the listener is bound: serve at once
        st, body, _ = d.get('/healthz', auth=False)
        self.assertEqual(st, 200, body)
        t0 = time.time()
        beats = []
        while time.time() - t0 < 2.0:
            try:
                if self.sock.recv(4096).decode() == 'WATCHDOG=1':
                    beats.append(time.time())
            except socket.timeout:
                pass
        # WATCHDOG_USEC 400 ms: fed every half of it, 200 ms (neither missed nor spammed)
        gaps = sorted(b - a for a, b in zip(beats, beats[1:]))
        self.assertGreaterEqual(len(beats), 6, beats)
        self.assertLessEqual(len(beats), 11, beats)
        self.assertTrue(0.15 <= gaps[len(gaps) // 2] <= 0.3, gaps)
        d.proc.send_signal(signal.SIGHUP)
        self.wait_message(lambda m: 'RELOADING=1' in m)
        self.wait_message(lambda m: 'READY=1' in m)
        d.proc.send_signal(signal.SIGTERM)
        self.wait_message(lambda m: 'STOPPING=1' in m)
        self.assertEqual(d.proc.wait(20), 0)

    def test_not_ready_while_redis_is_down(self):
        self.redis.stop()
        os.environ['NOTIFY_SOCKET'] = self.sock_path
        try:
            d = self.start_daemon(wait=False)
        finally:
            del os.environ['NOTIFY_SOCKET']
        with self.assertRaises(AssertionError):
            self.wait_message(lambda m: 'READY=1' in m, timeout=1.5)
        self.redis.start()
        self.wait_message(lambda m: 'READY=1' in m)
        d.stop()

    def start_daemon(self, wait=True):
        d = harness.Omniccd.__new__(harness.Omniccd)
        d.dir = os.path.join(self.tmp, 'd')
        os.makedirs(d.dir, exist_ok=True)
        d.port = harness.free_port()
        d.config_path = os.path.join(d.dir, 'omniccd.conf')
        d.log_path = os.path.join(d.dir, 'omniccd.log')
        with open(d.config_path, 'w') as f:
            f.write('[daemon]\nstate_dir = %s\n[http]\nlisten = 127.0.0.1:%d\n[api]\ntoken = %s\n'
                    '[redis]\nurl = %s\n%s' % (os.path.join(d.dir, 'state'), d.port, harness.TOKEN,
                                              self.redis.url, self.redis.config_lines()))
        d.start(wait=False)
        return d


class UnitFileTest(unittest.TestCase):
    @unittest.skipUnless(shutil.which('systemd-analyze'),
                         'systemd-analyze is not installed (Debian package systemd)')
    def test_unit_verifies_and_is_hardened(self):
        with tempfile.TemporaryDirectory() as tmp:
            with open(UNIT) as f:
                text = (f.read().replace('@sbindir@', os.path.dirname(os.path.abspath(harness.OMNICCD)))
                        .replace('@sysconfdir@', '/etc').replace('@docdir@', '/usr/share/doc/omnicc'))
            unit = os.path.join(tmp, 'omniccd.service')
            with open(unit, 'w') as f:
                f.write(text)
            v = subprocess.run(['systemd-analyze', 'verify', unit], capture_output=True, text=True)
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
            self.assertNotIn('omniccd.service', v.stdout + v.stderr)
            s = subprocess.run(['systemd-analyze', 'security', '--offline=true', unit],
                               capture_output=True, text=True)
            m = re.search(r'Overall exposure level for omniccd.service: ([0-9.]+)', s.stdout)
            self.assertIsNotNone(m, s.stdout + s.stderr)
            self.assertLessEqual(float(m.group(1)), 2.0)


class InstallTest(unittest.TestCase):
    """`meson install` puts the programs, the unit, the system user, the sample config and the
    docs where Debian keeps them, with the unit pointing at the installed paths."""

    def test_meson_install(self):
        intro = subprocess.run(['meson', 'introspect', '--installed', BUILD],
                               capture_output=True, text=True)
        self.assertEqual(intro.returncode, 0, intro.stderr)
        installed = set(json.loads(intro.stdout).values())
        opts = {o['name']: o['value'] for o in json.loads(subprocess.run(
            ['meson', 'introspect', '--buildoptions', BUILD], capture_output=True, text=True).stdout)}
        prefix = opts['prefix']
        etc = os.path.join(prefix, opts['sysconfdir'])
        sbin = os.path.join(prefix, opts['sbindir'])
        doc = os.path.join(prefix, opts['datadir'], 'doc', 'omnicc')
        unit = [p for p in installed if p.endswith('/system/omniccd.service')]
        expected = [os.path.join(sbin, 'omniccd'), os.path.join(prefix, opts['bindir'], 'omnicc-teller'),
                    os.path.join(sbin, 'omnicc-backup'), os.path.join(sbin, 'omnicc-restore'),
                    os.path.join(prefix, 'lib', 'sysusers.d', 'omnicc.conf'),
                    os.path.join(etc, 'omnicc', 'omniccd.conf'),
                    os.path.join(doc, 'OPERATIONS.md'), os.path.join(doc, 'REDIS.md'),
                    os.path.join(doc, 'README.md'), os.path.join(doc, 'examples', 'redis-acl.conf'),
                    os.path.join(prefix, opts['datadir'], 'omnicc', 'web', 'chat', 'index.html')]
        self.assertEqual(len(unit), 1, installed)
        with tempfile.TemporaryDirectory() as dest:
            r = subprocess.run(['meson', 'install', '-C', BUILD, '--destdir', dest, '--no-rebuild',
                                '--quiet'], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            for p in expected + unit:
                self.assertTrue(os.path.isfile(dest + p), p)
            for p in ('omniccd', 'omnicc-backup', 'omnicc-restore'):
                self.assertTrue(os.access(dest + os.path.join(sbin, p), os.X_OK), p)
            with open(dest + unit[0]) as f:
                text = f.read()
            self.assertIn('ExecStart=%s/omniccd -c %s/omnicc/omniccd.conf\n' % (sbin, etc), text)
            self.assertIn('Documentation=file:%s/OPERATIONS.md\n' % doc, text)
            self.assertNotRegex(text, r'@[a-z]+@')
            with open(dest + os.path.join(prefix, 'lib', 'sysusers.d', 'omnicc.conf')) as f:
                self.assertRegex(f.read(), r'(?m)^u omnicc ')


if __name__ == '__main__':
    unittest.main()
