"""Shared by the routing benchmarks (tests/bench/route, tests/bench/scale): a release build
of omniccd, a private redis-server and omniccd instances on free loopback ports in a
temporary directory, stopped (by pid, in reverse order) on exit, error or signal. The HTTP
and SSE client is tests/integration/aioclient.py (asyncio, standard library only)."""
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
TOKEN = 'bench-admin-token-0123456789'
KEY = 'omnicc:{main}:'
CHANNELS = ('voice', 'email', 'fax', 'branch', 'webchat')

procs = []  # (name, Popen), stopped in reverse order


def log(msg=''):
    print(msg, flush=True)


def die(msg):
    raise SystemExit('bench: ' + msg)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.05)
    die('timed out waiting for ' + what)


def percentile(values, p):
    if not values:
        return float('nan')
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def on_signal(sig, frame):
    raise SystemExit('bench: interrupted by signal %d' % sig)


def install_signal_handlers():
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)


def ensure_tools(extra=()):
    need = {'redis-server': 'redis-server', 'redis-cli': 'redis-tools', 'meson': 'meson',
            'ninja': 'ninja-build'}
    need.update(dict(extra))
    missing = sorted({pkg for exe, pkg in need.items() if not shutil.which(exe)})
    if importlib.util.find_spec('redis') is None:
        missing.append('python3-redis')
    if not missing:
        return
    if os.geteuid() != 0:
        die('missing packages: %s (install them, or run as root)' % ' '.join(missing))
    log('installing: ' + ' '.join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    subprocess.run(['apt-get', 'update', '-qq'], check=True, env=env)
    subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends'] + missing,
                   check=True, env=env, stdout=subprocess.DEVNULL)


def build(build_dir=None, omniccd=None):
    """Path of a release omniccd: the given binary, else the working tree built (release,
    no tests) in build_dir (default build-bench/, shared with tests/bench/ingest)."""
    if omniccd:
        if not os.access(omniccd, os.X_OK):
            die('no omniccd at ' + omniccd)
        return omniccd
    build_dir = build_dir or os.path.join(ROOT, 'build-bench')
    if not os.path.isdir(build_dir):
        log('building omniccd in %s (release)' % build_dir)
        r = subprocess.run(['meson', 'setup', build_dir, '--buildtype=release', '-Dtests=false'],
                           cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stdout + r.stderr)
            die('meson setup failed')
    r = subprocess.run(['ninja', '-C', build_dir], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        die('build failed')
    return os.path.join(build_dir, 'daemon', 'omniccd')


def start(name, argv, logpath, env=None):
    out = open(logpath, 'ab')
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env)
    out.close()
    procs.append((name, p))
    return p


def stop_all():
    for name, p in reversed(procs):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    procs.clear()


def tail(path, n=30):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-n:])
    except OSError:
        return '(no log)'


def proc_cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def proc_rss_bytes(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return 0


class Redis:
    """A private redis-server (AOF on, appendfsync everysec, like production)."""

    def __init__(self, tmp, extra=()):
        import redis
        self.port = free_port()
        self.dir = os.path.join(tmp, 'redis')
        os.makedirs(self.dir)
        self.log = os.path.join(self.dir, 'redis.log')
        self.proc = start('redis-server', [
            'redis-server', '--port', str(self.port), '--bind', '127.0.0.1',
            '--dir', self.dir, '--save', '', '--appendonly', 'yes',
            '--appendfsync', 'everysec', '--daemonize', 'no'] + list(extra), self.log)
        self.r = redis.Redis(port=self.port, decode_responses=True)
        wait_for(self._ping, 10, 'redis-server')

    def _ping(self):
        import redis
        try:
            return self.r.ping()
        except redis.ConnectionError:
            return False

    @property
    def url(self):
        return 'redis://127.0.0.1:%d/0' % self.port

    def cpu_seconds(self):
        i = self.r.info('cpu')
        return float(i['used_cpu_user']) + float(i['used_cpu_sys'])

    def used_memory(self):
        return int(self.r.info('memory')['used_memory'])

    def commandstats(self):
        """{command: calls}"""
        return {k.replace('cmdstat_', ''): v['calls'] if isinstance(v, dict) else v
                for k, v in self.r.info('commandstats').items()}


class Daemon:
    def __init__(self, tmp, omniccd, redis_url, extra_config='', name='omniccd', log_level='warn'):
        self.port = free_port()
        self.dir = os.path.join(tmp, '%s-%d' % (name, self.port))
        os.makedirs(self.dir)
        self.log = os.path.join(self.dir, 'omniccd.log')
        self.conf = os.path.join(self.dir, 'omniccd.conf')
        with open(self.conf, 'w') as f:
            f.write('[daemon]\nstate_dir = %s\nlog_level = %s\n' % (
                os.path.join(self.dir, 'state'), log_level))
            f.write('[http]\nlisten = 127.0.0.1:%d\n' % self.port)
            f.write('[api]\ntoken = %s\n' % TOKEN)
            f.write('[redis]\nurl = %s\ncommand_timeout = 30000\n' % redis_url)
            f.write(extra_config)
        check = subprocess.run([omniccd, '-c', self.conf, '--check'], capture_output=True, text=True)
        if check.returncode != 0:
            die('config refused: %s%s' % (check.stdout, check.stderr))
        self.proc = start(name, [omniccd, '-c', self.conf], self.log)
        wait_for(self.healthy, 20, 'omniccd /healthz')

    def url(self, path=''):
        return 'http://127.0.0.1:%d%s' % (self.port, path)

    def healthy(self):
        if self.proc.poll() is not None:
            die('omniccd exited (%s); log:\n%s' % (self.proc.returncode, tail(self.log)))
        try:
            with urllib.request.urlopen(self.url('/healthz'), timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return False

    def round_trips(self):
        """omnicc_redis_round_trips_total from /metrics (commands omniccd sent)."""
        with urllib.request.urlopen(self.url('/metrics'), timeout=5) as r:
            text = r.read().decode()
        m = re.search(r'^omnicc_redis_round_trips_total (\d+)$', text, re.M)
        return int(m.group(1)) if m else 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def json_line(d):
    print(json.dumps(d), flush=True)
