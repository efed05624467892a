"""The email channel against real servers: Dovecot (IMAP) and an aiosmtpd relay, both on
loopback. Intake (flag and move), a crash between ingest and flag, the inbound API, threading
as a mail client sees it, attachments, bounces, automatic replies, and delivery: 4xx then
250, 5xx, and a daemon killed in the middle of a send."""
import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness
from email_servers import Dovecot, SmtpSink, have_dovecot, self_signed

INBOUND_TOKEN = 'inbound-token-0123456789abcdef'
N = 0


def msgid(tag='m'):
    global N
    N += 1
    return '<%s-%d-%d-%d@customer.example>' % (tag, os.getpid(), int(time.time() * 1000), N)


def message(frm, subject, body='Hello', mid=None, extra='', to='claims@insurer.example'):
    lines = ['From: %s' % frm, 'To: %s' % to, 'Subject: %s' % subject,
             'Date: Mon, 3 Jun 2024 10:00:00 +0000']
    if mid:
        lines.append('Message-ID: %s' % mid)
    text = '\r\n'.join(lines) + '\r\n' + extra.replace('\n', '\r\n') + \
        'Content-Type: text/plain; charset=utf-8\r\n\r\n' + body.replace('\n', '\r\n') + '\r\n'
    return text.encode()


def email_config(tmp, dovecot, smtp, extra=''):
    pw = os.path.join(tmp, 'imap.pw')
    with open(pw, 'w') as f:
        f.write('secret\n')
    tok = os.path.join(tmp, 'inbound.token')
    with open(tok, 'w') as f:
        f.write(INBOUND_TOKEN + '\n')
    cfg = '[email]\ninbound_token_file = %s\nfrom_address = claims@insurer.example\n' \
          'retry_base = 1\nretry_max = 1\nclaim_idle = 2\noutbox_poll_ms = 100\n' \
          'smtp_timeout = 60\n' % tok
    if smtp:
        cfg += 'smtp_url = smtp://127.0.0.1:%d\nsmtp_starttls = no\n' % smtp.port
    if dovecot:
        cfg += ('[mailbox claims]\nurl = %s\nuser = claims\npassword_file = %s\nstarttls = no\n'
                'poll_interval = 1\nprocessed = flag\naddress = claims@insurer.example\n'
                'name = Acme Claims\n' % (dovecot.url(), pw))
        cfg += ('[mailbox archive]\nurl = %s\nuser = mover\npassword_file = %s\nstarttls = no\n'
                'poll_interval = 1\nprocessed = move\nmove_to = Done\n'
                'address = archive@insurer.example\n' % (dovecot.url(), pw))
        cfg += ('[mailbox ack]\nurl = %s\nuser = acker\npassword_file = %s\nstarttls = no\n'
                'poll_interval = 1\naddress = hello@insurer.example\nack_reply = yes\n'
                % (dovecot.url(), pw))
    return cfg + extra


class EmailCase(unittest.TestCase):
    """Redis, Dovecot, an SMTP sink and one omniccd per class."""
    with_dovecot = True
    extra = ''

    @classmethod
    def setUpClass(cls):
        if cls.with_dovecot and not have_dovecot():
            raise unittest.SkipTest('dovecot-imapd not installed')
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-email-')
        os.chmod(cls.tmp, 0o755)
        cls.redis = harness.RedisServer(cls.tmp)
        cls.dovecot = Dovecot(cls.tmp) if cls.with_dovecot else None
        cls.smtp = SmtpSink(cls.tmp)
        cls.cfg = email_config(cls.tmp, cls.dovecot, cls.smtp, cls.extra)
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url, cls.cfg)

    @classmethod
    def tearDownClass(cls):
        harness.stop_servers(cls, cls.smtp, cls.dovecot)

    # ---- helpers ----

    def key(self, k):
        return 'omnicc:{main}:' + k

    def ix_of(self, mid, timeout=15):
        """The interaction a message became (waits for the poller)."""
        found = {}

        def ingested():
            v = self.redis.cli('GET', self.key('idem:email:' + mid))
            if v and v != '(nil)':
                found['id'] = v
                return True
            return False
        harness.wait_for(ingested, timeout, 'ingest of ' + mid)
        st, ix, _ = self.d.get('/v1/interactions/' + found['id'])
        self.assertEqual(st, 200, ix)
        return ix

    def inbound(self, raw, token=INBOUND_TOKEN, query=''):
        return self.d.request('POST', '/v1/email/inbound' + query, raw, auth=False,
                              headers={'Authorization': 'Bearer ' + token},
                              content_type='message/rfc822')

    def history(self, case_id):
        st, case, _ = self.d.get('/v1/cases/%s?limit=500' % case_id)
        self.assertEqual(st, 200, case)
        return case['history']

    def outbound(self, mid):
        raw = self.redis.raw('HGETALL', self.key('msgout:' + mid))
        return dict(zip(raw[::2], raw[1::2]))

    def wait_status(self, mid, status, timeout=20):
        harness.wait_for(lambda: self.outbound(mid).get('status') == status, timeout,
                         '%s %s (is %r)' % (mid, status, self.outbound(mid)))

    def reply(self, ix_id, body='We are on it.', **kw):
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % ix_id, dict(body=body, **kw))
        self.assertEqual(st, 202, out)
        return out['message_id']

    def received(self, mid, timeout=20):
        def find():
            return [m for m in self.smtp.messages() if m['Message-ID'] == mid]
        harness.wait_for(lambda: find(), timeout, 'SMTP delivery of ' + mid)
        return find()[0]


