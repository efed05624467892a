"""Policyholder import (NDJSON) against a real redis-server: the report (counts, rejects with
line numbers and reasons), segments from the [segments] thresholds, segment history on
re-import, linking to customers already known from interactions, a 100,000-line import,
and `omniccd -c CONF import PATH` from the command line."""
import json
import os
import random
import subprocess
import time
import unittest
import urllib.parse

import harness

NDJSON = 'application/x-ndjson'


def expected_segment(premium, tenure, claims, high=2000, medium=600, loyal_years=5,
                     loyal_max_claims=2):
    """The rule documented in config/omniccd.conf: value (premium) x loyalty."""
    is_high = premium >= high
    is_medium = not is_high and premium >= medium
    loyal = int(tenure) >= loyal_years and int(claims) <= loyal_max_claims
    if is_high and loyal:
        return 'platinum'
    if is_high or (is_medium and loyal):
        return 'gold'
    if is_medium or loyal:
        return 'silver'
    return 'standard'


def ndjson(records):
    return ''.join((r if isinstance(r, str) else json.dumps(r)) + '\n' for r in records)


class ImportMixin:
    _n = 0

    def uniq(self):
        ImportMixin._n += 1
        return ImportMixin._n

    def phone(self, n):
        return '+34 655 %03d %03d' % (n // 1000 % 1000, n % 1000)

    def import_(self, body, expect=200):
        st, rep, _ = self.d.post('/v1/customers/import', body, content_type=NDJSON, timeout=300)
        self.assertEqual(st, expect, rep)
        return rep

    def by_phone(self, phone):
        st, c, _ = self.d.get('/v1/customers?phone=' + urllib.parse.quote(phone, safe=''))
        self.assertEqual(st, 200, (phone, c))
        return c

    def run_cli(self, path, config=None, timeout=120):
        return subprocess.run([harness.OMNICCD, '-c', config or self.d.config_path, 'import',
                               path], capture_output=True, text=True, timeout=timeout)


class ImportTest(ImportMixin, harness.TestCase):
    def test_report_counts_and_rejects_with_line_numbers(self):
        n = self.uniq()
        lines = [
            {'id': 'R%d-1' % n, 'name': 'Ana', 'phones': [self.phone(n * 10 + 1)]},   # 1 ok
            'this is not json',                                                    # 2
            '',                                                                    # 3 blank
            {'id': 'R%d-4' % n, 'phones': ['call me']},                            # 4
            ['an', 'array'],                                                       # 5
            {'name': 'No Id'},                                                     # 6
            {'id': 'R%d-7' % n, 'favourite_colour': 'blue'},                       # 7
            {'id': 'R%d-8' % n, 'emails': ['bea@example.org'], 'annual_premium': -5},  # 8
            {'id': 'R%d-9' % n, 'tenure_years': 200},                              # 9
            {'id': 'R%d-10' % n, 'policies': ['??']},                              # 10
            {'id': 'bad id with spaces'},                                          # 11
            {'id': 'R%d-12' % n, 'phones': '600000000'},                           # 12
            '{"id": "R%d-13", "id": "twice"}' % n,                                 # 13
            {'id': 'R%d-14' % n, 'emails': ['r%d@example.org' % n], 'annual_premium': 900},  # ok
        ]
        body = ndjson(lines).replace('\n', '\r\n', 1)   # a CRLF line is fine too
        body += json.dumps({'id': 'R%d-15' % n, 'tenure_years': 7})  # no final newline
        rep = self.import_(body)
        self.assertEqual(rep['lines'], 15)
        self.assertEqual((rep['imported'], rep['created'], rep['updated']), (3, 3, 0))
        self.assertEqual(rep['conflicts'], 0)
        self.assertEqual(rep['rejected'], 11)
        rejects = {r['line']: r['reason'] for r in rep['rejects']}
        self.assertEqual(sorted(rejects), [2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])
        for line, words in {2: 'JSON', 4: 'phones[0]', 5: 'object', 6: 'id', 7: 'favourite_colour',
                            8: 'annual_premium', 9: 'tenure_years', 10: 'policies[0]', 11: 'id',
                            12: 'phones', 13: 'JSON'}.items():
            with self.subTest(line=line):
                self.assertIn(words, rejects[line])
        # the good lines are there, the bad ones are not
        self.assertEqual(self.by_phone(self.phone(n * 10 + 1))['external_id'], 'R%d-1' % n)
        st, c, _ = self.d.get('/v1/customers?email=r%d@example.org' % n)
        self.assertEqual((st, c['segment']), (200, 'silver'))
        st, _, _ = self.d.get('/v1/customers?email=bea@example.org')
        self.assertEqual(st, 404)
        # an import of nothing is a report of nothing
        rep = self.import_('')
        self.assertEqual((rep['lines'], rep['imported'], rep['rejected'], rep['rejects']),
                         (0, 0, 0, []))

    def test_long_lines_and_many_rejects(self):
        n = self.uniq()
        long_line = json.dumps({'id': 'L-%d' % n, 'name': 'x' * 70000})
        good = {'id': 'L-%d-ok' % n, 'emails': ['long%d@example.org' % n]}
        body = ndjson([long_line, good] + ['{"id": %d}' % i for i in range(1200)])
        rep = self.import_(body)
        self.assertEqual((rep['lines'], rep['created'], rep['rejected']), (1202, 1, 1201))
        self.assertEqual(rep['rejects'][0], {'line': 1, 'reason': 'line longer than 65536 bytes'})
        # the report lists the first 1000 rejects, and counts them all
        self.assertEqual(len(rep['rejects']), 1000)
        self.assertEqual([r['line'] for r in rep['rejects']], [1] + list(range(3, 1002)))
        st, c, _ = self.d.get('/v1/customers?email=long%d@example.org' % n)
        self.assertEqual((st, c['external_id']), (200, 'L-%d-ok' % n))

    def test_segments_follow_the_default_thresholds(self):
        table = [(2400, 9, 0), (2000, 5, 2), (2000, 5, 3), (2000, 4, 0), (1999.99, 5, 2),
                 (600, 5, 2), (600, 4, 0), (599.5, 5, 2), (599, 4, 0), (0, 30, 0), (0, 30, 3),
                 (100, 4.9, 0), (None, None, None)]
        recs, phones = [], []
        for prem, ten, claims in table:
            n = self.uniq()
            r = {'id': 'S-%d' % n, 'phones': [self.phone(n)]}
            for k, v in (('annual_premium', prem), ('tenure_years', ten), ('claims_last_3y', claims)):
                if v is not None:
                    r[k] = v
            recs.append(r)
            phones.append(self.phone(n))
        rep = self.import_(ndjson(recs))
        self.assertEqual((rep['created'], rep['rejected']), (len(table), 0), rep)
        seen = set()
        for (prem, ten, claims), phone in zip(table, phones):
            want = expected_segment(prem or 0, ten or 0, claims or 0)
            seen.add(want)
            with self.subTest(premium=prem, tenure=ten, claims=claims):
                c = self.by_phone(phone)
                self.assertEqual(c['segment'], want)
                self.assertEqual(c['segment_history'][-1]['to'], want)
        self.assertEqual(seen, {'platinum', 'gold', 'silver', 'standard'})

    def test_reimport_recomputes_the_segment_and_keeps_its_history(self):
        n = self.uniq()
        rec = {'id': 'H-%d' % n, 'name': 'Ana', 'phones': [self.phone(n)],
               'annual_premium': 300, 'tenure_years': 1, 'claims_last_3y': 0}
        rep = self.import_(ndjson([rec]))
        self.assertEqual((rep['created'], rep['updated']), (1, 0))
        c = self.by_phone(self.phone(n))
        cid = c['id']
        self.assertEqual(c['segment'], 'standard')
        self.assertEqual([(h['from'], h['to']) for h in c['segment_history']], [(None, 'standard')])
        # the same record again: updated, segment unchanged, no new history entry
        rep = self.import_(ndjson([rec]))
        self.assertEqual((rep['created'], rep['updated']), (0, 1))
        self.assertEqual(len(self.by_phone(self.phone(n))['segment_history']), 1)
        # premium up, loyal: platinum; then claims pile up: gold
        rep = self.import_(ndjson([dict(rec, annual_premium=3000, tenure_years=6)]))
        self.assertEqual((rep['created'], rep['updated']), (0, 1))
        rep = self.import_(ndjson([dict(rec, annual_premium=3000, tenure_years=6,
                                        claims_last_3y=4, name='Ana María')]))
        c = self.by_phone(self.phone(n))
        self.assertEqual(c['id'], cid)
        self.assertEqual(c['segment'], 'gold')
        self.assertEqual(c['name'], 'Ana María')
        self.assertEqual((c['annual_premium'], c['tenure_years'], c['claims_last_3y']), (3000, 6, 4))
        hist = c['segment_history']
        self.assertEqual([(h['from'], h['to']) for h in hist],
                         [(None, 'standard'), ('standard', 'platinum'), ('platinum', 'gold')])
        self.assertEqual([h['at'] for h in hist], sorted(h['at'] for h in hist))
        # the insurer's id finds the customer even when every identifier changed
        n2 = self.uniq()
        rep = self.import_(ndjson([{'id': 'H-%d' % n, 'phones': [self.phone(n2)]}]))
        self.assertEqual((rep['created'], rep['updated']), (0, 1))
        self.assertEqual(self.by_phone(self.phone(n2))['id'], cid)

    def test_import_enriches_a_customer_known_from_interactions(self):
        n = self.uniq()
        st, r, _ = self.d.post('/v1/interactions', {'channel': 'voice', 'external_id': 'imp-%d' % n,
                                                    'from': self.phone(n)})
        self.assertEqual(st, 202, r)
        self.assertEqual(self.by_phone(self.phone(n))['segment'], 'standard')
        rep = self.import_(ndjson([{'id': 'K-%d' % n, 'name': 'Luis', 'phones': [self.phone(n)],
                                    'policies': ['KP-2024-%06d' % n], 'annual_premium': 2500,
                                    'tenure_years': 12, 'claims_last_3y': 1}]))
        self.assertEqual((rep['created'], rep['updated'], rep['conflicts']), (0, 1, 0), rep)
        c = self.by_phone(self.phone(n))
        self.assertEqual(c['id'], r['customer_id'])
        self.assertEqual((c['segment'], c['name'], c['external_id']), ('platinum', 'Luis', 'K-%d' % n))
        self.assertIn({'type': 'policy', 'value': 'KP-2024-%06d' % n}, c['identifiers'])
        self.assertEqual([(h['from'], h['to']) for h in c['segment_history']],
                         [('standard', 'platinum')])
        # the next contact is routed with the new segment
        st, r2, _ = self.d.post('/v1/interactions', {'channel': 'voice',
                                                     'external_id': 'imp-%d-b' % n,
                                                     'from': self.phone(n)})
        self.assertEqual((st, r2['customer_id']), (202, r['customer_id']))
        st, ix, _ = self.d.get('/v1/interactions/' + r2['id'])
        self.assertEqual(ix['segment'], 'platinum')

    def test_identifiers_of_another_customer_are_a_conflict_not_a_move(self):
        n = self.uniq()
        email = 'owner%d@example.org' % n
        st, a, _ = self.d.post('/v1/interactions', {'channel': 'email', 'external_id': 'c-%d' % n,
                                                    'from': email})
        self.assertEqual(st, 202)
        st, b, _ = self.d.post('/v1/interactions', {'channel': 'voice', 'external_id': 'c-%d' % n,
                                                    'from': self.phone(n)})
        self.assertEqual(st, 202)
        rep = self.import_(ndjson([{'id': 'X-%d' % n, 'phones': [self.phone(n)],
                                    'emails': [email]}]))
        self.assertEqual((rep['created'], rep['updated'], rep['conflicts']), (0, 1, 1), rep)
        st, owner, _ = self.d.get('/v1/customers?email=' + email)
        self.assertEqual(owner['id'], a['customer_id'])
        self.assertEqual(self.by_phone(self.phone(n))['id'], b['customer_id'])
        for cid in (a['customer_id'], b['customer_id']):
            st, c, _ = self.d.get('/v1/customers/' + cid)
            self.assertEqual([x.get('import_id') for x in c['conflicts']], ['X-%d' % n], cid)

    def test_two_policyholders_sharing_a_phone_stay_two_customers(self):
        # A couple with one landline: two policyholders, two insurer ids, one phone number.
        # The second must not be folded into the first (nothing is merged silently): it is
        # its own customer and the shared phone is a recorded conflict.
        n = self.uniq()
        home = self.phone(n)
        juan = {'id': 'J-%d' % n, 'name': 'Juan', 'phones': [home],
                'emails': ['juan%d@example.org' % n], 'annual_premium': 3000, 'tenure_years': 10}
        maria = {'id': 'M-%d' % n, 'name': 'Maria', 'phones': [home],
                 'emails': ['maria%d@example.org' % n], 'annual_premium': 100}
        rep = self.import_(ndjson([juan, maria]))
        self.assertEqual((rep['created'], rep['updated'], rep['conflicts']), (2, 0, 1), rep)
        st, j, _ = self.d.get('/v1/customers?email=juan%d@example.org' % n)
        st2, m, _ = self.d.get('/v1/customers?email=maria%d@example.org' % n)
        self.assertEqual((st, st2), (200, 200))
        self.assertNotEqual(j['id'], m['id'])
        self.assertEqual((j['external_id'], j['name'], j['segment']), (juan['id'], 'Juan', 'platinum'))
        self.assertEqual((m['external_id'], m['name'], m['segment']), (maria['id'], 'Maria',
                                                                         'standard'))
        self.assertEqual(self.by_phone(home)['id'], j['id'])
        for c in (j, m):
            self.assertIn((j['id'], m['id']), [(x['other_customer'], x['customer'])
                                               for x in c['conflicts']], c)
        # importing the same file again changes no one's segment back and forth
        rep = self.import_(ndjson([juan, maria]))
        self.assertEqual((rep['created'], rep['updated']), (0, 2), rep)
        st, j2, _ = self.d.get('/v1/customers/' + j['id'])
        self.assertEqual((j2['name'], j2['segment'], len(j2['segment_history'])),
                         ('Juan', 'platinum', 1))

    def test_100000_lines(self):
        n0 = self.uniq() * 1000000
        rnd = random.Random(42)
        lines, expect, bad = [], {}, set()
        for i in range(100000):
            if i % 9973 == 5000:
                lines.append('{"id": "broken-%d", ' % i)
                bad.add(i + 1)
                continue
            prem = rnd.choice([0, 150, 599, 600, 1200, 1999, 2000, 4800])
            ten, claims = rnd.randint(0, 15), rnd.randint(0, 4)
            lines.append(json.dumps({
                'id': 'B-%d' % (n0 + i), 'name': 'Holder %d' % i,
                'phones': ['+34 7%08d' % (n0 // 1000000 * 100000 + i)],
                'emails': ['h%d@bulk.example' % (n0 + i)], 'policies': ['BK-2024-%07d' % (n0 + i)],
                'annual_premium': prem, 'tenure_years': ten, 'claims_last_3y': claims}))
            expect[i] = expected_segment(prem, ten, claims)
        body = ('\n'.join(lines) + '\n').encode()
        t0 = time.monotonic()
        rep = self.import_(body)
        took = time.monotonic() - t0
        print('\nimport of 100000 lines (%.1f MB): %.2f s' % (len(body) / 1e6, took), flush=True)
        self.assertEqual(rep['lines'], 100000)
        self.assertEqual(rep['rejected'], len(bad))
        self.assertEqual({r['line'] for r in rep['rejects']}, bad)
        self.assertEqual((rep['imported'], rep['created'], rep['updated'], rep['conflicts']),
                         (100000 - len(bad), 100000 - len(bad), 0, 0))
        for i in rnd.sample(sorted(expect), 40) + [0, 99999]:
            with self.subTest(line=i + 1):
                st, c, _ = self.d.get('/v1/customers?email=h%d@bulk.example' % (n0 + i))
                self.assertEqual(st, 200, c)
                self.assertEqual((c['external_id'], c['name'], c['segment']),
                                 ('B-%d' % (n0 + i), 'Holder %d' % i, expect[i]))
                st, p, _ = self.d.get('/v1/customers?policy=BK-2024-%07d' % (n0 + i))
                self.assertEqual(p['id'], c['id'])
        # the whole import is repeatable: the second run only updates
        t0 = time.monotonic()
        rep = self.import_(body)
        print('re-import of 100000 lines: %.2f s' % (time.monotonic() - t0), flush=True)
        self.assertEqual((rep['created'], rep['updated'], rep['rejected']),
                         (0, 100000 - len(bad), len(bad)))

    def test_command_line_import_into_the_running_daemons_redis(self):
        n = self.uniq()
        path = os.path.join(self.tmp, 'holders-%d.ndjson' % n)
        with open(path, 'w') as f:
            f.write(ndjson([
                {'id': 'CLI-%d-1' % n, 'name': 'Carla', 'phones': [self.phone(n)],
                 'annual_premium': 2100, 'tenure_years': 8, 'claims_last_3y': 0},
                {'id': 'CLI-%d-2' % n, 'emails': ['cli%d@example.org' % n], 'annual_premium': 700},
                'garbage',
                {'id': 'CLI-%d-4' % n, 'phones': ['x']},
            ]))
        out = self.run_cli(path)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        rep = json.loads(out.stdout)
        self.assertEqual((rep['lines'], rep['imported'], rep['created'], rep['rejected']),
                         (4, 2, 2, 2))
        self.assertEqual([r['line'] for r in rep['rejects']], [3, 4])
        self.assertIn('phones[0]', rep['rejects'][1]['reason'])
        # the running daemon sees what the command line wrote
        c = self.by_phone(self.phone(n))
        self.assertEqual((c['external_id'], c['name'], c['segment']), ('CLI-%d-1' % n, 'Carla',
                                                                      'platinum'))
        st, c2, _ = self.d.get('/v1/customers?email=cli%d@example.org' % n)
        self.assertEqual((st, c2['segment']), (200, 'silver'))
        # again: updates only
        out = self.run_cli(path)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(json.loads(out.stdout)['updated'], 2)
        # a file that does not exist
        out = self.run_cli(path + '.missing')
        self.assertNotEqual(out.returncode, 0)
        self.assertIn('cannot open', out.stderr)


class CustomThresholdsTest(ImportMixin, harness.TestCase):
    """[segments] thresholds come from the configuration, for the API and the command line."""
    extra_config = ('[segments]\npremium_high = 5000\npremium_medium = 1000\n'
                    'tenure_loyal = 10\nclaims_loyal_max = 0\n')

    def test_segments_use_the_configured_thresholds(self):
        rule = dict(high=5000, medium=1000, loyal_years=10, loyal_max_claims=0)
        table = [(2400, 9, 0), (5000, 10, 0), (5000, 10, 1), (4999, 10, 0), (1000, 9, 0),
                 (999, 10, 0), (999, 9, 0), (2000, 5, 2), (600, 5, 2)]
        recs = []
        for k, (prem, ten, claims) in enumerate(table):
            recs.append({'id': 'T-%d' % k, 'phones': [self.phone(k)], 'annual_premium': prem,
                         'tenure_years': ten, 'claims_last_3y': claims})
        half = len(recs) // 2
        rep = self.import_(ndjson(recs[:half]))
        self.assertEqual((rep['created'], rep['rejected']), (half, 0))
        path = os.path.join(self.tmp, 'thresholds.ndjson')
        with open(path, 'w') as f:
            f.write(ndjson(recs[half:]))
        out = self.run_cli(path)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(json.loads(out.stdout)['created'], len(recs) - half)
        for k, (prem, ten, claims) in enumerate(table):
            with self.subTest(premium=prem, tenure=ten, claims=claims):
                self.assertEqual(self.by_phone(self.phone(k))['segment'],
                                 expected_segment(prem, ten, claims, **rule))
        # and they differ from the defaults for the first record (2400, 9, 0)
        self.assertNotEqual(expected_segment(2400, 9, 0, **rule), expected_segment(2400, 9, 0))


if __name__ == '__main__':
    unittest.main()
