"""A scriptable SMTP server for the email tests (aiosmtpd, Debian's python3-aiosmtpd).

    /usr/bin/python3 smtp_sink.py PORT DIR [--user U --password P] [--tls CERT KEY]

Every DATA is an attempt, numbered from 1. Before answering it the server reads
DIR/script.json (tests may rewrite it at any time):

    {"data": ["451 4.3.0 try later", "250 OK"],   # answer of attempt 1, 2, ... (default 250)
     "sleep": {"1": 30}}                           # seconds to stall attempt N before answering

It writes DIR/attempt-N.json ({"from", "to", "auth"}) when an attempt starts, and
DIR/msg-N.eml (the message as received) when it answers 2xx. With --user/--password it
offers AUTH PLAIN/LOGIN and requires it; with --tls it offers STARTTLS.
"""
import asyncio
import json
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult


class Handler:
    def __init__(self, d):
        self.dir = d
        self.n = 0

    def script(self):
        try:
            with open(os.path.join(self.dir, 'script.json')) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        n = self.n
        s = self.script()
        answers = s.get('data', [])
        answer = answers[n - 1] if n - 1 < len(answers) else s.get('default', '250 2.0.0 OK')
        with open(os.path.join(self.dir, 'attempt-%d.json' % n), 'w') as f:
            json.dump({'from': envelope.mail_from, 'to': envelope.rcpt_tos,
                       'auth': bool(getattr(session, 'authenticated', False))}, f)
        delay = float(s.get('sleep', {}).get(str(n), 0))
        if delay:
            await asyncio.sleep(delay)
        if answer.startswith('2'):
            tmp = os.path.join(self.dir, '.msg-%d.tmp' % n)
            with open(tmp, 'wb') as f:
                f.write(envelope.original_content or envelope.content)
            os.rename(tmp, os.path.join(self.dir, 'msg-%d.eml' % n))
        return answer


def main():
    port, d = int(sys.argv[1]), sys.argv[2]
    args = sys.argv[3:]
    user = password = None
    tls = None
    while args:
        a = args.pop(0)
        if a == '--user':
            user = args.pop(0)
        elif a == '--password':
            password = args.pop(0)
        elif a == '--tls':
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(args.pop(0), args.pop(0))
    handler = Handler(d)

    def authenticator(server, session, envelope, mechanism, data):
        ok = data.login.decode() == user and data.password.decode() == password
        return AuthResult(success=ok)

    def factory():
        kw = {}
        if user:
            kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)
        if tls:
            kw.update(tls_context=tls)
        return SMTP(handler, hostname='sink.test', decode_data=False, **kw)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(factory, '127.0.0.1', port))
    with open(os.path.join(d, 'ready'), 'w') as f:
        f.write('%d\n' % os.getpid())
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == '__main__':
    main()