@unittest.skipUnless(have_dovecot(), 'dovecot-imapd not installed')
class ImapIntakeTest(EmailCase):
    def test_flag_mode_reads_then_flags_seen(self):
        mid = msgid('flag')
        self.dovecot.append('claims', message('Ana <ana@customer.example>', 'Broken window',
                                              'My window broke.\nPolicy PL-2024-000111', mid))
        ix = self.ix_of(mid)
        self.assertEqual(ix['channel'], 'email')
        self.assertEqual(ix['from'], 'ana@customer.example')
        self.assertEqual(ix['subject'], 'Broken window')
        self.assertIn('My window broke.', ix['body'])
        st, cust, _ = self.d.get('/v1/customers?email=ANA@customer.example')
        self.assertEqual(st, 200)
        self.assertEqual(cust['id'], ix['customer_id'])
        harness.wait_for(lambda: self.dovecot.flags('claims') and all(
            '\\Seen' in f and '$OmniccPending' not in f for f in self.dovecot.flags('claims').values()),
            15, 'message flagged \\Seen')

    def test_move_mode_moves_to_folder(self):
        mid = msgid('move')
        self.dovecot.append('mover', message('bob@customer.example', 'Move me', 'text', mid))
        self.ix_of(mid)
        harness.wait_for(lambda: self.dovecot.count('mover', 'Done') == 1 and
                         self.dovecot.count('mover') == 0, 15, 'message moved to Done')

    def test_many_messages_in_one_poll_each_once(self):
        mids = [msgid('many') for _ in range(25)]
        for m in mids:
            self.dovecot.append('claims', message('carol@customer.example', 'Batch', 'b', m))
        ids = {self.ix_of(m)['id'] for m in mids}
        self.assertEqual(len(ids), 25)

    def test_message_without_message_id_is_ingested_once(self):
        raw = message('dan@customer.example', 'No id', 'no message id here')
        self.dovecot.append('claims', raw)
        before = int(self.redis.cli('GET', self.key('seq:ix')) or 0)
        harness.wait_for(lambda: int(self.redis.cli('GET', self.key('seq:ix')) or 0) > before, 15,
                         'ingest')
        # the same content through the API is the same interaction
        st, body, _ = self.inbound(raw)
        self.assertEqual(st, 200, body)
        self.assertTrue(body['duplicate'])


@unittest.skipUnless(have_dovecot(), 'dovecot-imapd not installed')
class CrashBetweenIngestAndFlagTest(EmailCase):
    """omniccd is SIGKILLed after the ingest was acknowledged and before the message was
    flagged: the next daemon reads it again and the Message-ID makes that a duplicate."""

    @classmethod
    def setUpClass(cls):
        os.environ['OMNICC_TEST_IMAP_COMMIT_DELAY_MS'] = '4000'
        try:
            super().setUpClass()
        finally:
            del os.environ['OMNICC_TEST_IMAP_COMMIT_DELAY_MS']

    def test_crash_then_reread_is_a_duplicate(self):
        mid = msgid('crash')
        self.dovecot.append('claims', message('erin@customer.example', 'Crash', 'once only', mid))
        ix = self.ix_of(mid)
        flags = self.dovecot.flags('claims')
        self.assertEqual(len(flags), 1)
        self.assertIn('$OmniccPending', list(flags.values())[0])  # stored, not yet committed
        seq = self.redis.cli('GET', self.key('seq:ix'))
        self.d.proc.send_signal(signal.SIGKILL)
        self.d.proc.wait(10)
        self.d.start()
        harness.wait_for(lambda: all('\\Seen' in f and '$OmniccPending' not in f
                                     for f in self.dovecot.flags('claims').values()),
                         20, 'message flagged after restart')
        self.assertEqual(self.redis.cli('GET', self.key('seq:ix')), seq)
        received = [h for h in self.history(ix['case_id']) if h['type'] == 'interaction.received']
        self.assertEqual(len(received), 1)
        self.assertIn('duplicate', self.d.log())


class InboundApiTest(EmailCase):
    with_dovecot = False
    extra = '[email]\nmax_message = 65536\n'

    def test_inbound_stored_then_duplicate(self):
        mid = msgid('api')
        raw = message('Frank <frank@customer.example>', 'Via MTA', 'piped in', mid)
        st, body, _ = self.inbound(raw)
        self.assertEqual(st, 202, body)
        self.assertFalse(body['duplicate'])
        st, again, _ = self.inbound(raw)
        self.assertEqual(st, 200)
        self.assertTrue(again['duplicate'])
        self.assertEqual(again['id'], body['id'])
        st, ix, _ = self.d.get('/v1/interactions/' + body['id'])
        self.assertEqual(ix['external_id'], mid)

    def test_inbound_needs_token_and_limits_size(self):
        raw = message('g@customer.example', 'x', 'y', msgid())
        st, _, _ = self.inbound(raw, token='wrong-token-000000000000')
        self.assertEqual(st, 401)
        st, _, _ = self.d.request('POST', '/v1/email/inbound', raw, auth=False)
        self.assertEqual(st, 401)
        st, _, _ = self.inbound(raw, token=harness.TOKEN)  # the admin token works too
        self.assertEqual(st, 202)
        big = message('g@customer.example', 'big', 'x' * 70000, msgid())
        st, body, _ = self.inbound(big)
        self.assertEqual(st, 413, body)
        st, body, _ = self.inbound(raw, query='?mailbox=nope')
        self.assertEqual(st, 400)

    def test_attachments_stored_and_served(self):
        pdf = b'%PDF-1.4 test document\n' + os.urandom(2000)
        sha = hashlib.sha256(pdf).hexdigest()
        b64 = base64.encodebytes(pdf).decode()
        mid = msgid('att')
        raw = ('From: h@customer.example\r\nTo: claims@insurer.example\r\nSubject: Docs\r\n'
               'Message-ID: %s\r\nMIME-Version: 1.0\r\n'
               'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
               'Content-Type: text/plain\r\n\r\nSee attached.\r\n--B\r\n'
               'Content-Type: application/pdf\r\n'
               'Content-Disposition: attachment; filename="claim.pdf"\r\n'
               'Content-Transfer-Encoding: base64\r\n\r\n%s--B--\r\n' % (mid, b64)).encode()
        st, body, _ = self.inbound(raw)
        self.assertEqual(st, 202, body)
        st, ix, _ = self.d.get('/v1/interactions/' + body['id'])
        import json
        meta = json.loads(ix['metadata']) if isinstance(ix['metadata'], str) else ix['metadata']
        self.assertEqual(meta['attachments'][0]['sha256'], sha)
        self.assertEqual(meta['attachments'][0]['filename'], 'claim.pdf')
        st, data, hdrs = self.d.request('GET', '/v1/attachments/' + sha, raw=True)
        self.assertEqual(st, 200)
        self.assertEqual(data, pdf)
        self.assertEqual(hdrs['content-type'], 'application/pdf')
        self.assertIn("claim.pdf", hdrs['content-disposition'])
        st, _, _ = self.d.request('GET', '/v1/attachments/' + sha, raw=True,
                                  headers={'Authorization': 'Bearer not-an-agent-token'})
        self.assertEqual(st, 401)
        st, _, _ = self.d.request('GET', '/v1/attachments/' + 'a' * 64, raw=True)
        self.assertEqual(st, 404)
        # the raw message itself is kept, content-addressed too
        st, data, _ = self.d.request('GET', '/v1/attachments/' + meta['raw_sha256'], raw=True)
        self.assertEqual(data, raw)


