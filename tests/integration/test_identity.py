"""Identity and cases against a real redis-server: one person behind many identifiers,
conflicts recorded (never merged silently), explicit merges, lookups through normalisation,
and how interactions attach to cases (explicit, same policy, new policy, closed, reopened)."""
import time
import unittest
import urllib.parse

import harness

# strongest first: the order in which an identifier decides a conflict
STRENGTH = ['policy', 'national', 'branch', 'email', 'phone']
FIELD = {'policy': 'policy', 'national': 'national_id', 'branch': 'branch_customer_id',
         'email': 'email', 'phone': 'phone'}


class IdentityTest(harness.TestCase):
    _n = 0

    def uniq(self):
        IdentityTest._n += 1
        return IdentityTest._n

    def values(self):
        """Fresh raw identifiers (as a caller would type them) and their normalised forms."""
        n = self.uniq()
        raw = {'policy': 'pl-2031-%06d' % n, 'national': '%08d-z' % (10000000 + n),
               'branch': 'br %06d' % n, 'email': 'Person.%d@Example.COM' % n,
               'phone': '0034 611 %03d %03d' % (n // 1000, n % 1000)}
        norm = {'policy': 'PL-2031-%06d' % n, 'national': '%08dZ' % (10000000 + n),
                'branch': 'BR%06d' % n, 'email': 'person.%d@example.com' % n,
                'phone': '+34611%03d%03d' % (n // 1000, n % 1000)}
        return raw, norm

    def customer(self, cid):
        st, c, _ = self.d.get('/v1/customers/' + cid)
        self.assertEqual(st, 200, c)
        return c

    def lookup(self, kind, value):
        st, c, _ = self.d.get('/v1/customers?%s=%s' % (FIELD[kind], urllib.parse.quote(value, safe='')))
        return st, c

    def case(self, case_id, limit=500):
        st, c, _ = self.d.get('/v1/cases/%s?limit=%d' % (case_id, limit))
        self.assertEqual(st, 200, c)
        return c

    def idents(self, cust):
        return {(i['type'], i['value']) for i in cust['identifiers']}

    # ---- linking ----

    def test_known_phone_links_a_new_email_to_the_same_customer(self):
        raw, norm = self.values()
        call = self.ingest(channel='voice', **{'from': raw['phone']})
        mail = self.ingest(channel='email', **{'from': raw['email']},
                           customer={'phone': norm['phone'], 'name': 'Eva'})
        self.assertEqual(mail['customer_id'], call['customer_id'])
        self.assertEqual(mail['conflicts'], [])
        cust = self.customer(call['customer_id'])
        self.assertEqual(self.idents(cust), {('phone', norm['phone']), ('email', norm['email'])})
        self.assertEqual(cust['conflicts'], [])
        # from now on the email alone finds her, on any channel
        chat = self.ingest(channel='webchat', customer={'email': raw['email'].upper()})
        self.assertEqual(chat['customer_id'], call['customer_id'])
        st, found = self.lookup('email', norm['email'])
        self.assertEqual((st, found['id']), (200, call['customer_id']))
        self.assertEqual(found['name'], 'Eva')

    def test_every_identifier_kind_links(self):
        raw, norm = self.values()
        first = self.ingest(channel='branch', customer={'branch_customer_id': raw['branch']})
        everything = {FIELD[k]: raw[k] for k in STRENGTH}
        second = self.ingest(channel='branch', customer=everything)
        self.assertEqual(second['customer_id'], first['customer_id'])
        cust = self.customer(first['customer_id'])
        self.assertEqual(self.idents(cust), {(k, norm[k]) for k in STRENGTH})
        for k in STRENGTH:
            with self.subTest(kind=k):
                st, found = self.lookup(k, raw[k])
                self.assertEqual((st, found['id']), (200, first['customer_id']))

    # ---- conflicts ----

    def assert_conflict_recorded(self, winner, loser, ix_id, matched, other_matched):
        for cid in (winner, loser):
            entries = [c for c in self.customer(cid)['conflicts']
                       if c.get('interaction') == ix_id and c.get('other_customer') == loser]
            self.assertEqual(len(entries), 1, (cid, self.customer(cid)['conflicts']))
            c = entries[0]
            self.assertEqual((c['customer'], c['other_customer']), (winner, loser))
            self.assertEqual((c['matched'], c['other_matched']), (matched, other_matched))

    def test_conflict_goes_to_the_strongest_identifier_and_is_recorded_on_both(self):
        for strong, weak in zip(STRENGTH, STRENGTH[1:]):
            with self.subTest(strong=strong, weak=weak):
                raw, norm = self.values()
                s = self.ingest(customer={FIELD[strong]: raw[strong]})
                w = self.ingest(customer={FIELD[weak]: raw[weak]})
                self.assertNotEqual(s['customer_id'], w['customer_id'])
                # the weaker identifier first in the document: order must not matter
                both = self.ingest(customer={FIELD[weak]: raw[weak], FIELD[strong]: raw[strong]})
                self.assertEqual(both['customer_id'], s['customer_id'])
                self.assertEqual(both['conflicts'], [w['customer_id']])
                self.assert_conflict_recorded(s['customer_id'], w['customer_id'], both['id'],
                                              '%s:%s' % (strong, norm[strong]),
                                              '%s:%s' % (weak, norm[weak]))
                # nothing merged: each identifier still finds its own customer
                self.assertEqual(self.lookup(weak, raw[weak])[1]['id'], w['customer_id'])
                self.assertEqual(self.lookup(strong, raw[strong])[1]['id'], s['customer_id'])
                self.assertNotIn((weak, norm[weak]), self.idents(self.customer(s['customer_id'])))
                self.assertNotIn((strong, norm[strong]),
                                 self.idents(self.customer(w['customer_id'])))
                st, ix, _ = self.d.get('/v1/interactions/' + both['id'])
                self.assertEqual(ix['customer_id'], s['customer_id'])

    def test_policy_beats_phone_across_three_customers(self):
        raw, norm = self.values()
        a = self.ingest(customer={'policy': raw['policy']})
        b = self.ingest(channel='email', **{'from': raw['email']})
        c = self.ingest(channel='voice', **{'from': raw['phone']})
        x = self.ingest(channel='voice', **{'from': raw['phone']},
                        customer={'email': raw['email'], 'policy': raw['policy']})
        self.assertEqual(x['customer_id'], a['customer_id'])
        self.assertEqual(sorted(x['conflicts']), sorted([b['customer_id'], c['customer_id']]))
        self.assert_conflict_recorded(a['customer_id'], b['customer_id'], x['id'],
                                      'policy:' + norm['policy'], 'email:' + norm['email'])
        self.assert_conflict_recorded(a['customer_id'], c['customer_id'], x['id'],
                                      'policy:' + norm['policy'], 'phone:' + norm['phone'])
        # the interaction joined the policy's case, which belongs to the winner
        self.assertEqual(x['case_id'], a['case_id'])
        # a retry of the same webhook is a duplicate and records no second conflict
        st, again, _ = self.d.post('/v1/interactions', {
            'channel': 'voice', 'external_id': self.last_ext, 'from': raw['phone'],
            'customer': {'email': raw['email'], 'policy': raw['policy']}})
        self.assertEqual((st, again['duplicate']), (200, True))
        self.assertEqual(len(self.customer(b['customer_id'])['conflicts']), 1)

    def ingest(self, **fields):
        fields.setdefault('external_id', self.ext())
        self.last_ext = fields['external_id']
        return super().ingest(**fields)

    # ---- merge ----

    def test_merge_repoints_identifiers_and_keeps_both_customers_cases(self):
        ra, na = self.values()
        rb, nb = self.values()
        a = self.ingest(**{'from': ra['phone']}, customer={'policy': ra['policy'], 'name': 'Ana'})
        b = self.ingest(channel='email', **{'from': rb['email']},
                        customer={'phone': rb['phone'], 'policy': rb['policy']})
        self.assertNotEqual(a['customer_id'], b['customer_id'])
        A, B = a['customer_id'], b['customer_id']
        st, m, _ = self.d.post('/v1/customers/%s/merge' % A, {'from': B})
        self.assertEqual(st, 200, m)
        self.assertEqual(m, {'id': A, 'merged': B, 'cases_moved': 1})
        # identifiers re-pointed: B's phone and email find A
        for kind, value in (('phone', rb['phone']), ('email', rb['email']),
                            ('policy', rb['policy'])):
            st, found = self.lookup(kind, value)
            self.assertEqual((st, found['id']), (200, A), kind)
        survivor = self.customer(A)
        self.assertTrue({('phone', nb['phone']), ('email', nb['email']),
                         ('phone', na['phone'])} <= self.idents(survivor))
        self.assertEqual({c['id'] for c in survivor['cases']}, {a['case_id'], b['case_id']})
        self.assertNotIn('merged_from', survivor)
        # the merged id still resolves, to the survivor, and says so
        old = self.customer(B)
        self.assertEqual((old['id'], old['merged_from']), (A, B))
        # B's case now belongs to A and its history says why
        moved = self.case(b['case_id'])
        self.assertEqual(moved['case']['customer_id'], A)
        merged_events = [h for h in moved['history'] if h['type'] == 'customer.merged']
        self.assertEqual([(h['from'], h['into']) for h in merged_events], [(B, A)])
        # new contacts from B's identifiers go to A, and into B's open case for its policy
        later = self.ingest(channel='email', **{'from': rb['email']},
                            customer={'policy': rb['policy']})
        self.assertEqual((later['customer_id'], later['case_id']), (A, b['case_id']))
        self.assertEqual(later['conflicts'], [])
        # merging again is idempotent: same answer, nothing moved, nothing written
        keys = self.redis.cli('DBSIZE')
        st, again, _ = self.d.post('/v1/customers/%s/merge' % A, {'from': B})
        self.assertEqual(st, 200, again)
        self.assertEqual(again, {'id': A, 'merged': B, 'cases_moved': 0})
        self.assertEqual(self.redis.cli('DBSIZE'), keys)
        self.assertEqual({c['id'] for c in self.customer(A)['cases']}, {a['case_id'], b['case_id']})
        # the other way round is a conflict now: B is gone
        st, err, _ = self.d.post('/v1/customers/%s/merge' % B, {'from': A})
        self.assertEqual(st, 409, err)
        self.assertEqual(err['error']['code'], 'conflict')

    def test_merge_into_itself_is_refused(self):
        raw, _ = self.values()
        a = self.ingest(**{'from': raw['phone']})
        A = a['customer_id']
        before = self.customer(A)
        st, err, _ = self.d.post('/v1/customers/%s/merge' % A, {'from': A})
        self.assertIn(st, (400, 409), err)
        self.assertIn(err['error']['code'], ('invalid', 'invalid_field', 'conflict'))
        after = self.customer(A)
        self.assertNotIn('merged_into', after)
        self.assertEqual(after['cases'], before['cases'])

    def test_merge_unknown_customers_is_404(self):
        raw, _ = self.values()
        A = self.ingest(**{'from': raw['phone']})['customer_id']
        keys = self.redis.cli('DBSIZE')
        for into, frm, field in (('P-999999', A, None), (A, 'P-999998', 'from')):
            with self.subTest(into=into, frm=frm):
                st, err, _ = self.d.post('/v1/customers/%s/merge' % into, {'from': frm})
                self.assertEqual(st, 404, err)
                self.assertEqual(err['error']['code'], 'not_found')
                if field:
                    self.assertTrue(err['error']['message'].startswith(field + ':'), err)
        self.assertEqual(self.redis.cli('DBSIZE'), keys)

    def test_merge_chain_resolves_to_the_last_survivor(self):
        rs = [self.values() for _ in range(3)]
        ids = [self.ingest(**{'from': r[0]['phone']})['customer_id'] for r in rs]
        self.assertEqual(self.d.post('/v1/customers/%s/merge' % ids[1], {'from': ids[0]})[0], 200)
        self.assertEqual(self.d.post('/v1/customers/%s/merge' % ids[2], {'from': ids[1]})[0], 200)
        for r in rs:
            st, found = self.lookup('phone', r[0]['phone'])
            self.assertEqual((st, found['id']), (200, ids[2]))
        self.assertEqual(self.customer(ids[0])['id'], ids[2])
        # a merged customer cannot absorb anyone any more
        st, err, _ = self.d.post('/v1/customers/%s/merge' % ids[0], {'from': ids[2]})
        self.assertEqual(st, 409, err)

    # ---- lookups through normalisation ----

    def test_lookup_by_phone_email_policy_in_any_written_form(self):
        n = self.uniq()
        r = self.ingest(**{'from': '+34 622 %03d %03d' % (n // 1000, n % 1000)},
                        customer={'policy': 'pl-2032-000 %03d' % n,
                                  'email': 'Bea.%d@Example.org' % n,
                                  'national_id': '12.345.%03d-x' % n})
        cid = r['customer_id']
        digits = '622%03d%03d' % (n // 1000, n % 1000)
        forms = [('phone', '0034' + digits), ('phone', '0034 ' + digits[:3] + ' ' + digits[3:]),
                 ('phone', '+34' + digits), ('phone', '34' + digits), ('phone', digits),
                 ('phone', '+34 (%s) %s-%s' % (digits[:3], digits[3:6], digits[6:])),
                 ('phone', 'tel:+34' + digits), ('phone', 'sip:+34%s@pbx.example' % digits),
                 ('email', 'bea.%d@example.org' % n), ('email', 'BEA.%d@EXAMPLE.ORG' % n),
                 ('email', 'mailto:Bea.%d@example.org' % n),
                 ('policy', 'PL-2032-000%03d' % n), ('policy', 'pl-2032-000%03d' % n),
                 ('policy', 'PL-2032-OOO%03d' % n),  # OCR: letter O for zero
                 ('national', '12345%03dX' % n), ('national', '12 345 %03d x' % n)]
        for kind, value in forms:
            with self.subTest(kind=kind, value=value):
                st, found = self.lookup(kind, value)
                self.assertEqual(st, 200, found)
                self.assertEqual(found['id'], cid)
        st, err = self.lookup('phone', '+34699%06d' % n)
        self.assertEqual((st, err['error']['code']), (404, 'not_found'))

    def test_lookup_with_a_literal_plus_in_the_query(self):
        # An operator types ?phone=+44... into curl or a browser without percent-encoding
        # the '+'. The lookup must find the same customer as ?phone=%2B44...: a phone number
        # never contains a space where the '+' of E.164 goes.
        n = self.uniq()
        number = '+44 20 7946 %04d' % n
        r = self.ingest(**{'from': number})
        compact = number.replace(' ', '')
        st, found, _ = self.d.get('/v1/customers?phone=' + urllib.parse.quote(compact, safe=''))
        self.assertEqual((st, found['id']), (200, r['customer_id']))
        st, found, _ = self.d.get('/v1/customers?phone=' + compact)
        self.assertEqual(st, 200, found)
        self.assertEqual(found['id'], r['customer_id'])

    # ---- cases ----

    def test_explicit_case_id_attaches_to_that_case_and_its_customer(self):
        raw, _ = self.values()
        first = self.ingest(**{'from': raw['phone']}, customer={'policy': raw['policy']})
        # a follow-up that carries only the case reference (an agent's outbound email, a
        # branch note): same case, and the case's customer, not a new anonymous one
        follow = self.ingest(channel='email', case_id=first['case_id'], direction='outbound',
                             to='someone@example.com', subject='Your claim')
        self.assertEqual(follow['case_id'], first['case_id'])
        self.assertEqual(follow['customer_id'], first['customer_id'])
        st, ix, _ = self.d.get('/v1/interactions/' + follow['id'])
        self.assertEqual((ix['case_id'], ix['customer_id']), (first['case_id'], first['customer_id']))
        # with the customer's own identifier too: still that case, that customer
        other = self.ingest(**{'from': raw['phone']}, case_id=first['case_id'])
        self.assertEqual((other['case_id'], other['customer_id']),
                         (first['case_id'], first['customer_id']))
        cust = self.customer(first['customer_id'])
        self.assertEqual([c['id'] for c in cust['cases']], [first['case_id']])
        received = [h['interaction'] for h in self.case(first['case_id'])['history']
                    if h['type'] == 'interaction.received']
        self.assertEqual(received, [first['id'], follow['id'], other['id']])

    def test_same_policy_joins_the_open_case_another_policy_opens_a_new_one(self):
        raw, norm = self.values()
        n = self.uniq()
        p2 = 'PL-2033-%06d' % n
        a = self.ingest(**{'from': raw['phone']}, customer={'policy': raw['policy']})
        b = self.ingest(channel='email', **{'from': raw['email']},
                        customer={'phone': raw['phone'], 'policy': raw['policy'].upper()})
        self.assertEqual((b['customer_id'], b['case_id']), (a['customer_id'], a['case_id']))
        time.sleep(0.01)  # activity is ordered by millisecond timestamps
        c = self.ingest(**{'from': raw['phone']}, customer={'policy': p2})
        self.assertEqual(c['customer_id'], a['customer_id'])
        self.assertNotEqual(c['case_id'], a['case_id'])
        cust = self.customer(a['customer_id'])
        by_id = {x['id']: x for x in cust['cases']}
        self.assertEqual(set(by_id), {a['case_id'], c['case_id']})
        self.assertEqual(by_id[a['case_id']]['policy'], norm['policy'])
        self.assertEqual(by_id[c['case_id']]['policy'], p2)
        self.assertEqual({x['status'] for x in cust['cases']}, {'open'})
        # most recently active case first
        self.assertEqual(cust['cases'][0]['id'], c['case_id'])
        time.sleep(0.01)
        d = self.ingest(channel='fax', **{'from': raw['phone']}, customer={'policy': raw['policy']})
        self.assertEqual(d['case_id'], a['case_id'])
        self.assertEqual(self.customer(a['customer_id'])['cases'][0]['id'], a['case_id'])
        opened = [h for h in self.case(a['case_id'])['history'] if h['type'] == 'case.opened']
        self.assertEqual(len(opened), 1)

    def test_close_then_new_interaction_opens_a_new_case(self):
        raw, _ = self.values()
        a = self.ingest(**{'from': raw['phone']}, customer={'policy': raw['policy']})
        st, closed, _ = self.d.post('/v1/cases/%s/close' % a['case_id'],
                                    {'reason': 'solved', 'author': 'alice'})
        self.assertEqual(st, 200, closed)
        self.assertEqual((closed['id'], closed['status']), (a['case_id'], 'closed'))
        b = self.ingest(**{'from': raw['phone']}, customer={'policy': raw['policy']})
        self.assertEqual(b['customer_id'], a['customer_id'])
        self.assertNotEqual(b['case_id'], a['case_id'])
        self.assertEqual(self.case(a['case_id'])['case']['status'], 'closed')
        self.assertEqual(self.case(b['case_id'])['case']['status'], 'open')
        statuses = {c['id']: c['status'] for c in self.customer(a['customer_id'])['cases']}
        self.assertEqual(statuses, {a['case_id']: 'closed', b['case_id']: 'open'})

    def test_close_reopen_notes_and_their_history(self):
        raw, _ = self.values()
        a = self.ingest(**{'from': raw['phone']}, customer={'policy': raw['policy']})
        cid = a['case_id']
        path = '/v1/cases/%s/' % cid
        st, note, _ = self.d.post(path + 'notes', {'text': 'Called back, waiting for photos',
                                                   'author': 'alice'})
        self.assertEqual(st, 200, note)
        self.assertEqual((note['id'], note['status']), (cid, 'open'))
        st, closed, _ = self.d.post(path + 'close', {'reason': 'paid', 'author': 'bob'})
        self.assertEqual((st, closed['status']), (200, 'closed'))
        self.assertIn('closed_at', self.case(cid)['case'])
        # closing a closed case changes nothing and adds no history
        n_hist = len(self.case(cid)['history'])
        st, again, _ = self.d.post(path + 'close', None)
        self.assertEqual((st, again['status']), (200, 'closed'))
        self.assertNotIn('history_id', again)
        self.assertEqual(len(self.case(cid)['history']), n_hist)
        # a note on a closed case is allowed and does not reopen it
        st, note2, _ = self.d.post(path + 'notes', {'text': 'Customer thanked us'})
        self.assertEqual((st, note2['status']), (200, 'closed'))
        st, reopened, _ = self.d.post(path + 'reopen', {'reason': 'not paid after all',
                                                        'author': 'carol'})
        self.assertEqual((st, reopened['status']), (200, 'open'))
        case = self.case(cid)
        self.assertEqual(case['case']['status'], 'open')
        self.assertNotIn('closed_at', case['case'])
        hist = case['history']
        by_id = {h['id']: h for h in hist}
        self.assertEqual(by_id[note['history_id']]['type'], 'note')
        self.assertEqual(by_id[note['history_id']]['text'], 'Called back, waiting for photos')
        self.assertEqual(by_id[note['history_id']]['by'], 'alice')
        self.assertEqual((by_id[closed['history_id']]['type'], by_id[closed['history_id']]['by'],
                          by_id[closed['history_id']]['reason']), ('case.closed', 'bob', 'paid'))
        self.assertEqual(by_id[note2['history_id']]['by'], 'admin')
        self.assertEqual((by_id[reopened['history_id']]['type'],
                          by_id[reopened['history_id']]['by']), ('case.reopened', 'carol'))
        self.assertEqual([h['type'] for h in hist],
                         ['case.opened', 'interaction.received', 'note', 'case.closed', 'note',
                          'case.reopened'])
        # reopened, it is the policy's open case again: the next contact joins it
        b = self.ingest(channel='email', **{'from': raw['email']},
                        customer={'phone': raw['phone'], 'policy': raw['policy']})
        self.assertEqual(b['case_id'], cid)

    def test_interaction_naming_a_closed_case_reopens_it(self):
        raw, _ = self.values()
        a = self.ingest(**{'from': raw['phone']}, customer={'policy': raw['policy']})
        cid = a['case_id']
        self.assertEqual(self.d.post('/v1/cases/%s/close' % cid, None)[0], 200)
        b = self.ingest(channel='email', **{'from': raw['email']}, case_id=cid,
                        customer={'phone': raw['phone']})
        self.assertEqual((b['case_id'], b['customer_id']), (cid, a['customer_id']))
        case = self.case(cid)
        self.assertEqual(case['case']['status'], 'open')
        self.assertNotIn('closed_at', case['case'])
        types = [h['type'] for h in case['history']]
        self.assertEqual(types[-3:], ['case.closed', 'case.reopened', 'interaction.received'])
        self.assertEqual(case['history'][-2]['by'], 'interaction')
        # and the policy's next contact joins it rather than opening another case
        c = self.ingest(**{'from': raw['phone']}, customer={'policy': raw['policy']})
        self.assertEqual(c['case_id'], cid)


if __name__ == '__main__':
    unittest.main()
