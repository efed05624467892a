#!/usr/bin/python3
"""Browser test of the agent desktop with email and fax (desk.test.mjs): a real redis-server,
an SMTP server (tests/integration/smtp_sink.py, aiosmtpd), a fax TIFF made with ghostscript
and omniccd, all on loopback and free ports in a temporary directory (tests/browser/pages.py
starts them and the browser)."""
import os
import subprocess
import sys

import pages
from email_servers import SmtpSink  # tests/integration, on the path through pages

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


def setup(tmp, servers):
    smtp = SmtpSink(tmp)
    servers.append(smtp)
    fax = fax_tiff(tmp)
    secret = os.path.join(tmp, 'fax-gateway.secret')
    with open(secret, 'w') as f:
        f.write(FAX_SECRET + '\n')
    config = ('[email]\nfrom_address = claims@insurer.example\nfrom_name = Acme Claims\n'
              'smtp_url = smtp://127.0.0.1:%d\nsmtp_starttls = no\n'
              'retry_base = 1\nretry_max = 1\noutbox_poll_ms = 100\n'
              '[fax]\ngateway_secret_file = %s\n'
              '[webchat]\ntopics = general\n'
              '[queue default]\nchannels = voice email fax branch webchat\nsla_seconds = 60\n'
              % (smtp.port, secret))
    return config, {'SMTP_DIR': smtp.dir, 'FAX_TIFF': fax, 'FAX_SECRET': FAX_SECRET}


if __name__ == '__main__':
    sys.exit(pages.run('desk.test.mjs', 'omnicc-browser-desk-', setup))
