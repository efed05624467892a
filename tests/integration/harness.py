"""Test harness: real redis-server and real omniccd processes on loopback, free ports,
temporary directories. Every integration test starts what it needs through this module."""
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

OMNICCD = os.environ.get('OMNICCD', os.path.join(os.path.dirname(__file__), '..', '..',
                                                 'build', 'daemon', 'omniccd'))
TOKEN = 'test-admin-token-0123456789'
# The documented least-privilege Redis user (docs/OPERATIONS.md): every RedisServer loads it
# and every Omniccd pointed at one runs as it, so a command or key omniccd uses beyond the
# ACL fails a test. The tests themselves inspect Redis as the default user.
REDIS_ACL = os.path.join(os.path.dirname(__file__), '..', '..', 'config', 'redis-acl.conf')
REDIS_USER = 'omnicc'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, what='condition'):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    raise AssertionError('timed out waiting for ' + what)


class RedisServer:
    """redis-server with config/redis-acl.conf loaded: users `omnicc` and `omnicc-backup`
    (password in self.password_file, stored as its SHA-256 as docs/OPERATIONS.md says) and the default
    user, left open for the tests' own inspection."""
    by_url = {}  # url -> RedisServer, so Omniccd(tmp, redis.url) finds the credentials

    def __init__(self, tmp, extra=(), data_dir=None):
        """data_dir: an existing directory with data to start on (a restore); else a new one."""
        # mkdtemp: a name nobody else in tmp holds (a free port may be handed out twice)
        self.dir = data_dir or tempfile.mkdtemp(prefix='redis-', dir=tmp)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.extra = list(extra)
        self.proc = None
        self.password_file = os.path.join(self.dir, 'omnicc.password')
        password = os.urandom(16).hex()
        with open(self.password_file, 'w') as f:
            f.write(password + '\n')
        with open(REDIS_ACL) as f:
            rule = f.read().strip()
        # users omnicc and omnicc-backup (tools/backup), both given this password here
        assert rule.count('>change-me') == 2, 'config/redis-acl.conf: a >change-me per user'
        rule = rule.replace('>change-me', '#' + hashlib.sha256(password.encode()).hexdigest())
        self.aclfile = os.path.join(self.dir, 'users.acl')
        with open(self.aclfile, 'w') as f:
            f.write(rule + '\nuser default on nopass ~* &* +@all\n')
        RedisServer.by_url[self.url] = self
        self.start()

    def start(self):
        with open(os.path.join(self.dir, 'redis.log'), 'ab') as out:
            self.proc = subprocess.Popen(
                ['redis-server', '--port', str(self.port), '--bind', '127.0.0.1', '--dir', self.dir,
                 '--save', '', '--appendonly', 'yes', '--daemonize', 'no',
                 '--aclfile', self.aclfile] + self.extra,
                stdout=out, stderr=subprocess.STDOUT)
        wait_for(self.ping, what='redis-server')

    def config_lines(self):
        """The [redis] keys (after url) that make omniccd log in as the ACL user."""
        return 'user = %s\npassword_file = %s\n' % (REDIS_USER, self.password_file)

    def ping(self):
        return self.cli('PING') == 'PONG'

    def cli(self, *args):
        out = subprocess.run(['redis-cli', '-p', str(self.port), '--no-raw'] + [str(a) for a in args],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().strip('"')

    def raw(self, *args):
        """redis-cli --raw output as a list of lines."""
        out = subprocess.run(['redis-cli', '-p', str(self.port), '--raw'] + [str(a) for a in args],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()

    @property
    def url(self):
        return 'redis://127.0.0.1:%d/0' % self.port

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self, sig=signal.SIGKILL):
        """Signal redis-server (SIGKILL: a crash; SIGSTOP: a hang) without waiting."""
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)
            self.proc = None