class ThreadingTest(EmailCase):
    """A reply as the customer's mail client sees it, and the customer's answer threading
    back onto the case by each of the references a reply can carry."""
    with_dovecot = False

    def test_reply_headers_and_threading(self):
        first = msgid('thread')
        st, a, _ = self.inbound(message('Ines <ines@customer.example>', 'Water damage',
                                        'The kitchen is flooded.', first,
                                        extra='References: <older@customer.example>\n'))
        self.assertEqual(st, 202, a)
        case = a['case_id']
        mid = self.reply(a['id'], 'Dear Ines,\nan adjuster will call you.\nÁngel')
        sent = self.received(mid)
        self.assertEqual(sent['In-Reply-To'], first)
        self.assertEqual(sent['References'].split(), ['<older@customer.example>', first])
        self.assertEqual(sent['Subject'], 'Re: Water damage [#%s]' % case)
        self.assertEqual(sent['From'].addresses[0].addr_spec, 'claims@insurer.example')
        self.assertEqual(sent['To'].addresses[0].addr_spec, 'ines@customer.example')
        self.assertIn('an adjuster will call you.\nÁngel', sent.get_content().replace('\r\n', '\n'))
        self.assertIsNone(sent['Auto-Submitted'])
        self.wait_status(mid, 'sent')
        types = [h['type'] for h in self.history(case)]
        self.assertIn('email.queued', types)
        self.assertIn('email.sent', types)

        # the customer answers our message: In-Reply-To alone finds the case
        st, b, _ = self.inbound(message('ines@customer.example', 'Thanks', 'ok\n\nOn Mon, x wrote:\n> old',
                                        msgid('ans'), extra='In-Reply-To: %s\n' % mid))
        self.assertEqual(b['case_id'], case)
        last = [h for h in self.history(case) if h['type'] == 'interaction.received'][-1]
        self.assertEqual(last['text'], 'ok')  # quoted history trimmed in the view

        # someone else writes with the token in the subject
        st, c, _ = self.inbound(message('broker@other.example', 'Fwd: about [#%s]' % case, 'fyi',
                                        msgid('tok')))
        self.assertEqual(c['case_id'], case)
        # or to the plus-address
        st, d, _ = self.inbound(message('adjuster@other.example', 'report', 'see report',
                                        msgid('plus'), to='claims+%s@insurer.example' % case))
        self.assertEqual(d['case_id'], case)
        # a token naming no case is ignored: a new case for a new sender
        st, e, _ = self.inbound(message('new@other.example', 'about [#C-999999]', 'x', msgid('bad')))
        self.assertEqual(st, 202)
        self.assertNotEqual(e['case_id'], case)

    def test_reply_authorisation_and_validation(self):
        st, a, _ = self.inbound(message('j@customer.example', 'Q', 'q', msgid('auth')))
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], {'body': 'x'},
                                 headers={'Authorization': 'Bearer some-agent-token-123456'})
        self.assertEqual(st, 403, out)
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], {'text': 'x'})
        self.assertEqual(st, 400)
        st, out, _ = self.d.post('/v1/interactions/I-999999/reply', {'body': 'x'})
        self.assertEqual(st, 404)
        st, v, _ = self.d.post('/v1/interactions', {'channel': 'voice', 'external_id': msgid('v')})
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % v['id'], {'body': 'x'})
        self.assertEqual(st, 400)

    def test_reply_with_attachment(self):
        st, a, _ = self.inbound(message('k@customer.example', 'Form', 'send me the form', msgid('f')))
        doc = b'form contents \x00\x01\x02' * 50
        mid = self.reply(a['id'], 'Attached.', attachments=[{
            'filename': 'formulario daños.pdf', 'content_type': 'application/pdf',
            'content_base64': base64.b64encode(doc).decode()}])
        sent = self.received(mid)
        parts = [p for p in sent.iter_attachments()]
        self.assertEqual(len(parts), 1)
        self.assertEqual(parts[0].get_filename(), 'formulario daños.pdf')
        self.assertEqual(parts[0].get_content(), doc)

    def test_reply_client_id_makes_a_retry_harmless(self):
        # the agent's desktop lost the answer and sends the same message again: one email
        st, a, _ = self.inbound(message('r@customer.example', 'Claim', 'any news?', msgid('rt')))
        self.assertEqual(st, 202, a)
        body = {'body': 'Your claim is approved.', 'client_id': 'desk-msg-0001'}
        st, first, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], body)
        self.assertEqual(st, 202, first)
        self.assertFalse(first['duplicate'])
        st, again, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], body)
        self.assertEqual(st, 200, again)
        self.assertTrue(again['duplicate'])
        self.assertEqual(again['message_id'], first['message_id'])
        self.received(first['message_id'])
        queued = [h for h in self.history(a['case_id']) if h['type'] == 'email.queued']
        self.assertEqual(len(queued), 1)
        # another message (another client_id) is another email; a malformed id is refused
        mid = self.reply(a['id'], 'One more thing.', client_id='desk-msg-0002')
        self.assertNotEqual(mid, first['message_id'])
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'],
                                 {'body': 'x', 'client_id': 'no spaces allowed'})
        self.assertEqual(st, 400, out)

    def test_reply_with_copies(self):
        st, a, _ = self.inbound(message('m@customer.example', 'Quote', 'copy my broker',
                                        msgid('cc'), extra='Cc: broker@agency.example\n'))
        self.assertEqual(st, 202, a)
        mid = self.reply(a['id'], 'Here is the quote.',
                         cc=['broker@agency.example', 'm@customer.example', 'team@insurer.example'])
        sent = self.received(mid)
        # the To address is not copied twice
        self.assertEqual([x.addr_spec for x in sent['Cc'].addresses],
                         ['broker@agency.example', 'team@insurer.example'])
        self.assertEqual(sent['To'].addresses[0].addr_spec, 'm@customer.example')
        n = []
        for i in range(1, self.smtp.attempts() + 1):
            path = os.path.join(self.smtp.dir, 'msg-%d.eml' % i)
            if os.path.exists(path):
                with open(path, 'rb') as f:
                    if mid.encode() in f.read():
                        n.append(i)
        self.assertEqual(len(n), 1)
        # the envelope: one copy to each
        self.assertEqual(sorted(self.smtp.attempt(n[0])['to']),
                         ['broker@agency.example', 'm@customer.example', 'team@insurer.example'])
        queued = [h for h in self.history(a['case_id']) if h['type'] == 'email.queued'][-1]
        self.assertEqual(queued['cc'], 'broker@agency.example, team@insurer.example')
        # anything but plain addresses is refused, and nothing is queued
        for bad in ('Broker <broker@agency.example>', 'a@b', 'x@y.example\r\nBcc: z@w.example',
                    'a,b@c.example', 'ñ@x.example', ''):
            st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], {'body': 'x', 'cc': [bad]})
            self.assertEqual(st, 400, (bad, out))
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'],
                                 {'body': 'x', 'cc': ['c%d@x.example' % i for i in range(11)]})
        self.assertEqual(st, 400, out)
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], {'body': 'x', 'cc': 'a@b.example'})
        self.assertEqual(st, 400, out)
        self.assertEqual(len([h for h in self.history(a['case_id']) if h['type'] == 'email.queued']), 1)

    def test_bounce_recorded_on_case_never_a_case(self):
        st, a, _ = self.inbound(message('l@customer.example', 'Hi', 'hi', msgid('b')))
        mid = self.reply(a['id'], 'Hello back')
        self.wait_status(mid, 'sent')
        cases_before = self.redis.cli('GET', self.key('seq:case'))
        ix_before = self.redis.cli('GET', self.key('seq:ix'))
        dsn = ('From: MAILER-DAEMON@mx.customer.example\r\nTo: claims@insurer.example\r\n'
               'Subject: Undelivered Mail\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\n'
               'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
               '--R\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n--R\r\n'
               'Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n'
               'Final-Recipient: rfc822; l@customer.example\r\nAction: failed\r\n'
               'Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 unknown user\r\n\r\n'
               '--R\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: %s\r\n'
               'Subject: Re: Hi\r\n\r\n--R--\r\n' % (msgid('dsn'), mid)).encode()
        st, body, _ = self.inbound(dsn)
        self.assertEqual(st, 200, body)
        self.assertEqual(body['dsn'], 'matched')
        self.assertEqual(body['case_id'], a['case_id'])
        self.assertEqual(self.outbound(mid)['status'], 'bounced')
        bounced = [h for h in self.history(a['case_id']) if h['type'] == 'email.bounced']
        self.assertEqual(len(bounced), 1)
        self.assertEqual(bounced[0]['status'], '5.1.1')
        self.assertEqual(self.redis.cli('GET', self.key('seq:case')), cases_before)
        self.assertEqual(self.redis.cli('GET', self.key('seq:ix')), ix_before)
        # the same DSN again changes nothing
        st, body, _ = self.inbound(dsn)
        self.assertEqual(body['dsn'], 'duplicate')


