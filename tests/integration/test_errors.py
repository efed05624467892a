"""Every error the API answers, against a real redis-server: the status, the JSON body
{"error": {"code", "message"}} (the message names the offending field), the headers that go
with it (WWW-Authenticate, Allow), and that a rejected request wrote nothing to Redis.
503 (Redis unreachable) is covered in test_outage.py."""
import contextlib
import json
import unittest

import harness

MAX_BODY = 4096
IMPORT_MAX_BODY = 16384


class ErrorsBase(harness.TestCase):
    """One redis-server and one omniccd with a small max_body; helpers."""
    # The harness writes [http] already; re-opening the section adds keys to it.
    extra_config = '[http]\nmax_body = %d\nimport_max_body = %d\n' % (MAX_BODY, IMPORT_MAX_BODY)
    # DEBUG DIGEST (a hash of the whole dataset) proves "wrote nothing" beyond DBSIZE.
    redis_extra = ('--enable-debug-command', 'local')

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Some state, so that a stray write to an existing key would change the digest.
        st, first, _ = cls.d.post('/v1/interactions', {
            'channel': 'voice', 'external_id': 'setup-1', 'from': '+34 600 900 001',
            'customer': {'policy': 'PL-2024-900001', 'name': 'Setup'}})
        assert st == 202, first
        cls.case_id, cls.customer_id = first['case_id'], first['customer_id']

    # ---- helpers ----

    def dataset(self):
        return self.redis.cli('DBSIZE'), self.redis.cli('DEBUG', 'DIGEST')

    @contextlib.contextmanager
    def writes_nothing(self):
        before = self.dataset()
        self.assertNotEqual(before[1], '', 'DEBUG DIGEST unavailable')
        yield
        self.assertEqual(self.dataset(), before, 'a rejected request changed Redis')

    def assertError(self, resp, status, code, field=None, contains=None):
        st, body, hdrs = resp
        self.assertEqual(st, status, body)
        self.assertTrue(hdrs.get('content-type', '').startswith('application/json'), hdrs)
        self.assertIsInstance(body, dict, body)
        self.assertEqual(set(body), {'error'}, body)
        self.assertEqual(set(body['error']), {'code', 'message'}, body)
        self.assertEqual(body['error']['code'], code, body)
        msg = body['error']['message']
        self.assertIsInstance(msg, str)
        self.assertTrue(msg, body)
        if field is not None:
            self.assertTrue(msg.startswith(field + ':'), 'message %r does not name %r' % (msg, field))
        if contains is not None:
            self.assertIn(contains, msg)
        return body['error']

    def post_ix(self, body, **kw):
        return self.d.post('/v1/interactions', body, **kw)


