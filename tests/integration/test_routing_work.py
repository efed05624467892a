"""Routing after the decision (docs/ROUTING.md, Reservations) against a real redis-server and
omniccd: reject and offer timeout move to the next agent (and block the one who let it go),
max_no_answer, the wrap-up timer, transfer to a queue and to an agent, abandon while queued
and while offered, the agent token's scope, and the SSE streams (the offer with its screen
pop, Last-Event-ID replay, the supervisor stream)."""
import json
import os
import time
import unittest

import harness
from test_routing import NDJSON, SSE, Floor

WORK_CONFIG = '''
[routing]
boost_voice = 0
boost_webchat = 0
boost_email = 0
boost_branch = 0
boost_fax = 0
reject_block = 2
offer_timeout_voice = 3
offer_timeout_webchat = 3
max_no_answer = 2
[queue default]
channels = voice email fax branch webchat
skills = nobody:5
[queue rej]
channels = voice
skills = s_rej
[queue tmo]
channels = voice
skills = s_tmo
[queue nan]
channels = webchat
skills = s_nan
[queue wrap]
channels = voice
skills = s_wrap
[queue xfer]
channels = voice
skills = s_xfer
[queue xfer_to]
channels = voice
skills = s_xfer_to
[queue abn]
channels = voice
skills = s_abn
[queue tok]
channels = voice
skills = s_tok
[queue pop]
channels = voice
skills = s_pop
[queue sup]
channels = voice
skills = s_sup
'''