@unittest.skipUnless(have_dovecot(), 'dovecot-imapd not installed')
class AutoReplyTest(EmailCase):
    """Mailbox "ack" acknowledges new cases; never automatic mail; once per sender."""

    def acks_to(self, addr):
        return [m for m in self.smtp.messages() if m['To'].addresses[0].addr_spec == addr]

    def test_acknowledgement_sent_once_and_never_to_automatic_mail(self):
        mid = msgid('ack')
        self.dovecot.append('acker', message('Mia <mia@customer.example>', 'New claim', 'help', mid))
        ix = self.ix_of(mid)
        harness.wait_for(lambda: self.acks_to('mia@customer.example'), 20, 'acknowledgement')
        ack = self.acks_to('mia@customer.example')[0]
        self.assertEqual(ack['Auto-Submitted'], 'auto-replied')
        self.assertEqual(ack['In-Reply-To'], mid)
        self.assertIn('[#%s]' % ix['case_id'], ack['Subject'])
        self.assertIn(ix['case_id'], ack.get_content())
        self.assertEqual(ack['From'].addresses[0].addr_spec, 'hello@insurer.example')
        # a second new case from the same sender: rate-limited, no second acknowledgement
        mid2 = msgid('ack2')
        self.dovecot.append('acker', message('mia@customer.example', 'Other policy PL-2024-000222',
                                             'another', mid2))
        self.ix_of(mid2)
        # automatic mail of every kind: stored, never answered
        autos = [
            ('oof@customer.example', 'Out of office', 'Auto-Submitted: auto-replied\n'),
            ('list@customer.example', 'Newsletter', 'Precedence: bulk\nList-Id: <l.example>\n'),
            ('noreply@customer.example', 'Robot', 'Auto-Submitted: auto-generated\n'),
        ]
        amids = []
        for frm, subj, hdr in autos:
            m = msgid('auto')
            amids.append(m)
            self.dovecot.append('acker', message(frm, subj, 'x', m, extra=hdr))
        for m in amids:
            self.ix_of(m)
        # a bounce from MAILER-DAEMON: not even an interaction
        self.dovecot.append('acker', message('MAILER-DAEMON@mx.example', 'Undelivered', 'failed',
                                             msgid('daemon')))
        harness.wait_for(lambda: self.dovecot.count('acker') and all(
            '\\Seen' in f for f in self.dovecot.flags('acker').values()), 20, 'all read')
        time.sleep(1.5)  # room for any wrong acknowledgement to be sent
        self.assertEqual(len(self.acks_to('mia@customer.example')), 1)
        for frm, _, _ in autos:
            self.assertEqual(self.acks_to(frm), [])
        self.assertEqual(self.acks_to('MAILER-DAEMON@mx.example'), [])
        self.assertEqual(len(self.smtp.messages()), 1)


