#!/usr/bin/python3
"""Browser test of the reports page (/reports/, docs/ANALYTICS.md): a real redis-server and
omniccd (tests/integration/harness.py) on loopback, then node's test runner drives Debian's
chromium with playwright-core (reports.test.mjs). Screenshots go to tests/artifacts/<build>/."""
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
    if not os.path.exists(os.path.join(ROOT, 'node_modules', 'playwright-core', 'package.json')) \
            or not os.path.exists(CHROMIUM) or not shutil.which('node'):
        print('needs playwright-core (npm ci), chromium and node (tools/deps.sh)', file=sys.stderr)
        return 1
    build = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(harness.OMNICCD))))
    artifacts = os.path.join(ROOT, 'tests', 'artifacts', build or 'build')
    tmp = tempfile.mkdtemp(prefix='omnicc-browser-reports-')
    redis = d = None
    rc = 1
    try:
        redis = harness.RedisServer(tmp)
        d = harness.Omniccd(tmp, redis.url, extra_config=(
            '[analytics]\ntimezone = Europe/Madrid\n'
            '[queue default]\nchannels = voice email fax branch webchat\nsla_seconds = 30\n'))
        env = dict(os.environ, OMNICC_URL='http://127.0.0.1:%d' % d.port, OMNICC_TOKEN=d.token,
                   ARTIFACTS=artifacts, DOWNLOADS=tmp, NODE_PATH=os.path.join(ROOT, 'node_modules'))
        rc = subprocess.run(['node', '--test', '--test-reporter=spec',
                             os.path.join(HERE, 'reports.test.mjs')],
                            env=env, cwd=ROOT, timeout=300).returncode
    finally:
        stopped = d.stop() if d else None
        if redis:
            redis.stop()
        if rc != 0 or stopped not in (0, None):
            if d:
                print('---- omniccd log (tail) ----\n' + d.log()[-6000:])
            rc = rc or 1
        shutil.rmtree(tmp, ignore_errors=True)
    print('screenshots: %s' % artifacts)
    return rc


if __name__ == '__main__':
    sys.exit(main())
