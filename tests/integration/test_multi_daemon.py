"""Several daemons, one Redis (docs/ROUTING.md, "Several daemons, one Redis"), end to end:
three omniccd instances on one redis-server; 50 agents with random skills and capacities,
each driven by a simulated agent client that follows its own SSE stream on a random
instance with its own token and accepts, rejects or ignores offers at random, then
completes (or wraps up) accepted work after a short random time; 5,000 interactions on
every channel ingested across the instances; one instance killed with SIGKILL mid-run
(its SSE clients reconnect elsewhere with Last-Event-ID, its ingests are retried elsewhere
with the same external_id, its reservations expire on the survivors).

At the end, from the event log and Redis: every interaction was accepted exactly once; no
agent ever exceeded its capacity per channel or in total (offers and ends replayed from the
log); offers went only to available, eligible agents; every agent client saw every event of
its stream exactly once across reconnects; nothing is left offered or queued that an
eligible available agent could take, and no routing index drifted.

Size: OMNICC_MULTI_INTERACTIONS (default 5,000; 2,000 when omniccd is built with
AddressSanitizer, which runs several times slower, so the test stays within about three
minutes on a loaded 2-core machine) and OMNICC_MULTI_AGENTS (50). OMNICC_TEST_SEED fixes
the random choices."""
import asyncio
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import unittest

import redis

import harness
import routing_model as rm
from aioclient import SSE, Client, Unreachable

SANITIZED = rm.sanitized_build(harness.OMNICCD)
N_IX = int(os.environ.get('OMNICC_MULTI_INTERACTIONS', 2000 if SANITIZED else 5000))
N_AGENTS = int(os.environ.get('OMNICC_MULTI_AGENTS', 50))
SEED = int(os.environ.get('OMNICC_TEST_SEED', random.randrange(1 << 30)))
INGEST_RATE = 120.0 if SANITIZED else 300.0   # interactions/s offered across the instances
FINISH_TIMEOUT = 200.0
VERBOSE = bool(os.environ.get('OMNICC_TEST_VERBOSE'))

QUEUES = {
    'default': {'channels': ['email', 'fax']},
    'claims': {'channels': ['voice', 'webchat'], 'skills': {'claims': 2}},
    'billing': {'channels': ['voice', 'email'], 'skills': {'billing': 1, 'lang_es': 2},
                'strategy': 'least-occupied'},
    'motor': {'channels': ['webchat', 'branch', 'fax'], 'skills': {'motor': 3},
              'strategy': 'round-robin'},
    'vip': {'channels': ['voice'], 'skills': {'claims': 1, 'billing': 1}, 'sticky_seconds': 60},
}
ROUTING = dict([('offer_timeout_' + ch, 3) for ch in rm.CHANNELS] +
               [('reject_block', 2), ('max_no_answer', 3)])
CHANNEL_WEIGHTS = {'voice': 3, 'email': 4, 'webchat': 3, 'fax': 1, 'branch': 1}
CAP_MAX = {'voice': 1, 'email': 5, 'webchat': 4, 'fax': 2, 'branch': 1}