class DeliveryRetryTest(EmailCase):
    with_dovecot = False

    def test_4xx_is_retried_until_250(self):
        self.smtp.script(data=['451 4.3.0 try again later', '421 4.7.0 busy', '250 2.0.0 OK'])
        st, a, _ = self.inbound(message('n@customer.example', 'Retry', 'r', msgid('r')))
        mid = self.reply(a['id'], 'This takes three tries')
        self.wait_status(mid, 'sent', 30)
        self.assertEqual(self.smtp.attempts(), 3)
        self.assertEqual(len(self.smtp.messages()), 1)
        self.assertEqual(self.smtp.messages()[0]['Message-ID'], mid)
        types = [h['type'] for h in self.history(a['case_id']) if h['type'].startswith('email.')]
        self.assertEqual(types, ['email.queued', 'email.deferred', 'email.deferred', 'email.sent'])
        self.assertEqual(self.redis.raw('XLEN', self.key('outbox:email')), ['0'])
        self.assertEqual(self.redis.raw('XPENDING', self.key('outbox:email'), 'senders')[0], '0')


class DeliveryFailureTest(EmailCase):
    with_dovecot = False

    def test_5xx_fails_for_good_and_is_recorded(self):
        self.smtp.script(data=['550 5.1.1 <o@customer.example>: no such user'])
        st, a, _ = self.inbound(message('o@customer.example', 'Fail', 'f', msgid('x')))
        mid = self.reply(a['id'], 'Never arrives')
        self.wait_status(mid, 'failed', 20)
        time.sleep(1.5)  # no retry follows
        self.assertEqual(self.smtp.attempts(), 1)
        failed = [h for h in self.history(a['case_id']) if h['type'] == 'email.failed']
        self.assertEqual(len(failed), 1)
        self.assertIn('550', failed[0]['smtp'])
        self.assertIn('no such user', failed[0]['smtp'])


class SenderKilledMidSendTest(EmailCase):
    """The daemon sending a message is SIGKILLed during DATA; a second daemon on the same
    Redis claims the pending entry after claim_idle and delivers it."""
    with_dovecot = False

    def test_pending_send_is_claimed_by_a_survivor(self):
        self.smtp.script(sleep={'1': 30})
        st, a, _ = self.inbound(message('p@customer.example', 'Kill', 'k', msgid('k')))
        mid = self.reply(a['id'], 'Sent twice, delivered once')
        harness.wait_for(lambda: self.smtp.attempts() == 1, 15, 'first attempt started')
        self.d.proc.send_signal(signal.SIGKILL)
        self.d.proc.wait(10)
        self.d.proc = None
        type(self).d = harness.Omniccd(self.tmp, self.redis.url, self.cfg, name='survivor')
        self.wait_status(mid, 'sent', 30)
        self.assertGreaterEqual(self.smtp.attempts(), 2)
        delivered = [m for m in self.smtp.messages() if m['Message-ID'] == mid]
        self.assertEqual(len(delivered), 1)
        sent = [h for h in self.history(a['case_id']) if h['type'] == 'email.sent']
        self.assertEqual(len(sent), 1)