class ReservationTest(Floor, harness.TestCase):
    extra_config = WORK_CONFIG

    def test_reject_goes_to_next_agent_and_blocks_the_rejecter(self):
        self.make_agent('rej-a', {'s_rej': 1}, {'voice': 1})
        self.make_agent('rej-b', {'s_rej': 1}, {'voice': 1})
        iid = self.ingest(queue='rej')['id']
        x = self.wait_state(iid, 'offered', 'rej-a')
        r1 = x['reservation']
        self.assertEqual(self.reject(r1), {'reservation': r1, 'interaction': iid, 'state': 'queued'})
        x = self.wait_state(iid, 'offered', 'rej-b')
        self.assertAlmostEqual(x['wait_score'], x['created_at'] / 1000, places=2,
                               msg='back in its place: same score')
        time.sleep(1.2)  # so the two blocks end well apart
        self.reject(x['reservation'])
        self.accept(r1, expect=404)
        excl = {k: int(v) for k, v in self.rhash('ix:%s:excl' % iid).items()}
        self.assertEqual(set(excl), {'rej-a', 'rej-b'})
        # both are available with capacity, yet neither is offered it again within the block
        for aid in ('rej-a', 'rej-b'):
            a = self.agent(aid)
            self.assertEqual((a['presence'], a['load_total']), ('available', 0))
        while self.server_ms() < min(excl.values()) - 150:
            self.assertEqual(self.ix(iid)['state'], 'queued')
            time.sleep(0.1)
        # when the first block ends, it is offered again to rej-a, while rej-b's block lasts
        x = self.wait_state(iid, 'offered', 'rej-a', timeout=10)
        created = int(self.rhash('resv:' + x['reservation'])['created_at'])
        self.assertGreaterEqual(created, excl['rej-a'])
        self.assertLess(created, excl['rej-b'], 'offered when the first block ended')
        # rej-a lets it go again: rej-b gets it when its own block ends
        self.reject(x['reservation'])
        self.assertEqual(self.ix(iid)['state'], 'queued')
        again = int(self.rhash('ix:%s:excl' % iid)['rej-a'])
        x = self.wait_state(iid, 'offered', 'rej-b', timeout=10)
        created = int(self.rhash('resv:' + x['reservation'])['created_at'])
        self.assertGreaterEqual(created, excl['rej-b'])
        self.assertLess(created, again, 'offered when the block of rej-b ended')
        hist = self.d.get('/v1/cases/' + x['case_id'])[1]['history']
        self.assertEqual([h['agent'] for h in hist if h['type'] == 'offer.rejected'],
                         ['rej-a', 'rej-b', 'rej-a'])
        self.work(iid, 'cancel')
        for aid in ('rej-a', 'rej-b'):
            self.set_state(aid, 'offline')

    def test_offer_timeout_goes_to_next_agent(self):
        self.make_agent('tmo-a', {'s_tmo': 1}, {'voice': 1})
        self.make_agent('tmo-b', {'s_tmo': 1}, {'voice': 1})
        iid = self.ingest(queue='tmo')['id']
        x = self.wait_state(iid, 'offered', 'tmo-a')
        first = self.rhash('resv:' + x['reservation'])
        self.assertEqual(int(first['expires_at']) - int(first['created_at']), 3000)
        x = self.wait_state(iid, 'offered', 'tmo-b', timeout=10)
        second = self.rhash('resv:' + x['reservation'])
        self.assertGreaterEqual(int(second['created_at']), int(first['expires_at']))
        self.accept(first['id'], expect=404)
        a = self.agent('tmo-a')
        self.assertEqual((a['presence'], a['load_total'], a['no_answer']), ('available', 0, 1))
        hist = self.d.get('/v1/cases/' + x['case_id'])[1]['history']
        self.assertIn(('offer.timeout', 'tmo-a'), [(h['type'], h.get('agent')) for h in hist])
        self.accept(x['reservation'])
        # accepting resets the answering agent's count; tmo-a keeps its single miss
        self.assertEqual(self.agent('tmo-b')['no_answer'], 0)
        self.work(iid, 'complete')
        for aid in ('tmo-a', 'tmo-b'):
            self.set_state(aid, 'offline')

    def test_max_no_answer_sets_agent_away(self):
        # max_no_answer = 2: one miss leaves the agent available, the second in a row does not
        self.make_agent('nan-a', {'s_nan': 1}, {'webchat': 1})
        i1 = self.ingest(channel='webchat', queue='nan')['id']
        self.wait_state(i1, 'offered', 'nan-a')
        self.wait_state(i1, 'queued', timeout=10)
        a = self.agent('nan-a')
        self.assertEqual((a['presence'], a['no_answer'], a['load_total']), ('available', 1, 0))
        i2 = self.ingest(channel='webchat', queue='nan')['id']
        self.wait_state(i2, 'offered', 'nan-a')
        harness.wait_for(lambda: self.agent('nan-a')['presence'] == 'away', 10, 'nan-a away')
        a = self.agent('nan-a')
        self.assertEqual((a['reason'], a['no_answer'], a['load_total'], a['activity']),
                         ('no-answer', 2, 0, 'away'))
        time.sleep(2.2)  # past the reject block: still nobody to offer to
        for i in (i1, i2):
            self.assertEqual(self.ix(i)['state'], 'queued')
        # back to available: the count starts again and the work is offered
        self.set_state('nan-a', 'available')
        self.assertEqual(self.agent('nan-a')['no_answer'], 0)
        x = self.wait_state(i1, 'offered', 'nan-a')
        self.accept(x['reservation'])
        self.work(i1, 'complete')
        self.take(i2, 'nan-a')
        self.set_state('nan-a', 'offline')

    def test_wrapup_returns_capacity_after_its_time(self):
        self.make_agent('wrap-a', {'s_wrap': 1}, {'voice': 1}, wrapup={'voice': 2})
        i1 = self.ingest(queue='wrap')['id']
        i2 = self.ingest(queue='wrap')['id']
        self.accept(self.wait_state(i1, 'offered', 'wrap-a')['reservation'])
        out = self.work(i1, 'wrapup', {'disposition': 'claim-opened', 'note': 'photos requested'})
        self.assertEqual(out, {'id': i1, 'state': 'wrapup'})
        x1 = self.ix(i1)
        wrap_at = int(x1['wrapup_at'])
        self.assertEqual((x1['state'], x1['disposition']), ('wrapup', 'claim-opened'))
        # capacity is held during wrap-up
        while self.server_ms() < wrap_at + 1800:
            self.assertEqual(self.ix(i2)['state'], 'queued')
            self.assertEqual(self.agent('wrap-a')['load_total'], 1)
            time.sleep(0.1)
        x2 = self.wait_state(i2, 'offered', 'wrap-a', timeout=10)
        created = int(self.rhash('resv:' + x2['reservation'])['created_at'])
        self.assertGreaterEqual(created - wrap_at, 2000)
        x1 = self.ix(i1)
        self.assertEqual(x1['state'], 'completed')
        self.assertGreaterEqual(int(x1['ended_at']) - wrap_at, 2000)
        # complete during wrap-up ends it at once
        self.accept(x2['reservation'])
        self.work(i2, 'wrapup', {})
        self.work(i2, 'complete')
        self.assertEqual(self.ix(i2)['state'], 'completed')
        self.assertEqual(self.agent('wrap-a')['load_total'], 0)
        self.set_state('wrap-a', 'offline')

    def test_transfer_to_a_queue(self):
        self.make_agent('xq-a', {'s_xfer': 1}, {'voice': 1})
        self.make_agent('xq-b', {'s_xfer_to': 1}, {'voice': 1})
        iid = self.ingest(queue='xfer')['id']
        x = self.wait_state(iid, 'offered', 'xq-a')
        score = x['wait_score']
        self.accept(x['reservation'])
        self.work(iid, 'transfer', {'queue': 'nosuch'}, expect=404)
        out = self.work(iid, 'transfer', {'queue': 'xfer_to', 'note': 'needs the claims desk'})
        x = self.ix(iid)
        self.assertEqual((x['state'], x['agent'], x['queue']), ('offered', 'xq-b', 'xfer_to'))
        self.assertEqual(out, {'id': iid, 'reservation': x['reservation']})
        self.assertEqual(x['wait_score'], score, 'back in line with its original score')
        self.assertEqual(self.agent('xq-a')['load_total'], 0)
        hist = self.d.get('/v1/cases/' + x['case_id'])[1]['history']
        t = [h for h in hist if h['type'] == 'interaction.transferred']
        self.assertEqual((len(t), t[0]['agent'], t[0]['to_queue']), (1, 'xq-a', 'xfer_to'))
        self.accept(x['reservation'])
        self.work(iid, 'complete')
        for aid in ('xq-a', 'xq-b'):
            self.set_state(aid, 'offline')

    def test_transfer_to_an_agent(self):
        self.make_agent('xa-a', {'s_xfer': 1}, {'voice': 1})
        # the target need not be eligible for the queue: a direct offer
        self.make_agent('xa-c', {'other': 1}, {'voice': 1})
        self.make_agent('xa-off', {'other': 1}, {'voice': 1}, available=False)
        iid = self.ingest(queue='xfer')['id']
        self.accept(self.wait_state(iid, 'offered', 'xa-a')['reservation'])
        self.work(iid, 'transfer', {'agent': 'xa-off'}, expect=409)
        self.work(iid, 'transfer', {'agent': 'nosuch'}, expect=404)
        self.work(iid, 'transfer', {'agent': 'xa-c'})
        x = self.ix(iid)
        self.assertEqual((x['state'], x['agent']), ('offered', 'xa-c'))
        self.assertEqual(self.agent('xa-a')['load_total'], 0)
        self.assertEqual(self.agent('xa-c')['load_total'], 1)
        self.accept(x['reservation'])
        self.assertEqual(self.ix(iid)['state'], 'assigned')
        self.work(iid, 'complete')
        for aid in ('xa-a', 'xa-c'):
            self.set_state(aid, 'offline')

    def test_abandon_while_queued(self):
        before = self.queue_stats('abn')['abandoned']
        iid = self.ingest(queue='abn')['id']
        self.assertEqual(self.queue_stats('abn')['waiting_total'], 1)
        self.work(iid, 'abandon', {'reason': 'caller-hung-up'})
        self.assertEqual(self.ix(iid)['state'], 'abandoned')
        q = self.queue_stats('abn')
        self.assertEqual((q['waiting_total'], q['abandoned']), (0, before + 1))
        self.work(iid, 'abandon', expect=409)
        self.make_agent('abn-q', {'s_abn': 1}, {'voice': 1})
        self.assertEqual(self.agent('abn-q')['load_total'], 0, 'nothing left to offer')
        self.set_state('abn-q', 'offline')

    def test_abandon_while_offered_withdraws_the_offer(self):
        self.make_agent('abn-a', {'s_abn': 1}, {'voice': 1})
        iid = self.ingest(queue='abn')['id']
        x = self.wait_state(iid, 'offered', 'abn-a')
        self.assertEqual(self.agent('abn-a')['load_total'], 1)
        self.work(iid, 'abandon')
        self.assertEqual(self.ix(iid)['state'], 'abandoned')
        self.assertEqual(self.agent('abn-a')['load_total'], 0)
        self.accept(x['reservation'], expect=404)
        types = [f['type'] for _, f in self.stream('agent:abn-a:events')]
        self.assertEqual(types[-3:], ['offer', 'offer.withdrawn', 'interaction.abandoned'])
        # the capacity is back: the next interaction is offered to the same agent
        nxt = self.ingest(queue='abn')['id']
        self.wait_state(nxt, 'offered', 'abn-a')
        self.work(nxt, 'cancel')
        self.set_state('abn-a', 'offline')

    def test_agent_token_scope(self):
        self.make_agent('tok-a', {'s_tok': 1}, {'voice': 1})
        self.make_agent('tok-b', {'s_tok': 1}, {'voice': 1}, available=False)
        ta, tb = self.token_for('tok-a'), self.token_for('tok-b')
        iid = self.ingest(queue='tok')['id']
        resv = self.wait_state(iid, 'offered', 'tok-a')['reservation']
        # b's token can act for b only
        self.accept(resv, token=tb, expect=403)
        self.reject(resv, token=tb, expect=403)
        self.set_state('tok-a', 'away', token=tb, expect=403)
        st, _, _ = self.d.request('GET', '/v1/agents/tok-a/events', headers=self.bearer(tb))
        self.assertEqual(st, 403)
        self.set_state('tok-b', 'available', token=tb)
        self.assertEqual(self.agent('tok-a')['presence'], 'available')
        # and never as admin
        for method, path in (('GET', '/v1/agents'), ('GET', '/v1/queues'),
                             ('GET', '/v1/interactions/' + iid)):
            st, _, _ = self.d.request(method, path, headers=self.bearer(tb))
            self.assertIn(st, (401, 403), path)
        st, _, _ = self.d.request('POST', '/v1/interactions/%s/abandon' % iid, {},
                                  headers=self.bearer(ta))
        self.assertIn(st, (401, 403))
        # a's own token accepts; b cannot complete a's work
        self.accept(resv, token=ta)
        self.work(iid, 'complete', token=tb, expect=403)
        self.work(iid, 'complete', token=ta)
        # the admin token may change any agent's state and accept any reservation
        self.set_state('tok-a', 'away', 'meeting')
        self.assertEqual((self.agent('tok-a')['presence'], self.agent('tok-a')['reason']),
                         ('away', 'meeting'))
        i2 = self.ingest(queue='tok')['id']
        self.accept(self.wait_state(i2, 'offered', 'tok-b')['reservation'])
        self.work(i2, 'complete')
        # revoked tokens stop working
        st, out, _ = self.d.request('DELETE', '/v1/agents/tok-b/tokens')
        self.assertEqual((st, out['revoked']), (200, 1))
        self.set_state('tok-b', 'offline', token=tb, expect=403)
        for aid in ('tok-a', 'tok-b'):
            self.set_state(aid, 'offline')


