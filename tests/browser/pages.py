"""What every browser test runner (run.py, run_desk.py, run_reports.py) does: a real
redis-server and omniccd (tests/integration/harness.py) on loopback, free ports, a temporary
directory, plus whatever servers the runner's setup starts; then node's test runner drives
Debian's chromium with playwright-core (installed at the top of the repository by `npm ci`,
which tools/test runs). Screenshots go to tests/artifacts/<build dir>/ (gitignored)."""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import harness  # noqa: E402

CHROMIUM = '/usr/bin/chromium'


def missing():
    """What the browser tests need and this machine lacks, each with how to get it."""
    problems = []
    if not os.path.exists(os.path.join(ROOT, 'node_modules', 'playwright-core', 'package.json')):
        problems.append('playwright-core is not installed: run '
                        '`PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci` at the top of the repository '
                        '(tools/test does)')
    if not os.path.exists(CHROMIUM):
        problems.append('%s is missing: apt-get install chromium (tools/deps.sh does)' % CHROMIUM)
    if not shutil.which('node'):
        problems.append('node is missing: apt-get install nodejs (tools/deps.sh does)')
    return problems


def run(test_file, prefix, setup):
    """Runs tests/browser/<test_file> against a fresh omniccd. setup(tmp, servers) starts what
    else the test needs (appending each server to servers, stopped at the end) and returns
    (omniccd's extra config, extra environment for the test). The exit status: the test's,
    or 1 when omniccd did not exit cleanly."""
    problems = missing()
    if problems:
        print('\n'.join(problems), file=sys.stderr)
        return 1
    build = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(harness.OMNICCD))))
    artifacts = os.path.join(ROOT, 'tests', 'artifacts', build or 'build')
    tmp = tempfile.mkdtemp(prefix=prefix)
    servers = []
    d = None
    rc = 1
    try:
        config, env = setup(tmp, servers)
        redis = harness.RedisServer(tmp)
        servers.append(redis)
        d = harness.Omniccd(tmp, redis.url, extra_config=config)
        env = dict(os.environ, OMNICC_URL='http://127.0.0.1:%d' % d.port, OMNICC_TOKEN=d.token,
                   ARTIFACTS=artifacts, NODE_PATH=os.path.join(ROOT, 'node_modules'), **env)
        rc = subprocess.run(['node', '--test', '--test-reporter=spec',
                             os.path.join(HERE, test_file)],
                            env=env, cwd=ROOT, timeout=300).returncode
    finally:
        stopped = d.stop() if d else None
        for server in servers:
            server.stop()
        if rc != 0 or stopped not in (0, None):
            if d:
                print('---- omniccd log (tail) ----\n' + d.log()[-6000:])
            if stopped not in (0, None):
                print('omniccd exited with %r' % stopped)
            rc = rc or 1
        shutil.rmtree(tmp, ignore_errors=True)
    print('screenshots: %s' % artifacts)
    return rc