class ReplyAttachmentStorageTest(EmailCase):
    """An agent's reply attachments are on disk durably before the 202, written by a worker
    thread and never by the loop: the daemon's system calls are recorded with strace while
    one reply is sent. A storage failure answers 503 and queues nothing; a bad attachment
    answers 400 and stores nothing."""
    with_dovecot = False

    def attachment_path(self, sha):
        return os.path.join(self.d.state_dir, 'attachments', sha[:2], sha)

    def jobs_queued(self):
        """Entries ever added to the outbox stream (sent ones are deleted from it)."""
        info = self.redis.raw('XINFO', 'STREAM', self.key('outbox:email'))
        return int(info[info.index('entries-added') + 1]) if 'entries-added' in info else 0

    @unittest.skipUnless(shutil.which('strace'), 'strace not installed')
    def test_written_and_fsynced_by_a_worker_before_the_answer(self):
        st, a, _ = self.inbound(message('fs@customer.example', 'Docs', 'send', msgid('fs')))
        self.assertEqual(st, 202, a)
        doc = os.urandom(4096)
        sha = hashlib.sha256(doc).hexdigest()
        trace = os.path.join(self.tmp, 'reply.strace')
        pid = self.d.proc.pid
        tracer = subprocess.Popen(['strace', '-f', '-ttt', '-s', '24', '-p', str(pid), '-o', trace,
                                   '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2,'
                                   'write,writev,sendto,sendmsg'],
                                  stderr=subprocess.PIPE)
        try:
            # "Process N attached with M threads": every thread is traced from here on
            line = tracer.stderr.readline()
            self.assertIn(b'attached', line)
            mid = self.reply(a['id'], 'Here it is.', attachments=[{
                'filename': 'poliza.pdf', 'content_type': 'application/pdf',
                'content_base64': base64.b64encode(doc).decode()}])
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(10)
            tracer.stderr.close()
        with open(self.attachment_path(sha), 'rb') as f:
            self.assertEqual(f.read(), doc)
        calls = []  # (time, thread, call, line)
        with open(trace, errors='replace') as f:
            lines = f.readlines()
        for line in lines:
            parts = line.split(None, 2)
            if len(parts) == 3 and '(' in parts[2]:
                calls.append((float(parts[1]), int(parts[0]), parts[2].split('(')[0], parts[2]))
        renames = [c for c in calls if c[2].startswith('rename') and (sha + '"') in c[3]]
        self.assertEqual(len(renames), 1, renames)
        t_rename, worker = renames[0][0], renames[0][1]
        self.assertNotEqual(worker, pid, 'the loop thread wrote the attachment')
        mine = [c for c in calls if c[1] == worker and c[2] in ('fsync', 'fdatasync')]
        self.assertTrue([c for c in mine if c[0] <= t_rename], 'file not fsynced before rename')
        dir_sync = [c for c in mine if c[0] >= t_rename]
        self.assertTrue(dir_sync, 'directory not fsynced after rename')
        answers = [c for c in calls if c[1] == pid and 'HTTP/1.1 202' in c[3]]
        self.assertTrue(answers, 'no 202 seen')
        self.assertLess(dir_sync[0][0], answers[-1][0], 'answered before the file was durable')
        self.assertFalse([c for c in calls if c[1] == pid and c[2] in ('fsync', 'fdatasync')],
                         'the loop thread fsynced')
        sent = self.received(mid)
        self.assertEqual([p.get_content() for p in sent.iter_attachments()], [doc])

    @unittest.skipUnless(shutil.which('strace'), 'strace not installed')
    def test_served_by_a_worker_not_the_loop(self):
        st, a, _ = self.inbound(message('sv@customer.example', 'Docs', 'send', msgid('sv')))
        self.assertEqual(st, 202, a)
        doc = os.urandom(2048)
        sha = hashlib.sha256(doc).hexdigest()
        self.reply(a['id'], 'x', attachments=[{'filename': 'd.bin',
                                                'content_base64': base64.b64encode(doc).decode()}])
        trace = os.path.join(self.tmp, 'serve.strace')
        pid = self.d.proc.pid
        tracer = subprocess.Popen(['strace', '-f', '-p', str(pid), '-o', trace, '-e',
                                   'trace=open,openat'], stderr=subprocess.PIPE)
        try:
            self.assertIn(b'attached', tracer.stderr.readline())
            st, data, _ = self.d.request('GET', '/v1/attachments/' + sha, raw=True)
            self.assertEqual((st, data), (200, doc))
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(10)
            tracer.stderr.close()
        with open(trace, errors='replace') as f:
            opens = [line.split(None, 1) for line in f if self.attachment_path(sha) + '"' in line]
        self.assertTrue(opens, 'the file was not opened')
        self.assertNotIn(str(pid), [o[0] for o in opens], 'the loop thread read the file')

    def test_storage_failure_is_503_and_queues_nothing(self):
        st, a, _ = self.inbound(message('sf@customer.example', 'Docs', 'send', msgid('sf')))
        self.assertEqual(st, 202, a)
        doc = b'cannot be stored ' + os.urandom(16)
        sha = hashlib.sha256(doc).hexdigest()
        # a file where the attachment's directory must go: mkdir fails, as on a broken disk
        blocker = os.path.join(self.d.state_dir, 'attachments', sha[:2])
        os.makedirs(os.path.dirname(blocker), exist_ok=True)
        if os.path.isdir(blocker):
            self.skipTest('directory %s already exists' % sha[:2])
        open(blocker, 'w').close()
        try:
            before = self.jobs_queued()
            st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], {
                'body': 'x', 'attachments': [{'filename': 'a.bin',
                                              'content_base64': base64.b64encode(doc).decode()}]})
            self.assertEqual(st, 503, out)
            self.assertEqual(self.jobs_queued(), before)
        finally:
            os.unlink(blocker)

    def test_bad_attachment_is_400_and_stores_nothing(self):
        st, a, _ = self.inbound(message('ba@customer.example', 'Docs', 'send', msgid('ba')))
        self.assertEqual(st, 202, a)
        good = b'good document ' + os.urandom(16)
        good_sha = hashlib.sha256(good).hexdigest()
        before = self.jobs_queued()
        cases = [
            ([{'content_base64': base64.b64encode(good).decode()},
              {'sha256': 'c' * 64}], 'attachments[1]: sha256: no stored attachment'),
            ([{'content_base64': base64.b64encode(good).decode()},
              {'content_base64': '!!!not base64!!!'}], 'attachments[1]: content_base64'),
            ([{'content_base64': 'eA==', 'sha256': 'c' * 64}], 'attachments[0]: give'),
            ([{'sha256': '../../etc/passwd'}], 'attachments[0]: sha256'),
            ([{'content_base64': 'eA==', 'filename': 'a/b'}], 'attachments[0]: filename'),
        ]
        for att, why in cases:
            st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'],
                                     {'body': 'x', 'attachments': att})
            self.assertEqual(st, 400, out)
            self.assertIn(why, out['error']['message'])
        self.assertFalse(os.path.exists(self.attachment_path(good_sha)))
        self.assertEqual(self.jobs_queued(), before)
        # the same document referenced by its sha256 once it is stored
        mid = self.reply(a['id'], 'first', attachments=[{
            'filename': 'doc.bin', 'content_base64': base64.b64encode(good).decode()}])
        self.assertTrue(os.path.exists(self.attachment_path(good_sha)))
        mid2 = self.reply(a['id'], 'again', attachments=[{'sha256': good_sha}])
        parts = list(self.received(mid2).iter_attachments())
        self.assertEqual(parts[0].get_filename(), 'doc.bin')
        self.assertEqual(parts[0].get_content(), good)
        self.received(mid)


