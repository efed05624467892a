"""The systemd notify protocol spoken for real, and the unit checked by systemd's tools."""
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

UNIT = os.path.join(os.path.dirname(__file__), '..', '..', 'systemd', 'omniccd.service')


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
        count = 0
        while time.time() - t0 < 1.5:
            try:
                if self.sock.recv(4096).decode() == 'WATCHDOG=1':
                    count += 1
            except socket.timeout:
                pass
        self.assertGreaterEqual(count, 4, 'watchdog every 200 ms expected')
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
    @unittest.skipUnless(shutil.which('systemd-analyze'), 'systemd-analyze not installed')
    def test_unit_verifies_and_is_hardened(self):
        with tempfile.TemporaryDirectory() as tmp:
            with open(UNIT) as f:
                text = f.read().replace('/usr/sbin/omniccd', os.path.abspath(harness.OMNICCD))
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


if __name__ == '__main__':
    unittest.main()
