#!/usr/bin/python3
"""Browser tests: a real redis-server and omniccd (through tests/integration/harness.py) on
loopback, free ports, a temporary directory; then node's test runner drives Debian's chromium
with playwright-core (installed at the top of the repository by `npm ci`, which tools/test
runs). Screenshots go to tests/artifacts/<build dir>/ (gitignored)."""
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


def main():
    problems = []
    if not os.path.exists(os.path.join(ROOT, 'node_modules', 'playwright-core', 'package.json')):
        problems.append('playwright-core is not installed: run '
                        '`PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci` at the top of the repository '
                        '(tools/test does)')
    if not os.path.exists(CHROMIUM):
        problems.append('%s is missing: apt-get install chromium (tools/deps.sh does)' % CHROMIUM)
    if not shutil.which('node'):
        problems.append('node is missing: apt-get install nodejs (tools/deps.sh does)')
    if problems:
        print('\n'.join(problems), file=sys.stderr)
        return 1

    build = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(harness.OMNICCD))))
    artifacts = os.path.join(ROOT, 'tests', 'artifacts', build or 'build')
    tmp = tempfile.mkdtemp(prefix='omnicc-browser-')
    site_port = harness.free_port()
    redis = d = None
    rc = 1
    try:
        redis = harness.RedisServer(tmp)
        d = harness.Omniccd(tmp, redis.url, extra_config=(
            '[webchat]\n'
            'allowed_origins = http://localhost:%d\n'
            'topics = general claims:claims\n'
            '[queue claims]\n'
            'channels = webchat voice email\n'
            'sla_seconds = 60\n') % site_port)
        env = dict(os.environ, OMNICC_URL='http://127.0.0.1:%d' % d.port, OMNICC_TOKEN=d.token,
                   SITE_PORT=str(site_port), ARTIFACTS=artifacts,
                   NODE_PATH=os.path.join(ROOT, 'node_modules'))
        rc = subprocess.run(['node', '--test', '--test-reporter=spec',
                             os.path.join(HERE, 'webchat.test.mjs')],
                            env=env, cwd=ROOT, timeout=300).returncode
    finally:
        stopped = d.stop() if d else None
        if redis:
            redis.stop()
        if rc != 0 or stopped not in (0, None):
            if d:
                print('---- omniccd log (tail) ----\n' + d.log()[-6000:])
            if stopped not in (0, None):
                print('omniccd exited with %r' % stopped)
                rc = rc or 1
        shutil.rmtree(tmp, ignore_errors=True)
    print('screenshots: %s' % artifacts)
    return rc


if __name__ == '__main__':
    sys.exit(main())
