"""The fax channel against a real redis-server and omniccd: Phaxio/Sinch callbacks (signature
vectors, multipart with a real document), Telnyx webhooks (Ed25519, a local fake media server:
in and out of order, duplicated, expired link -> 5xx then retry, partial content), on-premises
gateway uploads (HMAC-SHA256, idempotency, page count from the document, hostile TSI), and
OCR of generated cover sheets at fine and standard resolution joining the customer imported
earlier, or the case named on the sheet; and fax-to-email: a mailbox on a real Dovecot whose
mail becomes fax interactions.

Fax pages are made here with Ghostscript from PostScript text (`gs -sDEVICE=tiffg3
-r204x196` fine, `-r204x98` standard), the way a fax machine would send them."""
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import harness
from email_servers import Dovecot, have_dovecot

# Phaxio's own SDK test vector (phaxio-ruby / phaxio-python): token, URL, params -> signature
PHAXIO_TOKEN = 'test-webhook-token'
PHAXIO_URL = 'example.com'
PHAXIO_VECTOR = '64a735ef0c47a0ae671e381c046648f0966deb29'
GATEWAY_SECRET = 'fax-gateway-secret-7d1e90'


def multipart(fields, files=()):
    """multipart/form-data body: fields [(name, value)], files [(name, filename, ctype, bytes)]."""
    boundary = '----omnicc' + uuid.uuid4().hex
    out = b''
    for name, value in fields:
        out += ('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n' % (boundary, name)).encode()
        out += (value.encode() if isinstance(value, str) else value) + b'\r\n'
    for name, filename, ctype, data in files:
        out += ('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                'Content-Type: %s\r\n\r\n' % (boundary, name, filename, ctype)).encode()
        out += data + b'\r\n'
    out += ('--%s--\r\n' % boundary).encode()
    return out, 'multipart/form-data; boundary=' + boundary


def phaxio_signature(token, url, fields, files=()):
    data = url + ''.join(k + v for k, v in sorted(fields))
    data += ''.join(name + hashlib.sha1(content).hexdigest()
                    for name, _, _, content in sorted(files, key=lambda f: f[0]))
    return hmac.new(token.encode(), data.encode(), hashlib.sha1).hexdigest()


def gateway_headers(body, ts=None, secret=GATEWAY_SECRET):
    ts = str(int(time.time()) if ts is None else ts)
    sig = 'sha256=' + hmac.new(secret.encode(), ts.encode() + b'.' + body, hashlib.sha256).hexdigest()
    return {'X-Omnicc-Timestamp': ts, 'X-Omnicc-Signature': sig}


def ps_escape(s):
    return s.replace('\\', '\\\\').replace('(', '\\(').replace(')', '\\)')


def fax_pages(tmp, pages, resolution='fine'):
    """A G3 fax TIFF with one page per list of text lines."""
    ps = ['%!PS']
    for lines in pages:
        ps.append('/Helvetica findfont 30 scalefont setfont')
        y = 700
        for line in lines:
            ps.append('72 %d moveto (%s) show' % (y, ps_escape(line)))
            y -= 44
        ps.append('showpage')
    name = uuid.uuid4().hex
    src = os.path.join(tmp, name + '.ps')
    out = os.path.join(tmp, name + '.tif')
    with open(src, 'w') as f:
        f.write('\n'.join(ps) + '\n')
    res = '-r204x196' if resolution == 'fine' else '-r204x98'
    subprocess.run(['gs', '-q', '-dNOPAUSE', '-dBATCH', '-dSAFER', '-sDEVICE=tiffg3', res,
                    '-sPAPERSIZE=a4', '-sOutputFile=' + out, src], check=True)
    with open(out, 'rb') as f:
        return f.read()


class LocalServer:
    """A stand-in HTTP server on a free loopback port; subclasses give the handler class."""

    def serve(self, handler):
        handler.log_message = lambda *args: None
        self.server = ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def answer(handler, code, body, ctype):
    """One whole HTTP answer from a BaseHTTPRequestHandler."""
    handler.send_response(code)
    handler.send_header('Content-Type', ctype)
    handler.send_header('Content-Length', str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class MediaServer(LocalServer):
    """Telnyx's media storage: GET /media/<name> answers what the test set for the name:
    bytes (200), an expired link (403), or a number of 500s before the bytes."""

    def __init__(self):
        self.docs, self.expired, self.fail_first, self.hits = {}, set(), {}, {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit('/', 1)[-1]
                outer.hits[name] = outer.hits.get(name, 0) + 1
                if name in outer.expired:
                    code, body = 403, b'<Error>Request has expired</Error>'
                elif outer.fail_first.get(name, 0) > 0:
                    outer.fail_first[name] -= 1
                    code, body = 500, b'busy'
                elif name in outer.docs:
                    code, body = 200, outer.docs[name]
                else:
                    code, body = 404, b'no such media'
                answer(self, code, body, 'image/tiff' if code == 200 else 'text/plain')

        self.serve(Handler)

    def url(self, name):
        return 'http://127.0.0.1:%d/media/%s' % (self.port, name)


class FakePhaxioAPI(LocalServer):
    """Phaxio's REST API for sending (POST /v2.1/faxes): records each request; answers what
    the test queued in self.answers (status, JSON), else 200 with a new fax id."""

    def __init__(self):
        self.requests, self.answers, self.next_id = [], [], 880000
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n)
                outer.requests.append({'path': self.path, 'auth': self.headers.get('Authorization'),
                                       'content_type': self.headers.get('Content-Type'),
                                       'body': body})
                if outer.answers:
                    code, out = outer.answers.pop(0)
                else:
                    outer.next_id += 1
                    code, out = 200, {'success': True, 'message': 'Fax queued for sending',
                                      'data': {'id': outer.next_id}}
                answer(self, code, json.dumps(out).encode(), 'application/json')

        self.serve(Handler)


class FaxTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-fax-')
        cls.media = MediaServer()
        cls.api = FakePhaxioAPI()
        api_secret = os.path.join(cls.tmp, 'phaxio-api-secret')
        with open(api_secret, 'w') as f:
            f.write('api-secret-123\n')
        cls.telnyx_key = Ed25519PrivateKey.generate()
        pub = cls.telnyx_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                       serialization.PublicFormat.Raw)
        token_file = os.path.join(cls.tmp, 'phaxio-token')
        secret_file = os.path.join(cls.tmp, 'gateway-secret')
        with open(token_file, 'w') as f:
            f.write(PHAXIO_TOKEN + '\n')
        with open(secret_file, 'w') as f:
            f.write(GATEWAY_SECRET + '\n')
        config = ('[fax]\nphaxio_token_file = %s\nphaxio_callback_url = %s\n'
                  'telnyx_public_key = %s\ngateway_secret_file = %s\nmedia_attempts = 2\n'
                  'media_timeout = 10\nmax_pages = 20\nocr_workers = 2\n'
                  'outbound = phaxio\nphaxio_api_base = http://127.0.0.1:%d\n'
                  'phaxio_api_key = api-key-123\nphaxio_api_secret_file = %s\n'
                  'claim_idle = 1\noutbox_poll_ms = 100\nsend_attempts = 3\nstuck_after = 3\n'
                  % (token_file, PHAXIO_URL, base64.b64encode(pub).decode(), secret_file,
                     cls.api.port, api_secret))
        cls.redis = harness.RedisServer(cls.tmp)
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url, config)
        cls.docs = {}

    @classmethod
    def tearDownClass(cls):
        harness.stop_servers(cls, cls.media, cls.api)

    _seq = 0

    def fid(self):
        FaxTest._seq += 1
        return '%d%04d' % (os.getpid(), FaxTest._seq)

    def doc(self, key, pages, resolution='fine'):
        if (key, resolution) not in FaxTest.docs:
            FaxTest.docs[(key, resolution)] = fax_pages(self.tmp, pages, resolution)
        return FaxTest.docs[(key, resolution)]

    def three_pages(self):
        return self.doc('three', [['Page one'], ['Page two'], ['Page three']])

    # ---- helpers ----

    def phaxio(self, fields, files=(), signature=None, url=PHAXIO_URL):
        body, ctype = multipart(fields, files)
        sig = signature or phaxio_signature(PHAXIO_TOKEN, url, fields, files)
        return self.d.post('/v1/fax/phaxio', body, auth=False, content_type=ctype,
                           headers={'X-Phaxio-Signature': sig})

    def phaxio_fax(self, fax_id, doc, status='success', from_number='+34911000001', pages=1):
        fax = json.dumps({'id': int(fax_id), 'direction': 'received', 'num_pages': pages,
                          'status': status, 'from_number': from_number,
                          'to_number': '+34910000000', 'is_test': False})
        fields = [('fax', fax), ('direction', 'received'), ('is_test', 'false'),
                  ('success', 'true' if status == 'success' else 'false'),
                  ('event_type', 'fax_completed')]
        files = [('file', 'fax.tif', 'image/tiff', doc)] if doc is not None else []
        return fields, files

    def telnyx(self, event_type, payload, ts=None, tamper=False):
        body = json.dumps({'data': {'event_type': event_type, 'id': str(uuid.uuid4()),
                                    'occurred_at': '2026-11-25T08:00:00Z', 'payload': payload},
                           'meta': {'attempt': 1}}).encode()
        ts = str(int(time.time()) if ts is None else ts)
        sig = base64.b64encode(self.telnyx_key.sign(ts.encode() + b'|' + body)).decode()
        if tamper:
            body = body.replace(b'"+34', b'"+35')
        return self.d.post('/v1/fax/telnyx', body, auth=False, content_type='application/json',
                           headers={'telnyx-timestamp': ts, 'telnyx-signature-ed25519': sig})

    def gateway(self, fields, doc=None, filename='fax.tif', headers=None):
        files = [('file', filename, 'image/tiff', doc)] if doc is not None else []
        body, ctype = multipart(fields, files)
        return self.d.post('/v1/fax/inbound', body, auth=False, content_type=ctype,
                           headers=headers or gateway_headers(body))

    def interaction(self, iid):
        st, ix, _ = self.d.get('/v1/interactions/' + iid)
        self.assertEqual(st, 200, ix)
        return ix

    def history(self, case_id):
        st, c, _ = self.d.get('/v1/cases/' + case_id)
        self.assertEqual(st, 200, c)
        return c['history']

    def count_fax_interactions(self, ext):
        return int(self.redis.cli('EXISTS', 'omnicc:{main}:idem:fax:' + ext).split()[-1])

    # ---- Phaxio ----

    def test_phaxio_sdk_vector(self):
        # the provider's SDK vector: the signature is accepted (the body is then refused for
        # lacking a fax object: 400, not 403), and one character off is refused
        st, out, _ = self.phaxio([('test', 'true')], signature=PHAXIO_VECTOR)
        self.assertEqual(st, 400, out)
        self.assertIn('fax', out['error']['message'] if isinstance(out.get('error'), dict)
                      else json.dumps(out))
        st, out, _ = self.phaxio([('test', 'true')], signature=PHAXIO_VECTOR[:-1] + '0')
        self.assertEqual(st, 403, out)
        st, out, _ = self.phaxio([('test', 'false')], signature=PHAXIO_VECTOR)
        self.assertEqual(st, 403, out)

    def test_phaxio_fax_with_document_and_tampering(self):
        doc = self.three_pages()
        fid = self.fid()
        fields, files = self.phaxio_fax(fid, doc, pages=9)
        good = phaxio_signature(PHAXIO_TOKEN, PHAXIO_URL, fields, files)
        # tampered field, tampered file, wrong URL: each refused before anything is stored
        bad_fields = [(k, v.replace('+34911000001', '+34911000002')) for k, v in fields]
        st, _, _ = self.phaxio(bad_fields, files, signature=good)
        self.assertEqual(st, 403)
        bad_files = [('file', 'fax.tif', 'image/tiff', doc[:-1] + bytes([doc[-1] ^ 1]))]
        st, _, _ = self.phaxio(fields, bad_files, signature=good)
        self.assertEqual(st, 403)
        st, _, _ = self.phaxio(fields, files,
                               signature=phaxio_signature(PHAXIO_TOKEN, 'https://other.example',
                                                          fields, files))
        self.assertEqual(st, 403)
        self.assertEqual(self.count_fax_interactions('phaxio:' + fid), 0)
        st, out, _ = self.phaxio(fields, files, signature=good)
        self.assertEqual(st, 200, out)
        self.assertFalse(out['duplicate'])
        self.assertEqual(out['pages'], 3)  # from the TIFF, not the sender's 9
        self.assertEqual(out['document'], hashlib.sha256(doc).hexdigest())
        ix = self.interaction(out['interaction'])
        self.assertEqual(ix['channel'], 'fax')
        self.assertEqual(ix['external_id'], 'phaxio:' + fid)
        self.assertEqual(ix['metadata']['document']['pages'], 3)
        self.assertEqual(ix['metadata']['document']['resolution'], 'fine')
        self.assertEqual(ix['metadata']['document']['compression'], 'g3')
        self.assertEqual(ix['metadata']['sender_pages'], 9)
        self.assertEqual(ix['fax_status'], 'received')
        # the document itself, as stored
        st, data, hdrs = self.d.request('GET', '/v1/attachments/' + out['document'], raw=True)
        self.assertEqual(st, 200)
        self.assertEqual(data, doc)
        # the provider retries: the same interaction, nothing new
        st, again, _ = self.phaxio(fields, files, signature=good)
        self.assertEqual(st, 200, again)
        self.assertTrue(again['duplicate'])
        self.assertEqual(again['interaction'], out['interaction'])

    def test_phaxio_partial_reception_is_recorded_as_such(self):
        doc = self.doc('one', [['Only page that arrived']])
        fid = self.fid()
        fields, files = self.phaxio_fax(fid, doc, status='partialsuccess', pages=4,
                                        from_number='+34911000009')
        st, out, _ = self.phaxio(fields, files)
        self.assertEqual(st, 200, out)
        self.assertEqual(out['status'], 'partial')
        ix = self.interaction(out['interaction'])
        self.assertEqual(ix['fax_status'], 'partial')
        self.assertTrue(ix['subject'].startswith('Incomplete fax'), ix['subject'])
        types = [h['type'] for h in self.history(out['case'])]
        self.assertIn('fax.partial', types)
        self.assertNotIn('fax.received', types)

    # ---- Telnyx ----

    def test_telnyx_received_downloads_then_acknowledges(self):
        fid = str(uuid.uuid4())
        self.media.docs[fid] = self.three_pages()
        payload = {'fax_id': fid, 'from': '+34911000100', 'to': '+34910000000',
                   'media_url': self.media.url(fid), 'page_count': 7, 'partial_content': False,
                   'status': 'received', 'direction': 'inbound'}
        # events before the fax itself: nothing to attach them to yet, still 200
        st, out, _ = self.telnyx('fax.receiving.started', payload)
        self.assertEqual((st, out['known']), (200, False))
        st, out, _ = self.telnyx('fax.received', payload)
        self.assertEqual(st, 200, out)
        self.assertEqual(out['pages'], 3)
        self.assertEqual(self.media.hits[fid], 1)
        iid = out['interaction']
        # duplicated delivery: no second interaction, no second download
        st, dup, _ = self.telnyx('fax.received', payload)
        self.assertEqual((st, dup['duplicate'], dup['interaction']), (200, True, iid))
        self.assertEqual(self.media.hits[fid], 1)
        # an event arriving after the fax lands on its case history
        st, late, _ = self.telnyx('fax.media.processed', payload)
        self.assertEqual((st, late['known'], late['interaction']), (200, True, iid))
        ix = self.interaction(iid)
        self.assertEqual(ix['external_id'], 'telnyx:' + fid)
        self.assertEqual(ix['metadata']['sender_pages'], 7)
        hist = self.history(ix['case_id'])
        self.assertIn('fax.media.processed', [h.get('event') for h in hist])

    def test_telnyx_expired_media_answers_5xx_then_retry_succeeds(self):
        fid = str(uuid.uuid4())
        self.media.docs[fid] = self.three_pages()
        self.media.expired.add(fid)
        payload = {'fax_id': fid, 'from': '+34911000101', 'to': '+34910000000',
                   'media_url': self.media.url(fid), 'status': 'received'}
        st, out, _ = self.telnyx('fax.received', payload)
        self.assertGreaterEqual(st, 500, out)
        self.assertEqual(self.count_fax_interactions('telnyx:' + fid), 0)
        self.assertEqual(self.media.hits[fid], 1)  # 403: not retried at once
        self.media.expired.discard(fid)
        st, out, _ = self.telnyx('fax.received', payload)  # the provider's retry
        self.assertEqual(st, 200, out)
        self.assertFalse(out['duplicate'])
        # a media store that fails once is retried within the same webhook
        fid2 = str(uuid.uuid4())
        self.media.docs[fid2] = self.three_pages()
        self.media.fail_first[fid2] = 1
        payload['fax_id'], payload['media_url'] = fid2, self.media.url(fid2)
        st, out, _ = self.telnyx('fax.received', payload)
        self.assertEqual(st, 200, out)
        self.assertEqual(self.media.hits[fid2], 2)

    def test_telnyx_signature_and_window(self):
        payload = {'fax_id': str(uuid.uuid4()), 'from': '+34911000102', 'status': 'received'}
        st, _, _ = self.telnyx('fax.receiving.started', payload, tamper=True)
        self.assertEqual(st, 403)
        st, _, _ = self.telnyx('fax.receiving.started', payload, ts=int(time.time()) - 600)
        self.assertEqual(st, 403)
        st, _, _ = self.telnyx('fax.receiving.started', payload)
        self.assertEqual(st, 200)

    def test_telnyx_failed_and_partial(self):
        fid = str(uuid.uuid4())
        st, out, _ = self.telnyx('fax.failed', {'fax_id': fid, 'from': '+34911000103',
                                                'failure_reason': 'receiver_call_dropped',
                                                'direction': 'inbound'})
        self.assertEqual(st, 200, out)
        self.assertEqual(out['status'], 'failed')
        ix = self.interaction(out['interaction'])
        self.assertEqual(ix['fax_status'], 'failed')
        self.assertIn('fax.failed', [h['type'] for h in self.history(out['case'])])
        fid = str(uuid.uuid4())
        self.media.docs[fid] = self.doc('one', [['Only page that arrived']])
        st, out, _ = self.telnyx('fax.received', {'fax_id': fid, 'from': '+34911000104',
                                                  'media_url': self.media.url(fid),
                                                  'partial_content': True, 'page_count': 3})
        self.assertEqual((st, out['status'], out['pages']), (200, 'partial', 1))

    # ---- gateways ----

    def test_gateway_upload_idempotent_and_hostile_tsi(self):
        doc = self.doc('two', [['Gateway page one'], ['Gateway page two']], 'standard')
        gid = 'hylafax-' + self.fid()
        tsi = '$(touch /tmp/pwned); `id` "quoted" \'single\''
        fields = [('gateway_id', gid), ('from', '+34 911 000 200'), ('to', '+34910000000'),
                  ('tsi', tsi), ('pages', '9'), ('status', 'received')]
        st, out, _ = self.gateway(fields, doc)
        self.assertEqual(st, 200, out)
        self.assertEqual(out['pages'], 2)
        ix = self.interaction(out['interaction'])
        self.assertEqual(ix['metadata']['tsi'], tsi)
        self.assertEqual(ix['metadata']['document']['resolution'], 'standard')
        self.assertEqual(ix['external_id'], 'gateway:' + gid)
        st, again, _ = self.gateway(fields, doc)
        self.assertEqual((st, again['duplicate'], again['interaction']),
                         (200, True, out['interaction']))
        # unsigned, wrongly signed, stale
        body, ctype = multipart(fields)
        for h in ({}, gateway_headers(body, secret='wrong'),
                  gateway_headers(body, ts=int(time.time()) - 3600)):
            st, _, _ = self.d.post('/v1/fax/inbound', body, auth=False, content_type=ctype, headers=h)
            self.assertEqual(st, 403)
        # a PDF (tiff2pdf of the same pages) is accepted, its pages counted from its page tree
        src = os.path.join(self.tmp, 'two.tif')
        with open(src, 'wb') as f:
            f.write(doc)
        pdf_path = os.path.join(self.tmp, 'two.pdf')
        subprocess.run(['tiff2pdf', '-o', pdf_path, src], check=True)
        with open(pdf_path, 'rb') as f:
            pdf = f.read()
        st, out, _ = self.gateway([('gateway_id', gid + '-pdf'), ('from', '+34911000201')], pdf,
                                  filename='fax.pdf')
        self.assertEqual((st, out['pages']), (200, 2), out)
        # something that is not a fax document: recorded as a failed fax, not routed as one
        st, out, _ = self.gateway([('gateway_id', gid + '-txt'), ('from', '+34911000202')],
                                  b'hello, not a fax', filename='x.txt')
        self.assertEqual((st, out['status']), (200, 'failed'), out)
        # missing idempotency key
        st, _, _ = self.gateway([('from', '+34911000203')], doc)
        self.assertEqual(st, 400)

    def test_documented_upload_script_keeps_a_hostile_tsi_as_text(self):
        # the upload script of docs/FAX.md, run as a fax server would run it
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               '../../docs/FAX.md')) as f:
            doc_md = f.read()
        start = doc_md.index('#!/bin/sh\n# omnicc-fax-upload')
        script = os.path.join(self.tmp, 'omnicc-fax-upload')
        with open(script, 'w') as f:
            f.write(doc_md[start:doc_md.index('```', start)])
        os.chmod(script, 0o755)
        secret_file = os.path.join(self.tmp, 'gw-secret')
        with open(secret_file, 'w') as f:
            f.write(GATEWAY_SECRET + '\n')
        pwned = os.path.join(self.tmp, 'pwned')
        tsi = "$(touch %s)`touch %s`'; touch %s; #\"" % (pwned, pwned, pwned)
        tif = os.path.join(self.tmp, 'upload.tif')
        with open(tif, 'wb') as f:
            f.write(self.three_pages())
        gid = 'hylafax-test-' + self.fid()
        env = dict(os.environ, OMNICC_FAX_URL='http://127.0.0.1:%d' % self.d.port,
                   OMNICC_FAX_SECRET_FILE=secret_file)
        for _ in range(2):  # a second run of the same fax is a duplicate
            out = subprocess.run([script, tif, gid, '+34 911 000 300', '+34910000000', tsi, '3',
                                  'received', ''], env=env, capture_output=True, timeout=60)
            self.assertEqual(out.returncode, 0, out.stderr)
        res = json.loads(out.stdout)
        self.assertTrue(res['duplicate'])
        self.assertFalse(os.path.exists(pwned))
        ix = self.interaction(res['interaction'])
        self.assertEqual(ix['metadata']['tsi'], tsi[:64])
        self.assertEqual(ix['metadata']['document']['pages'], 3)

    def test_page_images(self):
        import struct
        for res in ('standard', 'fine'):
            doc = self.doc('two', [['Gateway page one'], ['Gateway page two']], res)
            st, out, _ = self.gateway([('gateway_id', 'png-%s-%s' % (res, self.fid())),
                                       ('from', '+34911000400')], doc)
            self.assertEqual(st, 200, out)
            base = '/v1/attachments/%s/pages/' % out['document']
            st, png, hdrs = self.d.request('GET', base + '2.png', raw=True)
            self.assertEqual((st, hdrs['content-type']), (200, 'image/png'), png[:200])
            self.assertEqual(png[:8], b'\x89PNG\r\n\x1a\n')
            w, h = struct.unpack('>II', png[16:24])
            # 1728 wide (the fax line); standard pages (204x98 dpi) stretched back to the
            # page's aspect ratio, not left half as tall
            meta = self.interaction(out['interaction'])['metadata']['document']
            self.assertEqual(w, meta['width'])
            # the page's physical shape: pixels over dots per inch, each way
            shape = (meta['height'] / meta['dpi'][1]) / (meta['width'] / meta['dpi'][0])
            self.assertAlmostEqual(h / w, shape, delta=0.01 * shape)
            if res == 'standard':
                self.assertGreater(h, 1.9 * meta['height'])
            st, _, _ = self.d.request('GET', base + '3.png', raw=True)
            self.assertEqual(st, 404)
            st, _, _ = self.d.request('GET', base + '0.png', raw=True)
            self.assertEqual(st, 404)
            st, _, _ = self.d.request('GET', base + '1.png', raw=True, auth=False)
            self.assertEqual(st, 401)

    def test_page_limit_counted_in_the_document(self):
        # [fax] max_pages = 20 here: a 21-page fax claiming to have 2 is recorded as failed
        doc = self.doc('many', [['Page %d' % (i + 1)] for i in range(21)], 'standard')
        st, out, _ = self.gateway([('gateway_id', 'many-' + self.fid()), ('from', '+34911000600'),
                                   ('pages', '2')], doc)
        self.assertEqual((st, out['status']), (200, 'failed'), out)
        ix = self.interaction(out['interaction'])
        self.assertIn('too many pages', ix['metadata']['failure'])
        self.assertNotIn('document', ix['metadata'])
        self.assertIn('fax.failed', [h['type'] for h in self.history(out['case'])])

    # ---- the fax as a PDF ----

    def pdf_pages(self, pdf):
        """pdfinfo (poppler-utils) over a PDF: its page count and each page's size in points."""
        path = os.path.join(self.tmp, 'got-%s.pdf' % uuid.uuid4().hex)
        with open(path, 'wb') as f:
            f.write(pdf)
        out = subprocess.run(['pdfinfo', '-f', '1', '-l', '1000', path], capture_output=True,
                             text=True, check=True).stdout
        count = int([l for l in out.splitlines() if l.startswith('Pages:')][0].split()[1])
        sizes = [tuple(float(v) for v in l.split(':', 1)[1].split()[0:3:2])
                 for l in out.splitlines() if l.startswith('Page ') and ' size:' in l]
        return count, sizes, path

    def test_tiff_fax_as_pdf_at_its_physical_page_size(self):
        for res in ('standard', 'fine'):
            doc = self.doc('pdf3', [['PDF page %d' % (i + 1), 'line two'] for i in range(3)], res)
            st, out, _ = self.gateway([('gateway_id', 'pdf-%s-%s' % (res, self.fid())),
                                       ('from', '+34911000700')], doc)
            self.assertEqual((st, out['pages']), (200, 3), out)
            sha = out['document']
            meta = self.interaction(out['interaction'])['metadata']['document']
            # made after the acknowledgement by the workers, without being asked for
            link = os.path.join(self.d.state_dir, 'attachments', sha[:2], sha + '.pdf')
            deadline = time.time() + 30
            while not os.path.exists(link) and time.time() < deadline:
                time.sleep(0.1)
            self.assertTrue(os.path.exists(link), link)
            with open(link) as f:
                made = f.read()
            st, pdf, hdrs = self.d.request('GET', '/v1/attachments/%s/pdf' % sha, raw=True)
            self.assertEqual((st, hdrs['content-type']), (200, 'application/pdf'), pdf[:200])
            self.assertEqual(hdrs['x-omnicc-document'], made)
            self.assertEqual(hashlib.sha256(pdf).hexdigest(), made)
            # the same PDF is stored as an attachment like any other
            st, stored, _ = self.d.request('GET', '/v1/attachments/' + made, raw=True)
            self.assertEqual((st, stored), (200, pdf))
            count, sizes, path = self.pdf_pages(pdf)
            self.assertEqual((count, len(sizes)), (3, 3))
            # each page as large as the paper: pixels over dots per inch, each way, in points
            # (a standard page, half the lines of a fine one, is just as tall)
            want = (meta['width'] / meta['dpi'][0] * 72, meta['height'] / meta['dpi'][1] * 72)
            self.assertAlmostEqual(want[1], 842, delta=6)  # A4, as Ghostscript wrote it
            for w, h in sizes:
                self.assertAlmostEqual(w, want[0], delta=0.5)
                self.assertAlmostEqual(h, want[1], delta=0.5)
            # bi-level kept bi-level: one 1-bit image per page, the PDF about fax-sized
            images = subprocess.run(['pdfimages', '-list', path], capture_output=True, text=True,
                                    check=True).stdout.splitlines()[2:]
            self.assertEqual(len(images), 3)
            for line in images:
                cols = line.split()
                self.assertEqual((cols[2], cols[3], cols[4], cols[7]),
                                 ('stencil', str(meta['width']), str(meta['height']), '1'), line)
            self.assertLess(len(pdf), 3 * len(doc), (len(pdf), len(doc)))
            # for the admin and agents only, like the document
            self.assertEqual(self.d.request('GET', '/v1/attachments/%s/pdf' % sha, raw=True,
                                            auth=False)[0], 401)
        # a PDF fax is served as received
        src = os.path.join(self.tmp, 'as-received.tif')
        with open(src, 'wb') as f:
            f.write(self.three_pages())
        subprocess.run(['tiff2pdf', '-o', src + '.pdf', src], check=True)
        with open(src + '.pdf', 'rb') as f:
            received = f.read()
        st, out, _ = self.gateway([('gateway_id', 'pdf-received-' + self.fid()),
                                   ('from', '+34911000701')], received, filename='fax.pdf')
        self.assertEqual(st, 200, out)
        st, pdf, hdrs = self.d.request('GET', '/v1/attachments/%s/pdf' % out['document'], raw=True)
        self.assertEqual((st, pdf, hdrs['x-omnicc-document']), (200, received, out['document']))
        # no such document; not a document name
        self.assertEqual(self.d.request('GET', '/v1/attachments/%s/pdf' % ('0' * 64), raw=True)[0], 404)
        st, err, _ = self.d.request('GET', '/v1/attachments/nope/pdf')
        self.assertEqual((st, err['error']['code']), (404, 'not_found'), err)

    def test_pdf_pages_counted_by_poppler_with_object_streams(self):
        src = os.path.join(self.tmp, 'objstm.tif')
        with open(src, 'wb') as f:
            f.write(self.three_pages())
        subprocess.run(['tiff2pdf', '-o', src + '.pdf', src], check=True)
        objstm = src + '-objstm.pdf'
        subprocess.run(['qpdf', '--object-streams=generate', src + '.pdf', objstm], check=True)
        with open(objstm, 'rb') as f:
            pdf = f.read()
        # the page objects and the page tree are inside compressed object streams: nothing a
        # byte scanner could count is left in the file
        self.assertIn(b'/ObjStm', pdf)
        self.assertNotIn(b'/Page', pdf)
        self.assertNotIn(b'/Count', pdf)
        st, out, _ = self.gateway([('gateway_id', 'objstm-' + self.fid()), ('from', '+34911000710'),
                                   ('pages', '1')], pdf, filename='fax.pdf')
        self.assertEqual((st, out['status'], out['pages']), (200, 'received', 3), out)
        self.assertEqual(self.interaction(out['interaction'])['metadata']['sender_pages'], 1)
        # page images of it
        st, png, _ = self.d.request('GET', '/v1/attachments/%s/pages/3.png' % out['document'], raw=True)
        self.assertEqual((st, png[:4]), (200, b'\x89PNG'))
        # refused documents are recorded as failed faxes, with why
        locked = src + '-locked.pdf'
        subprocess.run(['qpdf', '--encrypt', 'user-pw', 'owner-pw', '256', '--', src + '.pdf', locked],
                       check=True)
        with open(locked, 'rb') as f:
            locked_pdf = f.read()
        for name, body, why in (('locked', locked_pdf, 'PDF protected by a password'),
                                ('damaged', b'%PDF-1.7\n' + os.urandom(4000), 'damaged PDF'),
                                ('text', b'hello, not a fax', 'not a TIFF or PDF document')):
            st, out, _ = self.gateway([('gateway_id', '%s-%s' % (name, self.fid())),
                                       ('from', '+34911000711')], body, filename='fax.pdf')
            self.assertEqual((st, out['status']), (200, 'failed'), (name, out))
            ix = self.interaction(out['interaction'])
            self.assertEqual(ix['metadata']['failure'], 'document refused: ' + why)
            self.assertNotIn('document', ix['metadata'])

    # ---- outbound ----

    def test_outbound_fax_retried_sent_and_delivered(self):
        doc = self.doc('one', [['Only page that arrived']])
        st, got, _ = self.gateway([('gateway_id', 'out-' + self.fid()), ('from', '+34911000500')], doc)
        self.assertEqual(st, 200, got)
        iid, case = got['interaction'], got['case']
        path = '/v1/interactions/%s/fax' % iid
        # validation
        for body, code in (({'to': 'nope', 'document': got['document']}, 400),
                           ({'to': '+34911000500', 'document': '0' * 64}, 400),
                           ({'to': '+34911000500', 'document': got['document'], 'cover': 7}, 400)):
            st, out, _ = self.d.post(path, body)
            self.assertEqual(st, code, out)
        st, out, _ = self.d.post('/v1/interactions/I-999999/fax',
                                 {'to': '+34911000500', 'document': got['document']})
        self.assertEqual(st, 404, out)
        n0 = len(self.api.requests)
        self.api.answers.append((503, {'success': False, 'message': 'try later'}))
        st, out, _ = self.d.post(path, {'to': '+34 911 000 500', 'document': got['document'],
                                        'cover': 'Re: your claim'})
        self.assertEqual((st, out['status']), (202, 'queued'), out)
        fx_id = out['id']
        harness.wait_for(lambda: any(h['type'] == 'fax.sent' for h in self.history(case)), 30,
                         'fax handed to the provider')
        reqs = self.api.requests[n0:]
        self.assertEqual(len(reqs), 2)  # 503 first, claimed again after claim_idle
        r = reqs[-1]
        self.assertEqual(r['path'], '/v2.1/faxes')
        self.assertEqual(r['auth'], 'Basic ' + base64.b64encode(b'api-key-123:api-secret-123').decode())
        self.assertIn(doc, r['body'])
        self.assertIn(b'+34911000500', r['body'])
        self.assertIn(b'Re: your claim', r['body'])
        sent = [h for h in self.history(case) if h['type'] == 'fax.sent'][-1]
        self.assertEqual(sent['fax'], fx_id)
        # Phaxio's callback for the sent fax
        fax = json.dumps({'id': int(sent['provider_id']), 'direction': 'sent', 'status': 'success',
                          'num_pages': 1})
        st, cb, _ = self.phaxio([('fax', fax), ('direction', 'sent'), ('success', 'true')])
        self.assertEqual((st, cb['known']), (200, True), cb)
        self.assertIn('fax.delivered', [h['type'] for h in self.history(case)])
        # refused for good: recorded as failed on the case, not retried
        n1 = len(self.api.requests)
        self.api.answers.append((422, {'success': False, 'message': 'invalid number'}))
        st, out, _ = self.d.post(path, {'to': '+34911000501', 'document': got['document']})
        self.assertEqual(st, 202, out)
        harness.wait_for(lambda: any(h['type'] == 'fax.send_failed' for h in self.history(case)),
                         30, 'fax refused')
        time.sleep(1.5)
        self.assertEqual(len(self.api.requests), n1 + 1)

    def test_outbound_fax_without_final_status_is_flagged_stuck_once(self):
        doc = self.doc('one', [['Only page that arrived']])
        st, got, _ = self.gateway([('gateway_id', 'stuck-' + self.fid()), ('from', '+34911000600')], doc)
        self.assertEqual(st, 200, got)
        iid, case = got['interaction'], got['case']
        path = '/v1/interactions/%s/fax' % iid
        # two faxes handed to the provider (200 with an id); only the second is delivered
        ids = []
        for to in ('+34911000601', '+34911000602'):
            st, out, _ = self.d.post(path, {'to': to, 'document': got['document']})
            self.assertEqual(st, 202, out)
            ids.append(out['id'])
        def sent():
            return [h for h in self.history(case) if h['type'] == 'fax.sent']
        harness.wait_for(lambda: len(sent()) == 2, 30, 'both faxes handed to the provider')
        delivered = [h for h in sent() if h['fax'] == ids[1]][0]
        fax = json.dumps({'id': int(delivered['provider_id']), 'direction': 'sent',
                          'status': 'success', 'num_pages': 1})
        st, cb, _ = self.phaxio([('fax', fax), ('direction', 'sent'), ('success', 'true')])
        self.assertEqual((st, cb['known']), (200, True), cb)
        self.assertEqual(self.redis.cli('ZSCORE', 'omnicc:{main}:faxout:open', ids[1]), '(nil)')

        def stuck():
            return [h for h in self.history(case) if h['type'] == 'fax.stuck']
        harness.wait_for(stuck, 30, 'the undelivered fax flagged as stuck')
        time.sleep(2.5)  # more sweeps (every second with stuck_after = 3): flagged once
        flagged = stuck()
        self.assertEqual([h['fax'] for h in flagged], [ids[0]], flagged)
        self.assertEqual((flagged[0]['status'], flagged[0]['to']), ('sent', '+34911000601'))
        self.assertTrue(self.redis.cli('HGET', 'omnicc:{main}:faxout:' + ids[0], 'stuck_at'))
        self.assertEqual(self.redis.cli('HGET', 'omnicc:{main}:faxout:' + ids[1], 'stuck_at'), '(nil)')
        self.assertEqual(self.redis.cli('ZSCORE', 'omnicc:{main}:faxout:open', ids[0]), '(nil)')
        # a final status that comes late still lands
        fax = json.dumps({'id': int([h for h in sent() if h['fax'] == ids[0]][0]['provider_id']),
                          'direction': 'sent', 'status': 'success', 'num_pages': 1})
        st, cb, _ = self.phaxio([('fax', fax), ('direction', 'sent'), ('success', 'true')])
        self.assertEqual((st, cb['known']), (200, True), cb)
        self.assertEqual(self.redis.cli('HGET', 'omnicc:{main}:faxout:' + ids[0], 'status'), 'delivered')

    # ---- OCR ----

    def wait_linked(self, iid, timeout=90):
        def linked():
            ix = self.interaction(iid)
            return ix if ix.get('ocr_at') else None
        harness.wait_for(linked, timeout, 'OCR of ' + iid)
        return self.interaction(iid)

    def import_customer(self, ext_id, name, policy, phone):
        line = json.dumps({'id': ext_id, 'name': name, 'phones': [phone], 'policies': [policy],
                           'annual_premium': 900, 'tenure_years': 3, 'claims_last_3y': 0})
        st, rep, _ = self.d.post('/v1/customers/import', line + '\n',
                                 content_type='application/x-ndjson')
        self.assertEqual((st, rep['imported']), (200, 1), rep)
        st, cust, _ = self.d.get('/v1/customers?policy=' + policy)
        self.assertEqual(st, 200, cust)
        return cust['customer']['id'] if 'customer' in cust else cust['id']

    def ocr_joins_customer(self, resolution, policy, number):
        cust = self.import_customer('H-' + policy, 'Ana Garcia', policy, number)
        doc = fax_pages(self.tmp, [['FAX COVER SHEET', 'To: Claims department',
                                    'Policy number: ' + policy, 'Windscreen claim, photos follow'],
                                   ['Second page']], resolution)
        st, out, _ = self.gateway([('gateway_id', 'ocr-' + self.fid()), ('from', '+34922' + number[-6:]),
                                   ('status', 'received')], doc)
        self.assertEqual(st, 200, out)
        self.assertNotEqual(self.interaction(out['interaction'])['customer_id'], cust)
        ix = self.wait_linked(out['interaction'])
        self.assertIn(policy.split('-')[0], ix['ocr_text'])
        self.assertEqual(ix['customer_id'], cust, ix.get('ocr_text'))
        self.assertEqual(ix.get('linked_by'), 'ocr')
        hist = self.history(ix['case_id'])
        ocr = [h for h in hist if h['type'] == 'fax.ocr']
        self.assertTrue(ocr, hist)
        self.assertIn(policy, json.loads(ocr[-1]['found'])['policy'])
        self.assertEqual(ocr[-1]['source'], 'ocr:page1')
        # kept on the interaction too, for the agent's desktop
        self.assertIn(policy, json.loads(ix['ocr_found'])['policy'])
        self.assertEqual((ix['ocr_source'], ix['ocr_matched']), ('ocr:page1', 'policy:' + policy))
        return ix

    def test_ocr_fine_resolution_joins_imported_customer(self):
        self.ocr_joins_customer('fine', 'PL-2024-001234', '600111222')

    def test_ocr_standard_resolution_joins_imported_customer(self):
        self.ocr_joins_customer('standard', 'PL-2024-005678', '600333444')

    def test_pdf_fax_pages_rendered_and_cover_read_by_ocr(self):
        # a fax that arrives as a PDF of scanned pages (tiff2pdf of a G3 fax, as fax servers
        # and fax-to-email services send them): page images and OCR of page 1 as for a TIFF
        import struct
        policy, number = 'PL-2024-004466', '600444666'
        cust = self.import_customer('H-' + policy, 'Eva Ruiz', policy, number)
        src = os.path.join(self.tmp, 'pdf-cover-%s.tif' % self.fid())
        with open(src, 'wb') as f:
            f.write(fax_pages(self.tmp, [['FAX COVER SHEET', 'Policy number: ' + policy,
                                          'Medical report attached'], ['Report, page two']]))
        pdf_path = src[:-4] + '.pdf'
        subprocess.run(['tiff2pdf', '-o', pdf_path, src], check=True)
        with open(pdf_path, 'rb') as f:
            pdf = f.read()
        st, out, _ = self.gateway([('gateway_id', 'pdf-ocr-' + self.fid()), ('from', '+34955000001')],
                                  pdf, filename='fax.pdf')
        self.assertEqual((st, out.get('pages')), (200, 2), out)
        base = '/v1/attachments/%s/pages/' % out['document']
        for n in (1, 2):
            st, png, hdrs = self.d.request('GET', base + '%d.png' % n, raw=True)
            self.assertEqual((st, hdrs['content-type']), (200, 'image/png'), png[:200])
            self.assertEqual(png[:8], b'\x89PNG\r\n\x1a\n')
            w, h = struct.unpack('>II', png[16:24])
            # the PDF page is the fax page (A4: 1728 x 2292 pixels at 204 x 196 dpi), drawn at 200 dpi
            self.assertAlmostEqual(w, 1728 / 204 * 200, delta=3)
            self.assertAlmostEqual(h, 2292 / 196 * 200, delta=3)
        self.assertEqual(self.d.request('GET', base + '3.png', raw=True)[0], 404)
        ix = self.wait_linked(out['interaction'])
        self.assertIn('Medical', ix['ocr_text'])
        self.assertEqual(ix['customer_id'], cust, ix.get('ocr_text'))
        self.assertEqual((ix['ocr_source'], ix['ocr_matched']), ('ocr:page1', 'policy:' + policy))

    def test_ocr_case_token_joins_that_case(self):
        first = harness_ingest(self, '+34600555666')
        doc = fax_pages(self.tmp, [['FAX', 'Re: case ' + first['case_id'], 'Signed form attached']])
        st, out, _ = self.gateway([('gateway_id', 'case-' + self.fid()), ('from', '+34933000001')], doc)
        self.assertEqual(st, 200, out)
        ix = self.wait_linked(out['interaction'])
        self.assertEqual(ix['case_id'], first['case_id'], ix.get('ocr_text'))
        self.assertEqual(ix['customer_id'], first['customer_id'])
        types = [h['type'] for h in self.history(first['case_id'])]
        self.assertIn('interaction.linked', types)
        st, old, _ = self.d.get('/v1/cases/' + out['case'])
        self.assertEqual(old['case']['status'], 'closed')


    # ---- correcting the link: POST /v1/interactions/{id}/link ----

    def link(self, iid, body, token=None):
        headers = {'Authorization': 'Bearer ' + token} if token else None
        st, out, _ = self.d.post('/v1/interactions/%s/link' % iid, body, headers=headers)
        return st, out

    def test_link_corrected_by_hand_moves_the_fax_with_history_on_both_cases(self):
        a = harness_ingest(self, '+34600777001')
        b = harness_ingest(self, '+34600777002')
        doc = self.doc('nothing', [['FAX', 'Nothing on this page names anyone']])
        st, out, _ = self.gateway([('gateway_id', 'link-' + self.fid()), ('from', '+34944000001')], doc)
        self.assertEqual(st, 200, out)
        iid, own_case = out['interaction'], out['case']
        ix = self.wait_linked(iid)  # OCR done (found nothing known): it cannot race the link
        self.assertEqual(ix['case_id'], own_case)
        cust_before = ix['customer_id']

        # bad input: clear 4xx, nothing changes
        for body in ({}, {'case': a['case_id'], 'customer': a['customer_id']}, {'case': 'P-1'},
                     {'customer': 'C-1'}, {'case': 7}, {'queue': 'x'}):
            st, err = self.link(iid, body)
            self.assertEqual(st, 400, (body, err))
            self.assertEqual(err['error']['code'] if 'error' in err else err.get('code'),
                             'invalid_field', err)
        self.assertEqual(self.link('I-999999', {'case': a['case_id']})[0], 404)
        self.assertEqual(self.link(iid, {'case': 'C-999999'})[0], 404)
        self.assertEqual(self.link(iid, {'customer': 'P-999999'})[0], 404)
        self.assertEqual(self.link(iid, {'case': own_case})[0], 409)
        # an agent who does not hold the fax
        st, ag, _ = self.d.post('/v1/agents', {'id': 'fax-linker', 'name': 'Linker', 'skills': {},
                                               'capacity': {'fax': 1}})
        self.assertIn(st, (200, 201), ag)
        st, tok, _ = self.d.post('/v1/agents/fax-linker/tokens', None)
        self.assertEqual(st, 201, tok)
        st, err = self.link(iid, {'case': a['case_id']}, token=tok['token'])
        self.assertEqual(st, 403, err)
        ix = self.interaction(iid)
        self.assertEqual((ix['case_id'], ix['customer_id']), (own_case, cust_before))
        self.assertNotIn('interaction.linked', [h['type'] for h in self.history(a['case_id'])])

        # to a case: the fax joins it; its own case is closed; both histories say so
        st, res = self.link(iid, {'case': a['case_id']})
        self.assertEqual(st, 200, res)
        self.assertEqual((res['case'], res['customer'], res['from_case'], res['moved'], res['by']),
                         (a['case_id'], a['customer_id'], own_case, True, 'admin'))
        ix = self.interaction(iid)
        self.assertEqual((ix['case_id'], ix['customer_id']), (a['case_id'], a['customer_id']))
        self.assertEqual((ix['linked_by'], ix['linked_match']), ('admin', 'case:' + a['case_id']))
        linked = [h for h in self.history(a['case_id']) if h['type'] == 'interaction.linked']
        self.assertEqual(len(linked), 1, linked)
        self.assertEqual((linked[0]['interaction'], linked[0]['from_case'], linked[0]['by']),
                         (iid, own_case, 'admin'))
        rel = [h for h in self.history(own_case) if h['type'] == 'fax.relinked']
        self.assertEqual((len(rel), rel[0]['to_case'], rel[0]['by']), (1, a['case_id'], 'admin'), rel)
        st, old, _ = self.d.get('/v1/cases/' + own_case)
        self.assertEqual(old['case']['status'], 'closed')
        # its old case is closed now: not a place to move to
        self.assertEqual(self.link(iid, {'case': own_case})[0], 409)
        self.assertEqual(self.link(iid, {'customer': a['customer_id']})[0], 409)

        # to a customer: their open case
        st, res = self.link(iid, {'customer': b['customer_id']})
        self.assertEqual(st, 200, res)
        self.assertEqual((res['case'], res['customer'], res['from_case']),
                         (b['case_id'], b['customer_id'], a['case_id']))
        self.assertIn('fax.relinked', [h['type'] for h in self.history(a['case_id'])])
        self.assertIn('interaction.linked', [h['type'] for h in self.history(b['case_id'])])
        st, still, _ = self.d.get('/v1/cases/' + a['case_id'])
        self.assertEqual(still['case']['status'], 'open')  # not the fax's own case: kept open
        # what OCR found is still on the fax
        ix = self.interaction(iid)
        self.assertEqual((ix['ocr_source'], ix['ocr_matched']), ('ocr:page1', ''))
        self.assertFalse(json.loads(ix['ocr_found'])['policy'])  # found nothing ({} or [])