class ErrorsTest(ErrorsBase):
    # ---- 400 malformed JSON ----

    def test_400_malformed_json(self):
        cases = [b'{bad', b'', b'{"channel": "voice",', b'[]', b'"voice"', b'42', b'null',
                 b'{"channel": "voice", "channel": "email", "external_id": "dup-keys"}',
                 b'{"channel": "voice", "external_id": "bad-utf8-\xff\xfe"}']
        with self.writes_nothing():
            for raw in cases:
                with self.subTest(body=raw):
                    self.assertError(self.post_ix(raw, content_type='application/json'), 400,
                                     'malformed_json')
            # the other JSON endpoints parse the same way
            self.assertError(self.d.post('/v1/cases/%s/notes' % self.case_id, b'{"text":',
                                         content_type='application/json'), 400, 'malformed_json')
            self.assertError(self.d.post('/v1/customers/%s/merge' % self.customer_id, b'[1]',
                                         content_type='application/json'), 400, 'malformed_json')
            self.assertError(self.d.post('/v1/cases/%s/close' % self.case_id, b'nope',
                                         content_type='application/json'), 400, 'malformed_json')

    # ---- 400 invalid field ----

    def test_400_invalid_field_names_the_field(self):
        base = {'channel': 'voice', 'external_id': 'never-stored'}
        cases = [
            ({'customer': {'phone': 'call me maybe'}}, 'customer.phone'),
            ({'customer': {'phone': '12'}}, 'customer.phone'),
            ({'customer': {'email': 'not-an-address'}}, 'customer.email'),
            ({'customer': {'email': 'a@b@example.com'}}, 'customer.email'),
            ({'customer': {'policy': 'XX'}}, 'customer.policy'),
            ({'customer': {'national_id': 'a!b'}}, 'customer.national_id'),
            ({'customer': {'branch_customer_id': 42}}, 'customer.branch_customer_id'),
            ({'customer': {'fax': '+34600000000'}}, 'customer.fax'),
            ({'customer': 'Ana'}, 'customer'),
            ({'case_id': 'X-1'}, 'case_id'),
            ({'case_id': 'C-abc'}, 'case_id'),
            ({'case_id': 12}, 'case_id'),
            ({'priority': 101}, 'priority'),
            ({'priority': -1}, 'priority'),
            ({'priority': 'high'}, 'priority'),
            ({'priority': 1.5}, 'priority'),
            ({'bogus': 1}, 'bogus'),
            ({'channel': 'sms'}, 'channel'),
            ({'channel': 7}, 'channel'),
            ({'external_id': ''}, 'external_id'),
            ({'direction': 'sideways'}, 'direction'),
            ({'from': 5}, 'from'),
            ({'subject': 'two\nlines'}, 'subject'),
            ({'queue': 'no spaces'}, 'queue'),
            ({'skills': 'claims'}, 'skills'),
            ({'skills': ['claims', 'bad skill']}, 'skills[1]'),
            ({'metadata': [1, 2]}, 'metadata'),
        ]
        with self.writes_nothing():
            for extra, field in cases:
                body = dict(base, **extra)
                with self.subTest(field=field, body=body):
                    self.assertError(self.post_ix(body), 400, 'invalid_field', field)
            for missing, field in (('channel', 'channel'), ('external_id', 'external_id')):
                body = {k: v for k, v in base.items() if k != missing}
                with self.subTest(missing=missing):
                    self.assertError(self.post_ix(body), 400, 'invalid_field', field)
            err = self.assertError(self.post_ix(dict(base, bogus=1)), 400, 'invalid_field')
            self.assertIn('unknown field', err['message'])
            err = self.assertError(self.post_ix(dict(base, customer={'fax': '1'})), 400,
                                   'invalid_field')
            self.assertIn('unknown field', err['message'])

    def test_400_invalid_query_and_action_fields(self):
        c = self.case_id
        with self.writes_nothing():
            self.assertError(self.d.get('/v1/customers'), 400, 'invalid_field')
            self.assertError(self.d.get('/v1/customers?name=Ana'), 400, 'invalid_field')
            self.assertError(self.d.get('/v1/customers?phone=abc'), 400, 'invalid_field', 'phone')
            self.assertError(self.d.get('/v1/customers?email=nobody'), 400, 'invalid_field',
                             'email')
            self.assertError(self.d.get('/v1/customers?policy=%3F%3F'), 400, 'invalid_field',
                             'policy')
            self.assertError(self.d.get('/v1/cases/%s?limit=0' % c), 400, 'invalid_field', 'limit')
            self.assertError(self.d.get('/v1/cases/%s?limit=501' % c), 400, 'invalid_field',
                             'limit')
            self.assertError(self.d.get('/v1/cases/%s?limit=ten' % c), 400, 'invalid_field',
                             'limit')
            self.assertError(self.d.get('/v1/cases/%s?cursor=yesterday' % c), 400,
                             'invalid_field', 'cursor')
            notes = '/v1/cases/%s/notes' % c
            self.assertError(self.d.post(notes, {}), 400, 'invalid_field', 'text')
            self.assertError(self.d.post(notes, {'text': ''}), 400, 'invalid_field', 'text')
            self.assertError(self.d.post(notes, {'text': 7}), 400, 'invalid_field', 'text')
            self.assertError(self.d.post(notes, {'text': 'hi', 'author': 'not valid'}), 400,
                             'invalid_field', 'author')
            self.assertError(self.d.post('/v1/cases/%s/close' % c, {'reason': 5}), 400,
                             'invalid_field', 'reason')
            merge = '/v1/customers/%s/merge' % self.customer_id
            self.assertError(self.d.post(merge, {}), 400, 'invalid_field', 'from')
            self.assertError(self.d.post(merge, {'from': 'Q-1'}), 400, 'invalid_field', 'from')
            self.assertError(self.d.post(merge, {'from': 'P-1', 'force': True}), 400,
                             'invalid_field', 'from')
        # the case is untouched: still open, history as before
        st, case, _ = self.d.get('/v1/cases/' + c)
        self.assertEqual(st, 200)
        self.assertEqual(case['case']['status'], 'open')
        self.assertNotIn('note', [h['type'] for h in case['history']])

    # ---- 401 ----

    def test_401_missing_or_wrong_token(self):
        body = {'channel': 'voice', 'external_id': 'auth-probe', 'from': '+34600900002'}
        wrong = [None, 'Bearer', 'Bearer ', 'Bearer wrong-token-0123456789',
                 'Bearer ' + harness.TOKEN[:-1], 'Bearer ' + harness.TOKEN + 'x',
                 'Basic ' + harness.TOKEN, harness.TOKEN, 'Bearer ' + 'x' * 300]
        with self.writes_nothing():
            for auth in wrong:
                with self.subTest(authorization=auth):
                    headers = {} if auth is None else {'Authorization': auth}
                    for resp in (self.d.post('/v1/interactions', body, auth=False, headers=headers),
                                 self.d.get('/v1/cases/' + self.case_id, auth=False,
                                            headers=headers),
                                 self.d.get('/v1/customers/' + self.customer_id, auth=False,
                                            headers=headers)):
                        self.assertError(resp, 401, 'unauthorized')
                        self.assertEqual(resp[2].get('www-authenticate'), 'Bearer realm="omnicc"')
                    # the body is not looked at before authentication
                    self.assertError(self.d.post('/v1/interactions', b'{bad', auth=False,
                                                 headers=headers,
                                                 content_type='application/json'),
                                     401, 'unauthorized')
        # health and metrics need no token; the admin API with the right one works
        self.assertEqual(self.d.get('/healthz', auth=False)[0], 200)
        self.assertEqual(self.d.get('/metrics', auth=False, raw=True)[0], 200)
        st, r, _ = self.post_ix(body)
        self.assertEqual(st, 202, r)
        # the auth scheme is case-insensitive (RFC 7235)
        st, _, _ = self.d.get('/v1/cases/' + self.case_id, auth=False,
                              headers={'Authorization': 'bearer ' + harness.TOKEN})
        self.assertEqual(st, 200)

    # ---- 404 ----

    def test_404_unknown_things(self):
        with self.writes_nothing():
            for path in ('/', '/v1', '/v1/nothing', '/v1/interactions/', '/v1/cases/C-1/extra',
                         '/v2/interactions'):
                with self.subTest(path=path):
                    self.assertError(self.d.get(path), 404, 'not_found')
            self.assertError(self.d.post('/v1/unknown', {'a': 1}), 404, 'not_found')
            for path in ('/v1/interactions/I-999999', '/v1/interactions/not-an-id',
                         '/v1/cases/C-999999', '/v1/cases/P-1', '/v1/customers/P-999999',
                         '/v1/customers/C-1', '/v1/customers?phone=%2B34699999999',
                         '/v1/customers?email=nobody@example.com',
                         '/v1/customers?policy=PL-2024-999999'):
                with self.subTest(path=path):
                    self.assertError(self.d.get(path), 404, 'not_found')
            for action, body in (('close', None), ('reopen', None), ('notes', {'text': 'x'})):
                with self.subTest(action=action):
                    self.assertError(self.d.post('/v1/cases/C-999999/' + action, body), 404,
                                     'not_found')
            self.assertError(self.d.post('/v1/customers/P-999999/merge',
                                         {'from': self.customer_id}), 404, 'not_found')
            self.assertError(self.d.post('/v1/customers/%s/merge' % self.customer_id,
                                         {'from': 'P-999999'}), 404, 'not_found', 'from')
            # an interaction naming a case that does not exist is rejected whole
            self.assertError(self.post_ix({'channel': 'email', 'external_id': 'case-404',
                                           'from': 'new.person@example.com',
                                           'case_id': 'C-999999'}), 404, 'not_found', 'case_id')
        # ... and was not remembered for idempotency: the same external id is new afterwards
        st, r, _ = self.post_ix({'channel': 'email', 'external_id': 'case-404',
                                 'from': 'new.person@example.com'})
        self.assertEqual(st, 202, r)
        self.assertFalse(r['duplicate'])

    # ---- 405 ----

    def test_405_with_allow_header(self):
        cases = [('DELETE', '/v1/interactions', {'POST'}),
                 ('GET', '/v1/interactions', {'POST'}),
                 ('PUT', '/v1/interactions/I-1', {'GET'}),
                 ('POST', '/v1/cases/C-1', {'GET'}),
                 ('GET', '/v1/cases/C-1/close', {'POST'}),
                 ('DELETE', '/v1/cases/C-1/notes', {'POST'}),
                 ('POST', '/v1/customers', {'GET'}),
                 ('PATCH', '/v1/customers/P-1', {'GET'}),
                 ('GET', '/v1/customers/P-1/merge', {'POST'}),
                 ('PUT', '/v1/customers/import', {'POST', 'GET'}),
                 ('POST', '/healthz', {'GET'})]
        with self.writes_nothing():
            for method, path, allowed in cases:
                with self.subTest(method=method, path=path):
                    resp = self.d.request(method, path)
                    err = self.assertError(resp, 405, 'method_not_allowed')
                    allow = {m.strip() for m in resp[2].get('allow', '').split(',')}
                    # routes may be added to a path later: what is there must be listed
                    self.assertTrue(allowed <= allow, (allowed, allow))
                    self.assertNotIn(method, allow)
                    self.assertIn(method, err['message'])

    # ---- 413 ----

    def test_413_over_max_body(self):
        def ix_of_size(n):
            doc = {'channel': 'email', 'external_id': 'big', 'from': 'big@example.com', 'body': ''}
            doc['body'] = 'x' * (n - len(json.dumps(doc)))
            raw = json.dumps(doc).encode()
            self.assertEqual(len(raw), n)
            return raw
        with self.writes_nothing():
            for n in (MAX_BODY + 1, 2 * MAX_BODY, 60000):
                with self.subTest(size=n):
                    self.assertError(self.post_ix(ix_of_size(n), content_type='application/json'),
                                     413, 'too_large', contains=str(MAX_BODY))
            big_note = json.dumps({'text': 'y' * MAX_BODY})
            self.assertError(self.d.post('/v1/cases/%s/notes' % self.case_id, big_note,
                                         content_type='application/json'), 413, 'too_large')
            # the import has its own, larger limit
            line = json.dumps({'id': 'H-big', 'name': 'z' * 150}) + '\n'
            ndjson = line * (IMPORT_MAX_BODY // len(line) + 1)
            self.assertError(self.d.post('/v1/customers/import', ndjson,
                                         content_type='application/x-ndjson'),
                             413, 'too_large', contains=str(IMPORT_MAX_BODY))
        # exactly max_body is accepted
        st, r, _ = self.post_ix(ix_of_size(MAX_BODY), content_type='application/json')
        self.assertEqual(st, 202, r)
        # and an import over max_body but under import_max_body is too
        line = json.dumps({'id': 'H-mid', 'name': 'Mid'}) + '\n'
        body = line + '\n' * (MAX_BODY + 100)
        st, rep, _ = self.d.post('/v1/customers/import', body, content_type='application/x-ndjson')
        self.assertEqual(st, 200, rep)
        self.assertEqual((rep['created'], rep['rejected']), (1, 0))

    # ---- 415 ----

    def test_415_wrong_content_type(self):
        body = json.dumps({'channel': 'voice', 'external_id': 'ct-probe', 'from': '+34600900003'})
        with self.writes_nothing():
            for ct in ('text/plain', 'application/x-www-form-urlencoded', 'application/jsonp',
                       'application/x-ndjson', 'json'):
                with self.subTest(content_type=ct):
                    self.assertError(self.post_ix(body, content_type=ct), 415,
                                     'unsupported_media_type', contains='application/json')
            # no Content-Type at all
            self.assertError(self.post_ix(body.encode()), 415, 'unsupported_media_type')
            self.assertError(self.d.post('/v1/cases/%s/notes' % self.case_id, '{"text":"x"}',
                                         content_type='text/plain'), 415, 'unsupported_media_type')
            self.assertError(self.d.post('/v1/customers/%s/merge' % self.customer_id,
                                         '{"from":"P-1"}', content_type='text/plain'),
                             415, 'unsupported_media_type')
            self.assertError(self.d.post('/v1/customers/import', '{"id":"H-1"}\n',
                                         content_type='application/json'),
                             415, 'unsupported_media_type', contains='application/x-ndjson')
        # parameters and case do not matter
        st, r, _ = self.post_ix(body, content_type='Application/JSON; charset=utf-8')
        self.assertEqual(st, 202, r)



class UnknownFieldOnCaseActionTest(ErrorsBase):
    """Separate daemon: these probes once crashed it (use after free in the reply)."""

    def test_unknown_field_is_named(self):
        notes = '/v1/cases/%s/notes' % self.case_id
        with self.writes_nothing():
            for path, body in ((notes, {'text': 'hi', 'mood': 'ok'}),
                               ('/v1/cases/%s/close' % self.case_id, {'why': 'done'}),
                               ('/v1/cases/%s/reopen' % self.case_id, {'reason': 'x', 'by': 'me'})):
                with self.subTest(path=path, body=body):
                    key = [k for k in body if k not in ('text', 'reason')][0]
                    self.assertError(self.d.post(path, body), 400, 'invalid_field', key,
                                     contains='unknown field')
        self.assertEqual(self.d.get('/healthz', auth=False)[0], 200)

    def test_error_messages_stay_valid_utf8(self):
        # The field name is echoed cut to 40 bytes: here the cut falls inside a two-byte
        # character. The answer must still be a JSON error, not invalid UTF-8 or a crash.
        key = 'a' * 39 + '\u00e9'
        with self.writes_nothing():
            resp = self.d.post('/v1/cases/%s/notes' % self.case_id, {'text': 'x', key: 1})
            self.assertError(resp, 400, 'invalid_field')
            resp = self.post_ix({'channel': 'voice', 'external_id': 'utf8', key: 1})
            self.assertError(resp, 400, 'invalid_field', contains='unknown field')
        self.assertEqual(self.d.get('/healthz', auth=False)[0], 200)


if __name__ == '__main__':
    unittest.main()