def redis_cli_unix(sock, *args):
    """redis-cli against a unix socket (the embedded Redis), --no-raw output stripped."""
    out = subprocess.run(['redis-cli', '-s', sock, '--no-raw'] + [str(a) for a in args],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip().strip('"')


class Omniccd:
    """One omniccd process. The config file has the sections [daemon], [http], [api] and
    (with redis_url) [redis]; extra_config is appended verbatim, and since a section may be
    re-opened later in the file (the last value of a key wins), extra_config can add or
    override keys of those sections too, e.g. '[http]\\nmax_body = 4096\\n'.
    token_file: write `token_file = PATH` instead of `token = TOKEN` (the file must exist);
    requests then authenticate with self.token, which the caller keeps up to date."""
    token = TOKEN  # also for instances made without __init__ (Omniccd.__new__)

    def __init__(self, tmp, redis_url=None, extra_config='', name='omniccd', token=TOKEN,
                 token_file=None, start=True):
        self.dir = os.path.join(tmp, '%s-%d' % (name, free_port()))
        os.makedirs(self.dir)
        self.port = free_port()
        self.token = token
        self.state_dir = os.path.join(self.dir, 'state')
        self.config_path = os.path.join(self.dir, 'omniccd.conf')
        self.log_path = os.path.join(self.dir, 'omniccd.log')
        with open(self.config_path, 'w') as f:
            f.write('[daemon]\nstate_dir = %s\nlog_level = debug\n' % self.state_dir)
            f.write('[http]\nlisten = 127.0.0.1:%d\n' % self.port)
            if token_file:
                f.write('[api]\ntoken_file = %s\n' % token_file)
            else:
                f.write('[api]\ntoken = %s\n' % token)
            if redis_url:
                f.write('[redis]\nurl = %s\ncommand_timeout = 1000\n' % redis_url)
                if redis_url in RedisServer.by_url:
                    f.write(RedisServer.by_url[redis_url].config_lines())
            f.write(extra_config)
        self.proc = None
        if start:
            self.start()

    def start(self, wait=True):
        with open(self.log_path, 'ab') as out:
            self.proc = subprocess.Popen([OMNICCD, '-c', self.config_path],
                                         stdout=out, stderr=subprocess.STDOUT)
        if wait:
            wait_for(lambda: self.request('GET', '/healthz', auth=False)[0] == 200, 15,
                     'omniccd healthy')

    def request(self, method, path, body=None, auth=True, headers=None, content_type=None,
                raw=False, timeout=30):
        conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=timeout)
        h = dict(headers or {})
        if auth:
            h.setdefault('Authorization', 'Bearer ' + self.token)
        data = None
        if body is not None:
            if isinstance(body, (bytes, str)):
                data = body.encode() if isinstance(body, str) else body
            else:
                data = json.dumps(body).encode()
                h.setdefault('Content-Type', 'application/json')
        if content_type:
            h['Content-Type'] = content_type
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        conn.close()
        if raw:
            return resp.status, payload, hdrs
        try:
            return resp.status, json.loads(payload) if payload else None, hdrs
        except ValueError:
            return resp.status, payload, hdrs

    def post(self, path, body, **kw):
        return self.request('POST', path, body, **kw)

    def get(self, path, **kw):
        return self.request('GET', path, **kw)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            rc = self.proc.wait(20)
            self.proc = None
            return rc
        self.proc = None
        return None

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()


def stop_servers(cls, *others):
    """A test class's tearDownClass: its omniccd (the log printed and the class failed when it
    did not exit cleanly), its redis-server and the other servers it started, its temporary
    directory."""
    try:
        rc = cls.d.stop() if cls.d else None
        if rc not in (0, None):
            print(cls.d.log())
            raise AssertionError('omniccd exited with %r' % rc)
    finally:
        for server in (cls.redis,) + others:
            if server:
                server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)


class TestCase(unittest.TestCase):
    """Starts one redis-server and one omniccd per test class."""
    extra_config = ''
    redis_extra = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-test-')
        cls.redis = RedisServer(cls.tmp, cls.redis_extra)
        cls.d = Omniccd(cls.tmp, cls.redis.url, cls.extra_config)

    @classmethod
    def tearDownClass(cls):
        stop_servers(cls)

    _seq = 0

    def ext(self, prefix='ext'):
        TestCase._seq += 1
        return '%s-%d-%d' % (prefix, os.getpid(), TestCase._seq)

    def ingest(self, **fields):
        fields.setdefault('channel', 'voice')
        fields.setdefault('external_id', self.ext())
        status, body, _ = self.d.post('/v1/interactions', fields)
        self.assertEqual(status, 202, body)
        return body
