#!/usr/bin/python3
"""Browser test of the agent desktop with email and fax (desk.test.mjs): a real redis-server,
an SMTP server (tests/integration/smtp_sink.py, aiosmtpd), a fax TIFF made with ghostscript
and omniccd (tests/integration/harness.py),
all on loopback and free ports in a temporary directory; then node's test runner drives
Debian's chromium with playwright-core. Screenshots go to tests/artifacts/<build dir>/."""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import harness  # noqa: E402
from email_servers import SmtpSink  # noqa: E402

CHROMIUM = '/usr/bin/chromium'
FAX_SECRET = 'desk-fax-gateway-secret-4e1a'


def fax_tiff(tmp):
    """A two-page G3 fax TIFF (ghostscript), as a fax server would upload it."""
    src, out = os.path.join(tmp, 'fax.ps'), os.path.join(tmp, 'fax.tif')
    with open(src, 'w') as f:
        f.write('%!PS\n/Helvetica findfont 30 scalefont setfont\n'
                '72 700 moveto (CLAIM FORM - page 1) show showpage\n'
                '/Helvetica findfont 30 scalefont setfont\n'
                '72 700 moveto (Signature - page 2) show showpage\n')
    subprocess.run(['gs', '-q', '-dNOPAUSE', '-dBATCH', '-dSAFER', '-sDEVICE=tiffg3',
                    '-r204x196', '-sPAPERSIZE=a4', '-sOutputFile=' + out, src], check=True)
    return out


def main():
    if not os.path.exists(os.path.join(ROOT, 'node_modules', 'playwright-core', 'package.json')) \
            or not os.path.exists(CHROMIUM) or not shutil.which('node'):
        print('needs playwright-core (npm ci), chromium and node (tools/deps.sh)', file=sys.stderr)
        return 1
    build = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(harness.OMNICCD))))
    artifacts = os.path.join(ROOT, 'tests', 'artifacts', build or 'build')
    tmp = tempfile.mkdtemp(prefix='omnicc-browser-desk-')
    redis = d = smtp = None
    rc = 1
    try:
        smtp = SmtpSink(tmp)
        fax = fax_tiff(tmp)
        secret = os.path.join(tmp, 'fax-gateway.secret')
        with open(secret, 'w') as f:
            f.write(FAX_SECRET + '\n')
        redis = harness.RedisServer(tmp)
        d = harness.Omniccd(tmp, redis.url, extra_config=(
            '[email]\nfrom_address = claims@insurer.example\nfrom_name = Acme Claims\n'
            'smtp_url = smtp://127.0.0.1:%d\nsmtp_starttls = no\n'
            'retry_base = 1\nretry_max = 1\noutbox_poll_ms = 100\n'
            '[fax]\ngateway_secret_file = %s\n'
            '[webchat]\ntopics = general\n'
            '[queue default]\nchannels = voice email fax branch webchat\nsla_seconds = 60\n'
            % (smtp.port, secret)))
        env = dict(os.environ, OMNICC_URL='http://127.0.0.1:%d' % d.port, OMNICC_TOKEN=d.token,
                   SMTP_DIR=smtp.dir, FAX_TIFF=fax, FAX_SECRET=FAX_SECRET, ARTIFACTS=artifacts,
                   NODE_PATH=os.path.join(ROOT, 'node_modules'))
        rc = subprocess.run(['node', '--test', '--test-reporter=spec',
                             os.path.join(HERE, 'desk.test.mjs')],
                            env=env, cwd=ROOT, timeout=300).returncode
    finally:
        stopped = d.stop() if d else None
        if smtp:
            smtp.stop()
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