class AgentReplyTest(EmailCase):
    """The agent who accepted the email answers it with their own token; another agent's
    token is refused."""
    with_dovecot = False

    def agent(self, aid):
        st, a, _ = self.d.post('/v1/agents', {'id': aid, 'name': aid, 'skills': {},
                                               'capacity': {'email': 1}})
        self.assertIn(st, (200, 201), a)
        st, t, _ = self.d.post('/v1/agents/%s/tokens' % aid, None)
        self.assertEqual(st, 201, t)
        return t['token']

    def test_holder_replies_other_agent_refused(self):
        holder = self.agent('mail-holder')
        other = self.agent('mail-other')
        st, out, _ = self.d.request('PUT', '/v1/agents/mail-holder/state', {'state': 'available'})
        self.assertEqual(st, 200, out)
        st, a, _ = self.inbound(message('q@customer.example', 'Help', 'please', msgid('h')))
        self.assertEqual(st, 202, a)
        harness.wait_for(lambda: self.d.get('/v1/interactions/' + a['id'])[1].get('state') == 'offered',
                         10, 'offer')
        resv = self.d.get('/v1/interactions/' + a['id'])[1]['reservation']
        st, out, _ = self.d.request('POST', '/v1/reservations/%s/accept' % resv, None,
                                    headers={'Authorization': 'Bearer ' + holder})
        self.assertEqual(st, 200, out)
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], {'body': 'Not mine'},
                                 headers={'Authorization': 'Bearer ' + other})
        self.assertEqual(st, 403, out)
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], {'body': 'Mine'},
                                 headers={'Authorization': 'Bearer ' + holder})
        self.assertEqual(st, 202, out)
        self.assertEqual(self.received(out['message_id'])['To'].addresses[0].addr_spec,
                         'q@customer.example')
        # an agent token also reads attachments
        st, _, _ = self.d.request('GET', '/v1/attachments/' + 'b' * 64, raw=True,
                                  headers={'Authorization': 'Bearer ' + other})
        self.assertEqual(st, 404)


    def test_desktop_reads_the_message_and_follows_its_delivery(self):
        """What the agent desktop needs: the message itself on the timeline (body, headers,
        attachments), and the reply's delivery state on the holder's own event stream."""
        holder = self.agent('mail-desk')
        st, out, _ = self.d.request('PUT', '/v1/agents/mail-desk/state', {'state': 'available'})
        self.assertEqual(st, 200, out)
        # the next test's email is not offered to this agent
        self.addCleanup(self.d.request, 'PUT', '/v1/agents/mail-desk/state', {'state': 'offline'})
        png = bytes.fromhex('89504e470d0a1a0a') + os.urandom(64)
        b64 = base64.encodebytes(png).decode().replace('\n', '\r\n')
        first = msgid('desk')
        raw = ('From: Rosa <rosa@customer.example>\r\nTo: claims@insurer.example\r\n'
               'Cc: broker@other.example\r\nSubject: Hail damage\r\nMessage-ID: %s\r\n'
               'Date: Mon, 3 Jun 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n'
               'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
               'Content-Type: text/plain\r\n\r\nThe roof is dented.\r\n\r\n'
               'On Sun, you wrote:\r\n> earlier text\r\n--B\r\n'
               'Content-Type: image/png\r\n'
               'Content-Disposition: attachment; filename="roof.png"\r\n'
               'Content-Transfer-Encoding: base64\r\n\r\n%s--B--\r\n' % (first, b64)).encode()
        st, a, _ = self.inbound(raw)
        self.assertEqual(st, 202, a)
        harness.wait_for(lambda: self.d.get('/v1/interactions/' + a['id'])[1].get('state') == 'offered',
                         10, 'offer')
        auth = {'Authorization': 'Bearer ' + holder}
        st, tl, _ = self.d.request('GET', '/v1/interactions/%s/timeline' % a['id'], None,
                                   auth=False, headers=auth)
        self.assertEqual(st, 200, tl)
        ix = tl['interaction']
        self.assertIn('The roof is dented.', ix['body'])
        self.assertIn('> earlier text', ix['body'])
        self.assertEqual(ix['metadata']['cc'], ['broker@other.example'])
        self.assertEqual(ix['metadata']['message_id'], first)
        self.assertEqual(ix['metadata']['thread']['text'], 'The roof is dented.')
        self.assertEqual(ix['reply_limits'], {'body': 256 * 1024, 'attachments': 20,
                                              'attachment': 10485760,
                                              'attachments_total': 26214400})
        att = ix['metadata']['attachments']
        self.assertEqual([(x['filename'], x['content_type'], x['size'], x['sha256']) for x in att],
                         [('roof.png', 'image/png', len(png), hashlib.sha256(png).hexdigest())])
        resv = self.d.get('/v1/interactions/' + a['id'])[1]['reservation']
        st, out, _ = self.d.request('POST', '/v1/reservations/%s/accept' % resv, None,
                                    auth=False, headers=auth)
        self.assertEqual(st, 200, out)
        st, out, _ = self.d.post('/v1/interactions/%s/reply' % a['id'], {'body': 'On our way'},
                                 headers=auth)
        self.assertEqual(st, 202, out)
        mid = out['message_id']
        self.wait_status(mid, 'sent')

        def delivery():
            got = []
            for line in self.redis.raw('XRANGE', self.key('agent:mail-desk:events'), '-', '+'):
                if line.startswith('{') and mid in line:
                    got.append(json.loads(line)['message_id'])
            return got
        harness.wait_for(lambda: len(delivery()) == 2, 10, 'email.queued and email.sent')
        types = [l for l in self.redis.raw('XRANGE', self.key('agent:mail-desk:events'), '-', '+')
                 if l.startswith('email.')]
        self.assertEqual(types, ['email.queued', 'email.sent'])
        st, out, _ = self.d.request('POST', '/v1/interactions/%s/wrapup' % a['id'],
                                    {'disposition': 'resolved'}, auth=False, headers=auth)
        self.assertEqual(st, 200, out)