def make_agents(rng, n):
    """Random skills and capacities, then topped up so every queue has at least three
    agents able to take each of its channels."""
    agents = []
    for i in range(n):
        skills = {s: rng.randint(1, 5) for s in ('claims', 'billing', 'lang_es', 'motor')
                  if rng.random() < 0.6}
        cap = {ch: rng.randint(0, m) for ch, m in CAP_MAX.items() if rng.random() < 0.7}
        cap = {ch: c for ch, c in cap.items() if c}
        if not cap:
            cap = {rng.choice(list(CAP_MAX)): 1}
        total = sum(cap.values())
        doc = {'id': 'ag-%02d' % i, 'name': 'Agent %d' % i, 'skills': skills, 'capacity': cap,
               'capacity_total': rng.randint(max(1, total * 2 // 3), total),
               'wrapup': {ch: rng.choice([0, 0, 0, 1]) for ch in cap}}
        agents.append(doc)
    for qname, q in QUEUES.items():
        for ch in q['channels']:
            def able(a):
                return (rm.meets(a['skills'], q.get('skills', {})) and
                        a['capacity'].get(ch, 0) > 0)
            while sum(1 for a in agents if able(a)) < 3:
                a = rng.choice(agents)
                for s, lvl in q.get('skills', {}).items():
                    a['skills'][s] = max(a['skills'].get(s, 0), lvl)
                a['capacity'][ch] = max(1, a['capacity'].get(ch, 0))
                a['capacity_total'] = max(a['capacity_total'], 1)
    return agents


class Instance:
    def __init__(self, d):
        self.d = d
        self.client = Client(d.port, harness.TOKEN)
        self.alive = True


class Floor:
    """Shared state of one run: the instances and what the simulated clients saw."""

    def __init__(self, instances, rng):
        self.instances = instances
        self.rng = rng
        self.stopping = False
        self.errors = []

    def live(self):
        return [i for i in self.instances if i.alive] or self.instances

    async def call(self, method, path, body=None, token=None, tries=40):
        """One API call on a random live instance, moved to another one when the instance
        cannot be reached. Returns (status, body, attempts)."""
        last = None
        for attempt in range(1, tries + 1):
            inst = self.rng.choice(self.live())
            try:
                st, b = await inst.client.request(method, path, body, token=token)
                if st == 503:
                    await asyncio.sleep(0.1)
                    continue
                return st, b, attempt
            except Unreachable as e:
                last = e
                await asyncio.sleep(0.05)
        raise AssertionError('%s %s: no instance answered (%s)' % (method, path, last))


class AgentSim:
    """One agent: its SSE stream on a random instance (reconnecting elsewhere with
    Last-Event-ID), random decisions on offers, completions after a short random time."""

    def __init__(self, floor, doc, token, rng):
        self.f, self.id, self.token, self.rng = floor, doc['id'], token, rng
        self.p_reject = rng.uniform(0.0, 0.25)
        self.p_ignore = rng.uniform(0.0, 0.12)
        self.live = asyncio.Event()
        self.seen = []          # event ids in the order received
        self.seen_set = set()
        self.dups = 0
        self.first_live_id = None
        self.last_id = None
        self.handled = set()    # interactions whose completion is scheduled
        self.reconnects = 0
        self.tasks = set()
        self.stats = {'accept': 0, 'reject': 0, 'ignore': 0}

    def spawn(self, coro):
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self._done)

    def _done(self, t):
        self.tasks.discard(t)
        if not t.cancelled() and t.exception():
            self.f.errors.append('%s: %r' % (self.id, t.exception()))

    async def follow(self):
        path = '/v1/agents/%s/events' % self.id
        while not self.f.stopping:
            inst = self.rng.choice(self.f.live())
            sse = SSE(inst.client, path, token=self.token, last_event_id=self.last_id)
            try:
                await sse.open()
                async for ev in sse:
                    if 'comment' in ev:
                        if ev['comment'] == 'live':
                            self.live.set()
                        continue
                    self.on_event(ev)
            except Unreachable:
                pass
            self.reconnects += 1
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))

    def on_event(self, ev):
        eid = ev.get('id')
        if eid in self.seen_set:
            self.dups += 1
        else:
            self.seen_set.add(eid)
            self.seen.append(eid)
        if self.first_live_id is None:
            self.first_live_id = eid
        self.last_id = eid
        body = ev.get('data') or {}
        d = body.get('data') or {}
        kind = ev.get('event')
        if kind == 'offer':
            self.spawn(self.decide(d['reservation']['id'], d['interaction']['id']))
        elif kind == 'offer.accepted':
            self.work(d['interaction'])
        elif kind == 'agent.presence' and d.get('presence') == 'away' and d.get('reason') == 'no-answer':
            self.spawn(self.back_in(self.rng.uniform(0.2, 0.8)))

    async def decide(self, resv, ixid):
        await asyncio.sleep(self.rng.uniform(0.0, 0.1))
        u = self.rng.random()
        if u < self.p_ignore:
            self.stats['ignore'] += 1
            return
        op = 'reject' if u < self.p_ignore + self.p_reject else 'accept'
        self.stats[op] += 1
        st, body, _ = await self.f.call('POST', '/v1/reservations/%s/%s' % (resv, op),
                                        token=self.token)
        if op == 'accept' and st == 200:
            self.work(ixid)
        elif st not in (200, 404, 409):
            self.f.errors.append('%s %s %s: %d %r' % (self.id, op, resv, st, body))

    def work(self, ixid):
        if ixid in self.handled:
            return
        self.handled.add(ixid)
        self.spawn(self.finish(ixid))

    async def finish(self, ixid):
        await asyncio.sleep(self.rng.uniform(0.02, 0.3))
        if self.rng.random() < 0.6:
            path, body = '/v1/interactions/%s/complete' % ixid, {'note': 'done'}
        else:
            path, body = '/v1/interactions/%s/wrapup' % ixid, {'disposition': 'resolved'}
        st, b, attempts = await self.f.call('POST', path, body, token=self.token)
        if st != 200 and not (st == 409 and attempts > 1):
            self.f.errors.append('%s %s: %d %r' % (self.id, path, st, b))

    async def set_state(self, state, reason=None):
        body = {'state': state}
        if reason:
            body['reason'] = reason
        st, b, _ = await self.f.call('PUT', '/v1/agents/%s/state' % self.id, body, token=self.token)
        if st != 200:
            self.f.errors.append('%s state %s: %d %r' % (self.id, state, st, b))

    async def back_in(self, delay):
        await asyncio.sleep(delay)
        if not self.f.stopping:
            await self.set_state('available')

    async def breaks(self):
        """Now and then a short break (away), then available again."""
        while not self.f.stopping:
            await asyncio.sleep(self.rng.uniform(2.0, 8.0))
            if self.f.stopping or self.rng.random() > 0.3:
                continue
            await self.set_state('away', 'break')
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))
            if not self.f.stopping:
                await self.set_state('available')


class MultiDaemonTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-multi-')
        self.redis = harness.RedisServer(self.tmp)
        # a longer Redis command timeout than the harness's 1 s: three daemons, a routing
        # floor and the test itself share two cores (and ASan)
        conf = (rm.config_text(QUEUES, ROUTING) + '[redis]\ncommand_timeout = 10000\n'
                '[daemon]\nlog_level = info\n')
        self.daemons = [harness.Omniccd(self.tmp, self.redis.url, conf, name='omniccd%d' % i)
                        for i in range(3)]
        self.r = redis.Redis(port=self.redis.port, decode_responses=True)

    def tearDown(self):
        failures = []
        for d in self.daemons:
            if d.proc and d.proc.poll() is None:
                rc = d.stop()
                if rc not in (0, None):
                    failures.append('%s exited %r' % (d.dir, rc))
        self.redis.stop()
        if failures or (hasattr(self, '_outcome') and not self._ok()):
            for d in self.daemons:
                sys.stderr.write('---- %s (last lines)\n%s\n' % (d.dir, d.log()[-4000:]))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if failures:
            raise AssertionError('; '.join(failures))

    def _ok(self):
        res = getattr(self._outcome, 'result', None)
        errs = getattr(res, 'errors', []) + getattr(res, 'failures', [])
        return not any(t is self for t, _ in errs)

    def diagnose(self, open_, sims):
        """What the stuck interactions and their agents look like, on stderr."""
        by_id = {s.id: s for s in sims}
        for i, _ in open_[:8]:
            h = self.r.hgetall(rm.KEY + 'ix:' + i)
            sys.stderr.write('stuck %s: %s\n' % (i, {k: h.get(k) for k in (
                'state', 'queue', 'channel', 'agent', 'reservation', 'created_at')}))
            aid = h.get('agent')
            if aid:
                a = self.r.hgetall(rm.KEY + 'agent:' + aid)
                sim = by_id.get(aid)
                sys.stderr.write('  agent %s: %s; client handled it: %s, last id %s\n' % (
                    aid, {k: v for k, v in a.items() if k.startswith(('load', 'cap', 'presence'))},
                    sim and i in sim.handled, sim and sim.last_id))
            excl = self.r.hgetall(rm.KEY + 'ix:%s:excl' % i)
            if excl:
                sys.stderr.write('  blocked: %s\n' % excl)
        sys.stderr.write('deadlines: %s\n' % self.r.zrange(rm.KEY + 'deadlines', 0, 10, withscores=True))
        for q, d in QUEUES.items():
            for ch in d['channels']:
                sys.stderr.write('q:%s:%s wait %d avail %s\n' % (
                    q, ch, self.r.zcard(rm.KEY + 'q:%s:wait:%s' % (q, ch)),
                    self.r.zrange(rm.KEY + 'pool:%s:avail:%s' % (
                        rm.pool_of(rm.queue_table(QUEUES)[q]), ch), 0, -1)))

    def test_three_daemons_one_killed_mid_run(self):
        print('\nseed %d, %d agents, %d interactions%s' % (
            SEED, N_AGENTS, N_IX, ' (ASan build: scaled down)' if SANITIZED else ''),
            file=sys.stderr)
        asyncio.run(self.scenario())

    async def scenario(self):
        rng = random.Random(SEED)
        inst = [Instance(d) for d in self.daemons]
        floor = Floor(inst, rng)
        docs = make_agents(rng, N_AGENTS)

        # the floor, through the API of random instances
        sims = []
        for doc in docs:
            st, body, _ = await floor.call('POST', '/v1/agents', doc)
            self.assertIn(st, (200, 201), body)
            st, tok, _ = await floor.call('POST', '/v1/agents/%s/tokens' % doc['id'])
            self.assertEqual(st, 201, tok)
            sims.append(AgentSim(floor, doc, tok['token'], random.Random(rng.random())))
        followers = [asyncio.ensure_future(s.follow()) for s in sims]
        await asyncio.wait_for(asyncio.gather(*(s.live.wait() for s in sims)), 30)
        await asyncio.gather(*(s.set_state('available') for s in sims))
        breakers = [asyncio.ensure_future(s.breaks()) for s in sims]

        # ingest across the instances; kill one instance when 40% are in
        ids, kill_at, killed = {}, int(N_IX * 0.4), []
        victim = inst[0]
        policies = ['PL-2024-%06d' % i for i in range(N_IX // 4 + 1)]
        channels = [ch for ch, w in CHANNEL_WEIGHTS.items() for _ in range(w)]
        serving = {ch: [q for q, d in QUEUES.items() if ch in d['channels']] for ch in rm.CHANNELS}
        next_n = [0]
        t0 = time.monotonic()

        async def ingest_worker():
            while True:
                n = next_n[0]
                if n >= N_IX:
                    return
                next_n[0] += 1
                delay = t0 + n / INGEST_RATE - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if n == kill_at and not killed:
                    killed.append(time.monotonic())
                    victim.alive = False
                    victim.d.proc.send_signal(signal.SIGKILL)
                ch = rng.choice(channels)
                doc = {'channel': ch, 'external_id': 'multi-%d-%d' % (SEED, n),
                       'from': '+34 6%08d' % rng.randrange(10 ** 8),
                       'customer': {'policy': rng.choice(policies)},
                       'subject': 'contact %d' % n}
                if rng.random() < 0.7:
                    doc['queue'] = rng.choice(serving[ch])
                if rng.random() < 0.2:
                    doc['priority'] = rng.randint(1, 100)
                st, body, _ = await floor.call('POST', '/v1/interactions', doc)
                if st not in (200, 202):
                    floor.errors.append('ingest %d: %d %r' % (n, st, body))
                    continue
                ids[doc['external_id']] = body['id']

        await asyncio.gather(*(ingest_worker() for _ in range(8)))
        ingest_s = time.monotonic() - t0
        self.assertTrue(killed, 'the victim was never killed')
        self.assertEqual(victim.d.proc.wait(10), -signal.SIGKILL)
        victim.d.proc = None

        # every interaction completed (accepted, then completed or wrapped up)
        want = sorted(set(ids.values()))
        deadline = time.monotonic() + FINISH_TIMEOUT
        while True:
            p = self.r.pipeline(transaction=False)
            for i in want:
                p.hget(rm.KEY + 'ix:' + i, 'state')
            states = p.execute()
            open_ = [(i, s) for i, s in zip(want, states) if s != 'completed']
            if not open_ or time.monotonic() > deadline or floor.errors:
                break
            if VERBOSE:
                print('%.1f s: %d open %s' % (time.monotonic() - t0, len(open_), open_[:5]),
                      file=sys.stderr)
            await asyncio.sleep(0.5 if not VERBOSE else 2)
        # the last events (the final completions) may still be on their way to the agents'
        # streams on a loaded machine: give each client time to see the last entry of its
        # stream before the clients stop (an event that never comes still fails below)
        def caught_up():
            for s in sims:
                if s.first_live_id is None:
                    continue
                last = self.r.xrevrange(rm.KEY + 'agent:%s:events' % s.id, count=1)
                if last and rm_id(last[0][0]) >= rm_id(s.first_live_id) and \
                        last[0][0] not in s.seen_set:
                    return False
            return True
        settle = time.monotonic() + 15
        while not caught_up() and time.monotonic() < settle and not floor.errors:
            await asyncio.sleep(0.2)
        floor.stopping = True
        for t in followers + breakers:
            t.cancel()
        for s in sims:
            for t in list(s.tasks):
                t.cancel()
        await asyncio.sleep(0.1)
        for i in inst:
            i.client.close()
        total_s = time.monotonic() - t0
        stats = {k: sum(s.stats[k] for s in sims) for k in ('accept', 'reject', 'ignore')}
        print('ingest %.1f s, all done after %.1f s; decisions %s; SSE reconnects %d' % (
            ingest_s, total_s, stats, sum(s.reconnects for s in sims)), file=sys.stderr)

        self.assertEqual(floor.errors, [])
        self.assertEqual(len(ids), N_IX)
        self.assertEqual(len(want), N_IX, 'two external ids got the same interaction')
        if open_:
            self.diagnose(open_, sims)
        self.assertEqual(open_[:20], [], '%d interactions not completed after %.0f s' % (
            len(open_), FINISH_TIMEOUT))

        # the event log, whole (nothing trimmed)
        events = rm.read_events(self.r)
        self.assertEqual(len(events), rm.events_added(self.r), 'the events stream was trimmed')
        queued = [e['data']['interaction'] for _, e in events if e['type'] == 'interaction.queued']
        self.assertEqual(sorted(queued), want, 'queued events vs acknowledged ingests')

        agents = rm.load_agents(self.r, [d['id'] for d in docs])
        ixs = rm.load_interactions(self.r)
        scores = {i: float(h['wait_score']) for i, h in ixs.items()}
        replay = rm.Replay(agents, scores, QUEUES, ROUTING['reject_block'], check_priority=False,
                           grace_ms=5000 if SANITIZED else 3000)
        replay.feed(events)
        replay.finish()
        print('replayed %d events: %s; %d agent choices checked; violations %s' % (
            replay.n, sorted(replay.counts.items()), replay.strategy_checked, replay.nviol),
            file=sys.stderr)
        # accepted exactly once
        counts = [(i, replay.accepted.get(i, 0)) for i in want]
        self.assertEqual([c for c in counts if c[1] != 1][:20], [],
                         'interactions not accepted exactly once')
        self.assertEqual(replay.counts.get('offer.accepted'), N_IX)
        # capacity per channel and in total, at every step; offers only to available,
        # eligible agents who were not blocked; a log consistent with itself
        self.assertEqual(replay.of_kind('capacity', 'eligibility', 'state')[:30], [])
        for d in docs:
            aid = d['id']
            for ch, n in replay.max_load[aid].items():
                self.assertLessEqual(n, agents[aid]['cap'][ch], (aid, ch))
            self.assertLessEqual(replay.max_total[aid], agents[aid]['cap_total'], aid)
        self.assertEqual(replay.compare_with(agents, ixs)[:20], [])

        # every agent client saw every event of its stream once, across instance deaths
        by_agent = {}
        for eid, e in events:
            if e['agent']:
                by_agent.setdefault(e['agent'], []).append(eid)
        for s in sims:
            self.assertEqual(s.dups, 0, '%s got events twice' % s.id)
            if s.first_live_id is None:
                continue
            log_ids = [i for i in by_agent.get(s.id, []) if rm_id(i) >= rm_id(s.first_live_id)]
            missing = [i for i in log_ids if i not in s.seen_set]
            self.assertEqual(missing[:10], [], '%s: %d events never delivered over SSE'
                             % (s.id, len(missing)))
            self.assertEqual(s.seen, sorted(s.seen, key=rm_id), '%s: events out of order' % s.id)

        # nothing left that an available agent could take, and no index drifted
        self.assertEqual(rm.stranded(self.r, QUEUES, agents, ixs), [])
        self.assertEqual(rm.check_structures(self.r, QUEUES, agents, ixs), [])
        self.assertEqual(replay.of_kind('invariant', 'priority', 'strategy')[:30], [])
        # the survivors answer, the victim is gone
        for i in inst[1:]:
            self.assertEqual(i.d.get('/healthz', auth=False)[0], 200)


def rm_id(eid):
    ms, _, seq = eid.partition('-')
    return int(ms), int(seq or 0)


if __name__ == '__main__':
    unittest.main()