class EventStreamTest(Floor, harness.TestCase):
    extra_config = WORK_CONFIG

    def test_agent_stream_offer_screen_pop_and_replay(self):
        pid = os.getpid()
        policy = 'POP-2001-%06d' % pid
        rec = {'id': 'H-POP-%d' % pid, 'name': 'Ana Platinum', 'policies': [policy],
               'annual_premium': 4000, 'tenure_years': 9, 'claims_last_3y': 0}
        st, rep, _ = self.d.post('/v1/customers/import', json.dumps(rec) + '\n', content_type=NDJSON)
        self.assertEqual((st, rep['imported']), (200, 1), rep)
        # the case has history before the call: an earlier email on the same policy
        mail = self.ingest(channel='email', customer={'policy': policy},
                           subject='Photos of the windscreen')
        self.work(mail['id'], 'cancel', {'reason': 'duplicate'})
        self.make_agent('pop-a', {'s_pop': 1}, {'voice': 1}, available=False)
        token = self.token_for('pop-a')
        s = SSE(self.d, '/v1/agents/pop-a/events', token=token)
        try:
            self.assertEqual(s.status, 200)
            self.set_state('pop-a', 'available', token=token)
            ev = s.until(lambda e: e['type'] == 'agent.presence', 10, 'presence')
            self.assertEqual(ev['data'], {'agent': 'pop-a', 'presence': 'available', 'reason': ''})
            call = self.ingest(channel='voice', queue='pop', subject='Windscreen',
                               customer={'policy': policy}, **{'from': '+34 600 200 001'})
            self.assertEqual(call['case_id'], mail['case_id'])
            offer = s.until(lambda e: e['type'] == 'offer', 10, 'offer')
        finally:
            s.close()
        self.assertEqual(offer['agent'], 'pop-a')
        pop = offer['data']
        self.assertEqual((pop['interaction']['id'], pop['interaction']['channel'],
                          pop['interaction']['case_id'], pop['interaction']['subject']),
                         (call['id'], 'voice', call['case_id'], 'Windscreen'))
        self.assertEqual(pop['customer'], {'id': call['customer_id'], 'name': 'Ana Platinum',
                                           'segment': 'platinum'})
        self.assertIsInstance(pop['open_cases'], list)
        self.assertIsInstance(pop['history'], list)
        self.assertEqual([c['id'] for c in pop['open_cases']], [call['case_id']])
        self.assertEqual(pop['open_cases'][0]['policy'], policy)
        htypes = [h['type'] for h in pop['history']]
        self.assertLessEqual(len(htypes), 10)
        for t in ('case.opened', 'interaction.received', 'interaction.canceled', 'offer.created'):
            self.assertIn(t, htypes)
        received = [h for h in pop['history'] if h['type'] == 'interaction.received']
        self.assertEqual({h['interaction'] for h in received}, {mail['id'], call['id']})
        self.assertEqual(pop['reservation']['timeout'], 3)
        self.assertEqual(pop['reservation']['id'], self.ix(call['id'])['reservation'])
        last = offer['sse_id']

        # disconnected: accept, complete, and a new offer happen meanwhile
        self.accept(pop['reservation']['id'], token=token)
        self.work(call['id'], 'complete', token=token)
        nxt = self.ingest(channel='voice', queue='pop')
        self.wait_state(nxt['id'], 'offered', 'pop-a')
        missed = [(i, f['type']) for i, f in self.stream('agent:pop-a:events') if self._id_gt(i, last)]
        self.assertEqual([t for _, t in missed], ['offer.accepted', 'interaction.completed', 'offer'])

        s = SSE(self.d, '/v1/agents/pop-a/events', token=token, last_event_id=last)
        try:
            replayed = s.drain(0.5)
            self.assertEqual([(e['sse_id'], e['type']) for e in replayed], missed)
            self.assertTrue(all(e['replayed'] for e in replayed))
            self.assertEqual(replayed[-1]['data']['interaction']['id'], nxt['id'])
            # and the stream goes on live, without repeating anything
            self.reject(replayed[-1]['data']['reservation']['id'], token=token)
            ev = s.until(lambda e: True, 10, 'live event')
            self.assertEqual((ev['type'], ev['replayed']), ('offer.rejected', False))
            self.assertEqual(s.drain(0.3), [])
        finally:
            s.close()
        # another agent's token cannot read this stream
        self.make_agent('pop-b', {'s_pop': 1}, {'voice': 1}, available=False)
        s = SSE(self.d, '/v1/agents/pop-a/events', token=self.token_for('pop-b'))
        self.assertEqual(s.status, 403)
        self.work(nxt['id'], 'cancel')
        self.set_state('pop-a', 'offline')

    @staticmethod
    def _id_gt(a, b):
        return tuple(map(int, a.split('-'))) > tuple(map(int, b.split('-')))

    def test_supervisor_stream_sees_all(self):
        sup = SSE(self.d, '/v1/events')
        try:
            self.make_agent('sup-a', {'s_sup': 1}, {'voice': 1})
            self.make_agent('sup-b', {'s_sup': 1}, {'voice': 1})
            i1 = self.ingest(queue='sup')['id']
            i2 = self.ingest(queue='sup')['id']
            self.wait_state(i2, 'offered', 'sup-b')
            self.work(i1, 'abandon')
            want = {('agent.presence', 'sup-a'), ('agent.presence', 'sup-b'),
                    ('interaction.queued', ''), ('offer', 'sup-a'), ('offer', 'sup-b'),
                    ('offer.withdrawn', 'sup-a'), ('interaction.abandoned', 'sup-a')}
            got = set()

            def seen(e):
                if e['type'] == 'interaction.queued' and e['data']['interaction'] not in (i1, i2):
                    return False
                got.add((e['type'], e['agent']))
                return want <= got
            sup.until(seen, 10, 'every event of both agents')
            queued = [e['data']['interaction'] for e in sup.seen if e['type'] == 'interaction.queued']
            self.assertEqual(queued, [i1, i2])
            ids = [e['sse_id'] for e in sup.seen]
            self.assertEqual(ids, sorted(ids, key=lambda x: tuple(map(int, x.split('-')))))
            self.assertEqual(len(ids), len(set(ids)))
        finally:
            sup.close()
        # agents' tokens cannot open the supervisor stream
        s = SSE(self.d, '/v1/events', token=self.token_for('sup-a'))
        self.assertIn(s.status, (401, 403))
        self.work(i2, 'cancel')
        for aid in ('sup-a', 'sup-b'):
            self.set_state(aid, 'offline')


if __name__ == '__main__':
    unittest.main()
