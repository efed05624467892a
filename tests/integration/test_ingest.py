"""Core ingest against a real redis-server: idempotency, identity, cases, history."""
import unittest

import harness


class IngestTest(harness.TestCase):
    def test_ingest_then_read_back(self):
        r = self.ingest(
            channel='voice', **{'from': '+34 600 000 001'}, subject='Windscreen claim',
            customer={'name': 'Ana', 'policy': 'PL-2024-000001'})
        self.assertFalse(r['duplicate'])
        st, ix, _ = self.d.get('/v1/interactions/' + r['id'])
        self.assertEqual(st, 200)
        self.assertEqual(ix['channel'], 'voice')
        self.assertEqual(ix['state'], 'queued')
        self.assertEqual(ix['case_id'], r['case_id'])
        st, cust, _ = self.d.get('/v1/customers/' + r['customer_id'])
        self.assertEqual(st, 200)
        self.assertEqual(cust['name'], 'Ana')
        self.assertIn({'type': 'phone', 'value': '+34600000001'}, cust['identifiers'])
        self.assertIn({'type': 'policy', 'value': 'PL-2024-000001'}, cust['identifiers'])
        self.assertEqual([c['id'] for c in cust['cases']], [r['case_id']])

    def test_provider_retry_is_a_duplicate_and_writes_nothing(self):
        ext = self.ext('CA')
        first = self.ingest(channel='voice', external_id=ext, **{'from': '+34600000002'})
        keys_before = self.redis.cli('DBSIZE')
        for _ in range(3):
            st, again, _ = self.d.post('/v1/interactions', {'channel': 'voice', 'external_id': ext,
                                                            'from': '+34600000002'})
            self.assertEqual(st, 200)
            self.assertTrue(again['duplicate'])
            self.assertEqual((again['id'], again['case_id'], again['customer_id']),
                             (first['id'], first['case_id'], first['customer_id']))
        self.assertEqual(self.redis.cli('DBSIZE'), keys_before)
        # the same external id on another channel is another interaction
        other = self.ingest(channel='email', external_id=ext, **{'from': 'x@example.com'})
        self.assertNotEqual(other['id'], first['id'])

    def test_one_customer_across_channels_and_one_case_per_policy(self):
        call = self.ingest(channel='voice', **{'from': '600 000 003'},
                           customer={'policy': 'PL-2024-000003'})
        mail = self.ingest(channel='email', **{'from': 'Bea@Example.org'},
                           customer={'phone': '+34 600-000-003', 'policy': 'pl-2024-000003'})
        self.assertEqual(mail['customer_id'], call['customer_id'])
        self.assertEqual(mail['case_id'], call['case_id'])
        st, cust, _ = self.d.get('/v1/customers?email=BEA@example.org')
        self.assertEqual(st, 200)
        self.assertEqual(cust['id'], call['customer_id'])
        st, case, _ = self.d.get('/v1/cases/' + call['case_id'])
        received = [h for h in case['history'] if h['type'] == 'interaction.received']
        self.assertEqual([h['channel'] for h in received], ['voice', 'email'])

    def test_history_pages_oldest_first_with_cursor(self):
        first = self.ingest(customer={'policy': 'PL-2024-000004'})
        for i in range(6):
            self.ingest(case_id=first['case_id'], body='message %d' % i)
        seen, cursor = [], None
        while True:
            path = '/v1/cases/%s?limit=3' % first['case_id']
            if cursor:
                path += '&cursor=' + cursor
            st, page, _ = self.d.get(path)
            self.assertEqual(st, 200)
            self.assertLessEqual(len(page['history']), 3)
            seen += page['history']
            cursor = page.get('next_cursor')
            if not cursor:
                break
        ids = [h['id'] for h in seen]
        self.assertEqual(ids, sorted(ids, key=lambda x: tuple(map(int, x.split('-')))))
        self.assertEqual(len(set(ids)), len(ids))
        self.assertEqual(sum(1 for h in seen if h['type'] == 'interaction.received'), 7)


if __name__ == '__main__':
    unittest.main()