@unittest.skipUnless(have_dovecot(), 'dovecot-imapd not installed')
class FaxToEmailTest(unittest.TestCase):
    """A fax-to-email mailbox ([mailbox faxes] channel = fax) on a real Dovecot: each mail is
    a fax interaction (never an email), its TIFF or PDF attachment the document, counted,
    stored, rendered and read by OCR like a webhook's, the sender's number taken from the
    subject or the From, the Message-ID the idempotency key."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-faxmail-')
        os.chmod(cls.tmp, 0o755)
        cls.redis = harness.RedisServer(cls.tmp)
        cls.dovecot = Dovecot(cls.tmp)
        pw = os.path.join(cls.tmp, 'imap.pw')
        with open(pw, 'w') as f:
            f.write('secret\n')
        config = ('[fax]\nocr_workers = 1\n'
                  '[mailbox faxes]\nurl = %s\nuser = faxes\npassword_file = %s\n'
                  'starttls = no\npoll_interval = 1\nprocessed = flag\nchannel = fax\n'
                  'address = faxes@insurer.example\n' % (cls.dovecot.url(), pw))
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url, config)

    @classmethod
    def tearDownClass(cls):
        harness.stop_servers(cls, cls.dovecot)

    def key(self, k):
        return 'omnicc:{main}:' + k

    def mail(self, frm, subject, mid, doc=None, filename='fax.tif', ctype='image/tiff'):
        from email.message import EmailMessage
        m = EmailMessage()
        m['From'] = frm
        m['To'] = 'faxes@insurer.example'
        m['Subject'] = subject
        m['Message-ID'] = mid
        m['Date'] = 'Mon, 3 Jun 2024 10:00:00 +0000'
        m.set_content('You have received a fax. The document is attached.\n')
        if doc is not None:
            maintype, subtype = ctype.split('/')
            m.add_attachment(doc, maintype=maintype, subtype=subtype, filename=filename)
        return m.as_bytes()

    def fax_of(self, mid, timeout=20):
        key = self.key('idem:fax:email:' + mid.strip('<>'))
        harness.wait_for(lambda: self.redis.cli('GET', key) not in ('', '(nil)'), timeout,
                         'fax from mail ' + mid)
        st, ix, _ = self.d.get('/v1/interactions/' + self.redis.cli('GET', key))
        self.assertEqual(st, 200, ix)
        return ix

    def all_seen(self):
        fl = self.dovecot.flags('faxes')
        return fl and all('\\Seen' in f for f in fl.values())

    def test_tiff_fax_by_mail_joins_customer_by_ocr_once(self):
        policy = 'PL-2024-009876'
        line = json.dumps({'id': 'H-FM1', 'name': 'Eva Weber', 'phones': ['+34600777888'],
                           'policies': [policy], 'annual_premium': 700, 'tenure_years': 2,
                           'claims_last_3y': 0})
        st, rep, _ = self.d.post('/v1/customers/import', line + '\n',
                                 content_type='application/x-ndjson')
        self.assertEqual(st, 200, rep)
        st, cust, _ = self.d.get('/v1/customers?policy=' + policy)
        self.assertEqual(st, 200, cust)
        tiff = fax_pages(self.tmp, [['FAX COVER SHEET', 'To: Claims department',
                                     'Policy number: ' + policy, 'Storm damage, 3 pages'],
                                    ['Page two'], ['Page three']])
        mid = '<fax-%s@fax.provider.example>' % uuid.uuid4().hex
        raw = self.mail('Fax Service <noreply@fax.provider.example>',
                        'Fax from +49 30 1234567 (3 pages)', mid, tiff)
        seq_before = self.redis.cli('GET', self.key('seq:ix'))
        self.dovecot.append('faxes', raw)
        ix = self.fax_of(mid)
        self.assertEqual(ix['channel'], 'fax')
        self.assertEqual(ix['from'], '+49301234567')
        self.assertEqual(ix['to'], 'faxes@insurer.example')
        self.assertEqual(ix['external_id'], 'email:' + mid.strip('<>'))
        md = ix['metadata']
        self.assertEqual((md['provider'], md['fax_status']), ('email', 'received'))
        self.assertEqual(md['document']['pages'], 3)
        self.assertEqual(md['document']['type'], 'tiff')
        self.assertEqual(md['document']['sha256'], hashlib.sha256(tiff).hexdigest())
        # never an email interaction
        self.assertIn(self.redis.cli('GET', self.key('idem:email:' + mid)), ('', '(nil)'))
        # the document as any fax's: served, pages rendered
        st, png, _ = self.d.request('GET', '/v1/attachments/%s/pages/3.png'
                                    % md['document']['sha256'], raw=True)
        self.assertEqual((st, png[:4]), (200, b'\x89PNG'))
        # OCR of the cover sheet joins the policyholder
        harness.wait_for(lambda: self.d.get('/v1/interactions/' + ix['id'])[1].get('ocr_at'),
                         90, 'OCR')
        st, ix2, _ = self.d.get('/v1/interactions/' + ix['id'])
        self.assertEqual(ix2['customer_id'], cust['id'], ix2.get('ocr_text'))
        self.assertEqual(ix2.get('linked_by'), 'ocr')
        harness.wait_for(self.all_seen, 15, 'mail flagged \\Seen')
        # the provider (or a crash before the flag) delivers it again: the same fax
        n = len(self.dovecot.flags('faxes'))
        self.dovecot.append('faxes', raw)
        harness.wait_for(lambda: len(self.dovecot.flags('faxes')) == n + 1 and self.all_seen(),
                         15, 'second copy processed')
        self.assertEqual(int(self.redis.cli('GET', self.key('seq:ix'))),
                         int(seq_before or 0) + 1)

    def test_pdf_fax_number_from_the_sender_address(self):
        tiff = fax_pages(self.tmp, [['Claim form page 1'], ['Claim form page 2']], 'standard')
        src = os.path.join(self.tmp, 'mail.tif')
        with open(src, 'wb') as f:
            f.write(tiff)
        pdf_path = os.path.join(self.tmp, 'mail.pdf')
        subprocess.run(['tiff2pdf', '-o', pdf_path, src], check=True)
        with open(pdf_path, 'rb') as f:
            pdf = f.read()
        mid = '<pdf-%s@fax.provider.example>' % uuid.uuid4().hex
        # the document as application/octet-stream: recognised by its bytes
        self.dovecot.append('faxes', self.mail('12125551234@fax.provider.example',
                                               'Your document', mid, pdf, 'scan.pdf',
                                               'application/octet-stream'))
        ix = self.fax_of(mid)
        self.assertEqual(ix['channel'], 'fax')
        self.assertEqual(ix['from'], '+12125551234')
        self.assertEqual(ix['metadata']['document']['type'], 'pdf')
        self.assertEqual(ix['metadata']['document']['pages'], 2)

    def test_mail_without_a_document_is_a_failed_fax(self):
        mid = '<empty-%s@fax.provider.example>' % uuid.uuid4().hex
        self.dovecot.append('faxes', self.mail('noreply@fax.provider.example',
                                               'Fax from +34 911 000 777', mid))
        ix = self.fax_of(mid)
        self.assertEqual(ix['channel'], 'fax')
        self.assertEqual(ix['metadata']['fax_status'], 'failed')
        self.assertIn('no attachment', ix['metadata']['failure'])
        self.assertEqual(ix['from'], '+34911000777')


class FakeTelnyxAPI(LocalServer):
    """A stand-in for Telnyx's fax API, which cannot run here (a cloud service): it speaks the
    documented shape of POST /v2/faxes (JSON: connection_id, to, from, media_url; Bearer API
    key; 202 with data.id) and, as Telnyx does, fetches the document from media_url before
    answering. Answers queued in self.answers come first."""

    def __init__(self):
        self.requests, self.answers, self.fetched = [], [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get('Content-Length') or 0)
                body = json.loads(self.rfile.read(n) or b'{}')
                outer.requests.append({'path': self.path, 'auth': self.headers.get('Authorization'),
                                       'body': body})
                if outer.answers:
                    code, out = outer.answers.pop(0)
                else:
                    with urllib.request.urlopen(body['media_url'], timeout=10) as resp:
                        outer.fetched.append((resp.status, resp.headers.get('Content-Type'),
                                              resp.read()))
                    code, out = 202, {'data': {'id': str(uuid.uuid4()), 'record_type': 'fax',
                                               'status': 'queued', 'direction': 'outbound',
                                               'to': body['to'], 'from': body['from']}}
                answer(self, code, json.dumps(out).encode(), 'application/json')

        self.serve(Handler)


class TelnyxOutboundTest(unittest.TestCase):
    """Sending through Telnyx: the fax outbox hands the job to POST /v2/faxes with a signed,
    expiring link to the document on this daemon; the provider fetches it; a 5xx is tried
    again; Telnyx's signed fax.delivered / fax.failed webhooks land on the case. The Telnyx
    API is a local stand-in (FakeTelnyxAPI): the real service cannot be reached from here."""

    MEDIA_SECRET = 'media-link-secret-5b0e'

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-telnyx-')
        cls.api = FakeTelnyxAPI()
        cls.key = Ed25519PrivateKey.generate()
        pub = cls.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
        files = {'telnyx.key': 'KEY-telnyx-0123', 'media.secret': cls.MEDIA_SECRET,
                 'gateway.secret': GATEWAY_SECRET}
        for name, value in files.items():
            with open(os.path.join(cls.tmp, name), 'w') as f:
                f.write(value + '\n')
        port = harness.free_port()
        p = lambda n: os.path.join(cls.tmp, n)
        config = ('[fax]\ntelnyx_public_key = %s\ngateway_secret_file = %s\nocr = no\n'
                  'outbound = telnyx\ntelnyx_api_base = http://127.0.0.1:%d\n'
                  'telnyx_api_key_file = %s\ntelnyx_connection_id = conn-7\n'
                  'telnyx_from = +34910000000\npublic_url = http://127.0.0.1:%d/\n'
                  'media_secret_file = %s\nmedia_link_ttl = 600\nclaim_idle = 1\n'
                  'outbox_poll_ms = 100\nsend_attempts = 3\n'
                  % (base64.b64encode(pub).decode(), p('gateway.secret'), cls.api.port,
                     p('telnyx.key'), port, p('media.secret')))
        cls.redis = harness.RedisServer(cls.tmp)
        cls.d = harness.Omniccd.__new__(harness.Omniccd)
        # the daemon's own port is in public_url: pick it before the config is written
        orig = harness.free_port
        harness.free_port = lambda: port
        try:
            cls.d.__init__(cls.tmp, cls.redis.url, config)
        finally:
            harness.free_port = orig

    @classmethod
    def tearDownClass(cls):
        harness.stop_servers(cls, cls.api)

    def telnyx_event(self, event_type, payload):
        body = json.dumps({'data': {'event_type': event_type, 'id': str(uuid.uuid4()),
                                    'occurred_at': '2026-11-25T08:00:00Z', 'payload': payload},
                           'meta': {'attempt': 1}}).encode()
        ts = str(int(time.time()))
        sig = base64.b64encode(self.key.sign(ts.encode() + b'|' + body)).decode()
        return self.d.post('/v1/fax/telnyx', body, auth=False, content_type='application/json',
                           headers={'telnyx-timestamp': ts, 'telnyx-signature-ed25519': sig})

    def history(self, case_id):
        st, c, _ = self.d.get('/v1/cases/' + case_id)
        self.assertEqual(st, 200, c)
        return c['history']

    def received_fax(self):
        doc = fax_pages(self.tmp, [['Signed mandate, page 1'], ['Page 2']])
        files = [('file', 'fax.tif', 'image/tiff', doc)]
        body, ctype = multipart([('gateway_id', 'tx-' + uuid.uuid4().hex), ('from', '+34911000777')],
                                files)
        st, out, _ = self.d.post('/v1/fax/inbound', body, auth=False, content_type=ctype,
                                 headers=gateway_headers(body))
        self.assertEqual(st, 200, out)
        return out, doc

    def test_sent_through_telnyx_fetching_a_signed_link_then_delivered(self):
        got, doc = self.received_fax()
        n, f0 = len(self.api.requests), len(self.api.fetched)
        self.api.answers.append((503, {'errors': [{'title': 'Service unavailable',
                                                   'detail': 'try later'}]}))
        st, out, _ = self.d.post('/v1/interactions/%s/fax' % got['interaction'],
                                 {'to': '+34 911 000 888', 'document': got['document']})
        self.assertEqual(st, 202, out)
        harness.wait_for(lambda: len(self.api.fetched) > f0, 30, 'Telnyx fetching the document')
        req = self.api.requests[-1]
        self.assertEqual(len(self.api.requests), n + 2)  # the 503, then the one that went
        self.assertEqual(req['path'], '/v2/faxes')
        self.assertEqual(req['auth'], 'Bearer KEY-telnyx-0123')
        b = req['body']
        self.assertEqual((b['connection_id'], b['to'], b['from']),
                         ('conn-7', '+34911000888', '+34910000000'))
        self.assertTrue(b['media_url'].startswith('http://127.0.0.1:%d/v1/fax/media/%s?'
                                                  % (self.d.port, got['document'])), b)
        status, ctype, data = self.api.fetched[-1]
        self.assertEqual((status, ctype, data), (200, 'image/tiff', doc))
        case = got['case']
        harness.wait_for(lambda: any(h['type'] == 'fax.sent' for h in self.history(case)), 15,
                         'fax.sent')
        sent = [h for h in self.history(case) if h['type'] == 'fax.sent'][-1]
        # Telnyx reports the dialling, then the delivery, on its webhook, signed
        for _ in range(2):  # a repeated event records nothing twice
            st, ev, _ = self.telnyx_event('fax.sending.started', {
                'fax_id': sent['provider_id'], 'direction': 'outbound', 'status': 'sending',
                'to': '+34911000888', 'from': '+34910000000'})
            self.assertEqual((st, ev['known']), (200, True), ev)
        sending = [h for h in self.history(case) if h['type'] == 'fax.sending']
        self.assertEqual([h['fax'] for h in sending], [out['id']])
        st, ev, _ = self.telnyx_event('fax.delivered', {
            'fax_id': sent['provider_id'], 'direction': 'outbound', 'status': 'delivered',
            'page_count': 2, 'to': '+34911000888', 'from': '+34910000000'})
        self.assertEqual((st, ev['known']), (200, True), ev)
        delivered = [h for h in self.history(case) if h['type'] == 'fax.delivered']
        self.assertEqual(len(delivered), 1)
        self.assertEqual((delivered[0]['fax'], delivered[0]['pages']), (out['id'], '2'))

    def test_failed_delivery_is_recorded(self):
        got, _ = self.received_fax()
        st, out, _ = self.d.post('/v1/interactions/%s/fax' % got['interaction'],
                                 {'to': '+34 911 000 999', 'document': got['document']})
        self.assertEqual(st, 202, out)
        case = got['case']
        harness.wait_for(lambda: any(h['type'] == 'fax.sent' for h in self.history(case)), 30,
                         'fax.sent')
        pid = [h for h in self.history(case) if h['type'] == 'fax.sent'][-1]['provider_id']
        st, ev, _ = self.telnyx_event('fax.failed', {'fax_id': pid, 'direction': 'outbound',
                                                     'status': 'failed',
                                                     'failure_reason': 'receiver_no_answer'})
        self.assertEqual((st, ev['known']), (200, True), ev)
        failed = [h for h in self.history(case) if h['type'] == 'fax.send_failed']
        self.assertTrue(failed and 'receiver_no_answer' in failed[-1]['error'], failed)

    def test_document_links_are_signed_and_expire(self):
        got, doc = self.received_fax()
        sha = got['document']

        def link(expires, secret=self.MEDIA_SECRET, name=sha):
            sig = hmac.new(secret.encode(), ('%s.%d' % (name, expires)).encode(),
                           hashlib.sha256).hexdigest()
            return '/v1/fax/media/%s?expires=%d&sig=%s' % (name, expires, sig)
        future = int(time.time()) + 300
        st, data, _ = self.d.request('GET', link(future), raw=True, auth=False)
        self.assertEqual((st, data), (200, doc))
        for bad in (link(int(time.time()) - 10), link(future, secret='wrong'),
                    link(future).replace('expires=%d' % future, 'expires=%d' % (future + 1)),
                    '/v1/fax/media/%s' % sha):
            st, _, _ = self.d.request('GET', bad, raw=True, auth=False)
            self.assertEqual(st, 403, bad)
        # a well-signed link to a document that is not (or no longer) stored
        st, _, _ = self.d.request('GET', link(future, name='a' * 64), raw=True, auth=False)
        self.assertEqual(st, 404)


def harness_ingest(t, phone):
    st, body, _ = t.d.post('/v1/interactions', {'channel': 'voice', 'external_id': t.fid(),
                                                'from': phone})
    t.assertEqual(st, 202, body)
    return body


HYLAFAX_TOOLS = ('/usr/sbin/faxq', '/usr/sbin/hfaxd', '/usr/bin/sendfax', '/usr/bin/faxstat',
                 '/usr/bin/faxrm')


def have_hylafax():
    return (all(os.access(t, os.X_OK) for t in HYLAFAX_TOOLS) and os.geteuid() == 0 and
            os.path.isdir('/var/spool/hylafax') and os.path.isdir('/etc/hylafax'))


class HylaFAX:
    """A real HylaFAX server (Debian's hylafax-server) in a spool of its own: the queue manager
    faxq and the client-protocol server hfaxd on a free loopback port. There is no modem, so
    jobs are queued, listed, altered and removed as on a real server but never dialled."""

    def __init__(self, tmp):
        self.spool = os.path.join(tmp, 'hylafax-spool')
        subprocess.run(['cp', '-a', '/var/spool/hylafax', self.spool], check=True)
        subprocess.run(['cp', '-a', '/etc/hylafax/.', os.path.join(self.spool, 'etc')], check=True)
        hosts = os.path.join(self.spool, 'etc', 'hosts.hfaxd')
        with open(hosts, 'w') as f:
            f.write('127.0.0.1\nlocalhost\n')
        fifo = os.path.join(self.spool, 'FIFO')
        os.mkfifo(fifo)
        for path in (hosts, fifo):
            shutil.chown(path, 'uucp', 'uucp')
            os.chmod(path, 0o600)
        # the test's own clients (faxstat, faxrm), set up as omniccd sets up its own
        self.home = os.path.join(tmp, 'hylafax-home')
        os.makedirs(self.home)
        with open(os.path.join(self.home, '.hylarc'), 'w') as f:
            f.write('PassiveMode: yes\nJobFmt: "%j|%a|%s"\n')
        self.port = harness.free_port()
        self.procs = [subprocess.Popen(['/usr/sbin/faxq', '-q', self.spool, '-D'],
                                       start_new_session=True)]
        time.sleep(0.5)
        self.procs.append(subprocess.Popen(['/usr/sbin/hfaxd', '-q', self.spool, '-i',
                                            str(self.port), '-d'], start_new_session=True))
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def client(self, *args):
        out = subprocess.run(list(args), env=dict(os.environ, HOME=self.home),
                             capture_output=True, text=True, timeout=30)
        return out.returncode, out.stdout + out.stderr

    def jobs(self, *flags):
        """{job id: (state letter, status)} as faxstat lists them."""
        _, out = self.client('faxstat', *flags, '-h', '127.0.0.1:%d' % self.port)
        jobs = {}
        for line in out.splitlines():
            parts = line.split('|')
            if len(parts) == 3 and parts[0].strip().isdigit():
                jobs[int(parts[0])] = (parts[1], parts[2].strip())
        return jobs

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@unittest.skipUnless(have_hylafax(), 'needs hylafax-server and hylafax-client, run as root')
class FaxHylafaxTest(unittest.TestCase):
    """[fax] outbound = hylafax against a real faxq + hfaxd: sendfax submits the stored
    document (the job id becomes the fax's provider id), faxstat follows the job until HylaFAX
    calls it done or failed. Without a modem no job is ever dialled, so "done" cannot be
    reached here: the final status tested is the one an operator's faxrm gives (failed)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-hylafax-')
        os.chmod(cls.tmp, 0o755)  # faxq and hfaxd run as uucp
        cls.hf = None
        cls.redis = cls.d = None
        cls.hf = HylaFAX(cls.tmp)
        secret_file = os.path.join(cls.tmp, 'gateway-secret')
        with open(secret_file, 'w') as f:
            f.write(GATEWAY_SECRET + '\n')
        cls.redis = harness.RedisServer(cls.tmp)
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url, (
            '[fax]\ngateway_secret_file = %s\nocr = no\noutbound = hylafax\n'
            'hylafax_host = 127.0.0.1:%d\nhylafax_poll = 1\nclaim_idle = 1\n'
            'outbox_poll_ms = 100\n' % (secret_file, cls.hf.port)))

    @classmethod
    def tearDownClass(cls):
        harness.stop_servers(cls, cls.hf)

    def history(self, case_id):
        st, c, _ = self.d.get('/v1/cases/' + case_id)
        self.assertEqual(st, 200, c)
        return c['history']

    def wait_history(self, case_id, kind, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [h for h in self.history(case_id) if h['type'] == kind]
            if found:
                return found
            time.sleep(0.2)
        self.fail('no %s on %s: %r' % (kind, case_id, self.history(case_id)))

    def test_sent_through_hfaxd_followed_by_faxstat_until_removed(self):
        doc = fax_pages(self.tmp, [['To HylaFAX, page 1'], ['page 2']], 'standard')
        files = [('file', 'fax.tif', 'image/tiff', doc)]
        body, ctype = multipart([('gateway_id', 'hf-in-%d' % os.getpid()),
                                 ('from', '+34911000900')], files)
        st, got, _ = self.d.post('/v1/fax/inbound', body, auth=False, content_type=ctype,
                                 headers=gateway_headers(body))
        self.assertEqual(st, 200, got)
        # a number is validated before anything is queued, and never reaches a shell
        for bad in ('+34 911; touch /tmp/omnicc-pwned', '$(id)', ''):
            st, out, _ = self.d.post('/v1/interactions/%s/fax' % got['interaction'],
                                     {'to': bad, 'document': got['document']})
            self.assertEqual(st, 400, (bad, out))
        st, out, _ = self.d.post('/v1/interactions/%s/fax' % got['interaction'],
                                 {'to': '+34 911 000 901', 'document': got['document']})
        self.assertEqual(st, 202, out)
        fax_id = out['id']
        sent = self.wait_history(got['case'], 'fax.sent')
        self.assertEqual(sent[0]['fax'], fax_id)
        job = int(sent[0]['provider_id'])
        # hfaxd has the job, queued for a modem (not done, not failed)
        jobs = self.hf.jobs('-s')
        self.assertIn(job, jobs, jobs)
        self.assertNotIn(jobs[job][0], ('D', 'F'), jobs)
        self.assertEqual([h['type'] for h in self.history(got['case'])].count('fax.send_failed'), 0)
        # the operator removes it: HylaFAX calls it failed, and the next faxstat poll records it
        rc, text = self.hf.client('faxrm', '-h', '127.0.0.1:%d' % self.hf.port, str(job))
        self.assertEqual(rc, 0, text)
        failed = self.wait_history(got['case'], 'fax.send_failed')
        self.assertEqual(failed[0]['fax'], fax_id)
        self.assertEqual(failed[0]['error'], 'Job aborted by request')
        self.assertEqual(self.hf.jobs('-d').get(job, ('?',))[0], 'F')
        # read again at every poll, recorded once
        time.sleep(3)
        self.assertEqual([h['type'] for h in self.history(got['case'])].count('fax.send_failed'), 1)


if __name__ == '__main__':
    unittest.main()
