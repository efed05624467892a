"""Real mail servers for the email tests, on loopback, free ports, temp dirs (recipes from
shared/TESTING-NOTES.md): Dovecot IMAP (dovecot-imapd) and a scriptable aiosmtpd server
(smtp_sink.py). Each test class starts its own and stops them by pid."""
import email
import email.policy
import glob
import imaplib
import json
import os
import shutil
import subprocess
import time

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
DOVECOT_PASSWORD = 'secret'


def have_dovecot():
    return shutil.which('dovecot') is not None


class Dovecot:
    def __init__(self, tmp, tls=None):
        """tls: (cert.pem, key.pem) to listen for IMAPS too, on self.tls_port."""
        self.dir = os.path.join(tmp, 'dovecot-%d' % harness.free_port())
        os.makedirs(self.dir)
        os.chmod(tmp, 0o755)
        os.chmod(self.dir, 0o755)
        self.port = harness.free_port()
        self.tls_port = harness.free_port() if tls else None
        d = self.dir
        for sub in ('run', 'state', 'mail', 'home'):
            os.makedirs(os.path.join(d, sub))
        for sub in ('mail', 'home'):
            shutil.chown(os.path.join(d, sub), 'dovecot', 'dovecot')
        self.conf = os.path.join(d, 'dovecot.conf')
        with open(self.conf, 'w') as f:
            f.write('''base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_max_userip_connections = 50
passdb {{
  driver = static
  args = password={pw}
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
{imaps}}}
service anvil {{
  chroot =
}}
'''.format(d=d, port=self.port, pw=DOVECOT_PASSWORD,
           ssl='ssl = yes\nssl_cert = <%s\nssl_key = <%s' % tls if tls else 'ssl = no',
           imaps='  inet_listener imaps {\n    port = %d\n    ssl = yes\n  }\n' % self.tls_port
           if tls else ''))
        subprocess.run(['dovecot', '-c', self.conf], check=True)
        harness.wait_for(self._up, 15, 'dovecot')

    def _up(self):
        try:
            self.imap('probe').logout()
            return True
        except (OSError, imaplib.IMAP4.error):
            return False

    def url(self, folder='INBOX', tls=False):
        if tls:
            return 'imaps://127.0.0.1:%d/%s' % (self.tls_port, folder)
        return 'imap://127.0.0.1:%d/%s' % (self.port, folder)

    def imap(self, user):
        m = imaplib.IMAP4('127.0.0.1', self.port, timeout=20)
        m.login(user, DOVECOT_PASSWORD)
        return m

    def append(self, user, raw, folder='INBOX', flags=None):
        """Deliver a message as an MTA would (no \\Seen flag)."""
        m = self.imap(user)
        if isinstance(raw, str):
            raw = raw.replace('\r\n', '\n').replace('\n', '\r\n').encode()
        m.create(folder)
        typ, data = m.append(folder, flags, None, raw)
        m.logout()
        assert typ == 'OK', data

    def flags(self, user, folder='INBOX'):
        """{uid: set of flags} of every message in the folder."""
        m = self.imap(user)
        m.select(folder, readonly=True)
        typ, data = m.uid('FETCH', '1:*', '(FLAGS)')
        m.logout()
        out = {}
        for item in data or []:
            if not item:
                continue
            text = item.decode() if isinstance(item, bytes) else item[0].decode()
            if 'UID' not in text:
                continue
            uid = int(text.split('UID ')[1].split()[0].rstrip(')'))
            fl = text.split('FLAGS (')[1].split(')')[0].split()
            out[uid] = set(fl)
        return out

    def count(self, user, folder='INBOX'):
        m = self.imap(user)
        typ, data = m.select(folder, readonly=True)
        m.logout()
        return int(data[0]) if typ == 'OK' else 0

    def stop(self):
        subprocess.run(['doveadm', '-c', self.conf, 'stop'], capture_output=True)


def self_signed(tmp, name='127.0.0.1'):
    """A throwaway certificate for name (also its own CA): (cert.pem, key.pem)."""
    cert, key = os.path.join(tmp, 'cert.pem'), os.path.join(tmp, 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key,
                    '-out', cert, '-days', '2', '-subj', '/CN=' + name, '-addext',
                    'subjectAltName=DNS:%s,IP:%s' % (name, name)],
                   check=True, capture_output=True)
    return cert, key


class SmtpSink:
    def __init__(self, tmp, user=None, password=None, tls=None):
        self.dir = os.path.join(tmp, 'smtp-%d' % harness.free_port())
        os.makedirs(self.dir)
        self.port = harness.free_port()
        args = ['/usr/bin/python3', os.path.join(HERE, 'smtp_sink.py'), str(self.port), self.dir]
        if user:
            args += ['--user', user, '--password', password]
        if tls:
            args += ['--tls', tls[0], tls[1]]
        self.log = open(os.path.join(self.dir, 'sink.log'), 'ab')
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        harness.wait_for(lambda: os.path.exists(os.path.join(self.dir, 'ready')), 15, 'smtp sink')

    def script(self, **s):
        tmp = os.path.join(self.dir, '.script.tmp')
        with open(tmp, 'w') as f:
            json.dump(s, f)
        os.rename(tmp, os.path.join(self.dir, 'script.json'))

    def attempts(self):
        return len(glob.glob(os.path.join(self.dir, 'attempt-*.json')))

    def attempt(self, n):
        with open(os.path.join(self.dir, 'attempt-%d.json' % n)) as f:
            return json.load(f)

    def messages(self):
        """Accepted messages, parsed as a mail client would, in order of arrival."""
        paths = sorted(glob.glob(os.path.join(self.dir, 'msg-*.eml')),
                       key=lambda p: int(p.rsplit('-', 1)[1].split('.')[0]))
        out = []
        for p in paths:
            with open(p, 'rb') as f:
                out.append(email.message_from_bytes(f.read(), policy=email.policy.default))
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()