class SmtpAuthTest(EmailCase):
    """A relay that requires AUTH: omniccd logs in with [email] smtp_user and the password
    file, then sends."""
    with_dovecot = False

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-email-')
        os.chmod(cls.tmp, 0o755)
        cls.redis = harness.RedisServer(cls.tmp)
        cls.dovecot = None
        cls.smtp = SmtpSink(cls.tmp, user='omnicc', password='relay-secret')
        pw = os.path.join(cls.tmp, 'smtp.pw')
        with open(pw, 'w') as f:
            f.write('relay-secret\n')
        cls.cfg = email_config(cls.tmp, None, cls.smtp,
                               '[email]\nsmtp_user = omnicc\nsmtp_password_file = %s\n' % pw)
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url, cls.cfg)

    def test_authenticated_send(self):
        st, a, _ = self.inbound(message('r@customer.example', 'Auth', 'a', msgid('auth')))
        mid = self.reply(a['id'], 'Through an authenticated relay')
        self.wait_status(mid, 'sent')
        self.assertTrue(self.smtp.attempt(1)['auth'])


class SmtpStartTlsTest(EmailCase):
    """STARTTLS required: the relay's certificate must chain to [email] smtp_ca_file (and name
    the host); a relay whose certificate is not trusted gets nothing."""
    with_dovecot = False
    trust = True

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-email-')
        os.chmod(cls.tmp, 0o755)
        cls.redis = harness.RedisServer(cls.tmp)
        cls.dovecot = None
        cert, key = self_signed(cls.tmp)
        cls.smtp = SmtpSink(cls.tmp, tls=(cert, key))
        extra = '[email]\nsmtp_starttls = required\n'
        if cls.trust:
            extra += 'smtp_ca_file = %s\n' % cert
        cls.cfg = email_config(cls.tmp, None, cls.smtp, extra)
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url, cls.cfg)

    def test_starttls(self):
        st, a, _ = self.inbound(message('s@customer.example', 'TLS', 't', msgid('tls')))
        mid = self.reply(a['id'], 'Over TLS')
        if self.trust:
            self.wait_status(mid, 'sent')
            self.assertEqual(self.received(mid)['Message-ID'], mid)
        else:
            self.wait_status(mid, 'deferred')
            self.assertEqual(self.smtp.messages(), [])


class SmtpUntrustedCertificateTest(SmtpStartTlsTest):
    trust = False


@unittest.skipUnless(have_dovecot(), 'dovecot-imapd not installed')
class ImapsIntakeTest(EmailCase):
    """An imaps:// mailbox whose certificate chains to the mailbox's ca_file."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-email-')
        os.chmod(cls.tmp, 0o755)
        cls.redis = harness.RedisServer(cls.tmp)
        cert, key = self_signed(cls.tmp)
        os.chmod(cert, 0o644)
        cls.dovecot = Dovecot(cls.tmp, tls=(cert, key))
        cls.smtp = SmtpSink(cls.tmp)
        pw = os.path.join(cls.tmp, 'imap.pw')
        with open(pw, 'w') as f:
            f.write('secret\n')
        cls.cfg = email_config(cls.tmp, None, cls.smtp, (
            '[mailbox secure]\nurl = %s\nuser = secure\npassword_file = %s\nca_file = %s\n'
            'poll_interval = 1\naddress = secure@insurer.example\n'
            % (cls.dovecot.url(tls=True), pw, cert)))
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url, cls.cfg)

    def test_imaps_intake(self):
        mid = msgid('imaps')
        self.dovecot.append('secure', message('t@customer.example', 'Over TLS', 'secure', mid))
        self.assertEqual(self.ix_of(mid)['subject'], 'Over TLS')
        harness.wait_for(lambda: all('\\Seen' in f and '$OmniccPending' not in f
                                     for f in self.dovecot.flags('secure').values()), 15, 'flagged')


if __name__ == '__main__':
    unittest.main()
