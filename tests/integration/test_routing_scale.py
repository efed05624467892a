"""Routing consistency at size, against a brute-force reference (tests/integration/
routing_model.py): 2,000 agents with random skills and capacities and 50,000 interactions
ingested in bulk with concurrency across two instances, so that tens of thousands wait; then
a busy floor for a while: random arrivals, accepts, rejects, ignored offers (timeouts),
wrap-ups, completions, transfers to queues and to agents, abandons, cancels and presence
changes, with overflow (to a virtual ~overflow queue and to another queue), max_wait
(close and callback), sticky routing, the three strategies and policyholder segments in play.

Then, with the daemons stopped (so Redis holds one consistent state):
- every offer in the event log was made to an available agent, eligible by skills for the
  interaction's queue (or named by a transfer), not blocked from it, below capacity on the
  channel and in total; and honoured priority: no waiting interaction with a better score
  that the agent could take was passed over at decision time; and an interaction routed to
  the best agent (arrival, back after a reject or timeout, transfer, overflow) went to the
  first agent of its queue's strategy order (longest-idle, least-occupied, round-robin)
  that was not blocked from it;
- at every certain script boundary of the log, the routing invariant held for what changed
  (nothing waits next to an idle eligible agent), and every reject block that ended was
  re-routed by its deadline;
- the replayed end state equals Redis (loads, presence, interaction states), and every
  routing index (pool:<P>:avail:<ch>, pool:<P>:heads:<ch>, pool:<P>:agents, q:<Q>:wait:<ch>,
  q:<Q>:age, reservations) rebuilt from the agent and interaction hashes equals the real
  one. claims_fast and billing_desk share their pools with claims and billing.

TransferTest and OverflowTargetTest are small, deterministic reproductions of routing bugs
found while building this reference (the first by the priority check above; the others by
reading the deadline code the reference replays), one scenario each.

Size: OMNICC_SCALE_AGENTS (2,000), OMNICC_SCALE_WAITING (50,000 ingested),
OMNICC_SCALE_SECONDS (25 s of floor activity after the bulk ingest); under an
AddressSanitizer build 300 agents and 6,000 interactions (it runs several times slower), so
that the test stays within a few minutes on a loaded 2-core machine. OMNICC_TEST_SEED fixes
the random choices."""
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import redis
import redis.asyncio as aredis

import harness
import routing_model as rm
from aioclient import Client, Unreachable

SANITIZED = rm.sanitized_build(harness.OMNICCD)
N_AGENTS = int(os.environ.get('OMNICC_SCALE_AGENTS', 300 if SANITIZED else 2000))
N_IX = int(os.environ.get('OMNICC_SCALE_WAITING', 6000 if SANITIZED else 50000))
ACTIVE_S = float(os.environ.get('OMNICC_SCALE_SECONDS', 20 if SANITIZED else 25))
SEED = int(os.environ.get('OMNICC_TEST_SEED', random.randrange(1 << 30)))
IN_FLIGHT = 48          # concurrent API requests
REJECT_BLOCK = 4
GRACE_MS = 6000 if SANITIZED else 4000   # deadline sweep lag allowed (loaded machine)

SKILLS = ('claims', 'motor', 'home', 'life', 'health', 'billing', 'lang_es', 'lang_en')
QUEUES = {
    'general': {'channels': ['voice', 'webchat', 'email', 'fax', 'branch']},
    'claims': {'channels': ['voice', 'webchat', 'email'], 'skills': {'claims': 3},
               'overflow_after': 12, 'overflow_skills': {'claims': 1}},
    'motor': {'channels': ['voice', 'webchat'], 'skills': {'motor': 2, 'lang_es': 1},
              'strategy': 'least-occupied'},
    'home': {'channels': ['voice', 'email', 'branch'], 'skills': {'home': 1},
             'strategy': 'round-robin', 'max_wait': 30, 'on_max_wait': 'close'},
    'life': {'channels': ['email', 'fax', 'branch'], 'skills': {'life': 2, 'health': 1},
             'sticky_seconds': 300, 'max_wait': 20, 'on_max_wait': 'callback'},
    'billing': {'channels': ['voice', 'webchat', 'email'], 'skills': {'billing': 2},
                'overflow_after': 15, 'overflow_queue': 'general'},
    # the same requirements and strategy as claims and billing: each pair shares one pool
    # of agent indexes (docs/ROUTING.md), on channels one of them serves or both do
    'claims_fast': {'channels': ['email', 'fax', 'webchat'], 'skills': {'claims': 3}},
    'billing_desk': {'channels': ['webchat', 'branch'], 'skills': {'billing': 2},
                     'sticky_seconds': 120},
}
ROUTING = dict([('offer_timeout_' + ch, 3) for ch in rm.CHANNELS] +
               [('reject_block', REJECT_BLOCK), ('max_no_answer', 3), ('default_queue', 'general')])
CAP_MAX = {'voice': 1, 'email': 6, 'webchat': 3, 'fax': 2, 'branch': 1}
CHANNEL_WEIGHTS = {'voice': 4, 'email': 3, 'webchat': 3, 'fax': 1, 'branch': 1}


def make_agents(rng, n):
    out = []
    for i in range(n):
        skills = {s: rng.randint(1, 5) for s in SKILLS if rng.random() < 0.4}
        cap = {ch: rng.randint(1, m) for ch, m in CAP_MAX.items() if rng.random() < 0.6}
        if not cap:
            cap = {'voice': 1}
        total = sum(cap.values())
        out.append({'id': 'sa-%04d' % i, 'skills': skills, 'capacity': cap,
                    'capacity_total': rng.randint(max(1, total // 2), total),
                    'wrapup': {ch: rng.choice([0, 0, 0, 1, 2]) for ch in cap}})
    # a few agents with a large email capacity (many offers from one routing call)
    for a in out[:max(2, n // 200)]:
        a['capacity']['email'] = 30
        a['capacity_total'] = sum(a['capacity'].values())
    return out


def policyholders(rng, n):
    """NDJSON: policyholders with premiums and tenures spread over every segment."""
    lines = []
    for i in range(n):
        lines.append(json.dumps({'id': 'H-%d' % i, 'name': 'Holder %d' % i,
                                 'policies': ['PL-2030-%06d' % i],
                                 'annual_premium': rng.choice([100, 800, 2500, 5000]),
                                 'tenure_years': rng.choice([0, 3, 6, 12]),
                                 'claims_last_3y': rng.choice([0, 0, 1, 4])}))
    return ('\n'.join(lines) + '\n').encode()


class RoutingScaleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-scale-')
        self.redis = harness.RedisServer(self.tmp)
        conf = (rm.config_text(QUEUES, ROUTING) + '[redis]\ncommand_timeout = 10000\n'
                '[daemon]\nlog_level = info\n')
        self.daemons = [harness.Omniccd(self.tmp, self.redis.url, conf, name='omniccd%d' % i)
                        for i in range(2)]
        self.r = redis.Redis(port=self.redis.port, decode_responses=True)

    def tearDown(self):
        bad = []
        for d in self.daemons:
            if d.proc and d.proc.poll() is None:
                rc = d.stop()
                if rc not in (0, None):
                    bad.append('%s exited %r' % (d.dir, rc))
                    sys.stderr.write('---- %s\n%s\n' % (d.dir, d.log()[-4000:]))
        self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if bad:
            raise AssertionError('; '.join(bad))

    def test_consistency_against_reference(self):
        print('\nseed %d, %d agents, %d interactions, %.0f s active%s' % (
            SEED, N_AGENTS, N_IX, ACTIVE_S, ' (ASan build: scaled down)' if SANITIZED else ''),
            file=sys.stderr)
        asyncio.run(self.scenario())

    async def scenario(self):
        rng = random.Random(SEED)
        clients = [Client(d.port, harness.TOKEN) for d in self.daemons]
        sem = asyncio.Semaphore(IN_FLIGHT)
        errors, stats = [], {}
        stop = asyncio.Event()      # no new work from here on
        stopped = asyncio.Event()   # the daemons are down: the log is final

        def count(k):
            stats[k] = stats.get(k, 0) + 1

        async def call(method, path, body=None, token=None, content_type='application/json'):
            async with sem:
                for _ in range(20):
                    try:
                        st, b = await rng.choice(clients).request(
                            method, path, body, token=token, content_type=content_type)
                    except Unreachable as e:
                        errors.append('%s %s: %s' % (method, path, e))
                        return 0, None
                    if st != 503:
                        return st, b
                    await asyncio.sleep(0.2)
                return st, b

        # ---- the floor: policyholders (segments), agents, tokens ----
        st, rep = await call('POST', '/v1/customers/import', policyholders(rng, 400),
                             content_type='application/x-ndjson')
        self.assertEqual(st, 200, rep)
        docs = make_agents(rng, N_AGENTS)
        tokens = {}
        person = {d['id']: (rng.uniform(0, 0.25), rng.uniform(0, 0.12)) for d in docs}

        async def create(doc):
            st, b = await call('POST', '/v1/agents', doc)
            if st not in (200, 201):
                errors.append('create %s: %d %r' % (doc['id'], st, b))
                return
            st, b = await call('POST', '/v1/agents/%s/tokens' % doc['id'])
            if st != 201:
                errors.append('token %s: %d %r' % (doc['id'], st, b))
                return
            tokens[doc['id']] = b['token']

        t0 = time.monotonic()
        await asyncio.gather(*(create(d) for d in docs))
        self.assertEqual(errors, [])
        t_floor = time.monotonic() - t0

        # ---- the event log, read as it is written (the stream is capped) ----
        ar = aredis.Redis(port=self.redis.port, decode_responses=True)
        raw_events = []
        offers = asyncio.Queue()

        async def collect():
            last = '0-0'
            while True:
                res = await ar.xread({rm.KEY + 'events': last}, count=5000, block=200)
                for _, entries in res or ():
                    for eid, f in entries:
                        raw_events.append((eid, f))
                        if f.get('type') in ('offer', 'offer.accepted') or (
                                f.get('type') == 'agent.presence' and '"no-answer"' in f.get('data', '')):
                            offers.put_nowait((eid, f))
                        last = eid
                if stopped.is_set() and not res:
                    return

        collector = asyncio.ensure_future(collect())

        # ---- agents: decisions on offers, work, presence ----
        working = set()

        async def handle(eid, f):
            aid = f['agent']
            d = json.loads(f['data'])
            tok = tokens.get(aid)
            if f['type'] == 'agent.presence':
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                if not stop.is_set():
                    st, b = await call('PUT', '/v1/agents/%s/state' % aid, {'state': 'available'}, tok)
                    count('back-from-no-answer')
                return
            if f['type'] == 'offer.accepted':
                return
            resv, ixid = d['reservation']['id'], d['interaction']['id']
            p_reject, p_ignore = person[aid]
            await asyncio.sleep(rng.uniform(0, 0.2))
            u = rng.random()
            if u < p_ignore:
                count('ignore')
                return
            op = 'reject' if u < p_ignore + p_reject else 'accept'
            st, b = await call('POST', '/v1/reservations/%s/%s' % (resv, op), token=tok)
            count('%s-%d' % (op, st))
            if st not in (200, 404, 409):
                errors.append('%s %s: %d %r' % (op, resv, st, b))
            if op != 'accept' or st != 200:
                return
            working.add(ixid)
            await asyncio.sleep(rng.uniform(0.1, 2.0))
            if stop.is_set():
                return
            u = rng.random()
            ch = d['interaction']['channel']
            if u < 0.45:
                st, b = await call('POST', '/v1/interactions/%s/complete' % ixid, {}, tok)
                count('complete-%d' % st)
            elif u < 0.7:
                st, b = await call('POST', '/v1/interactions/%s/wrapup' % ixid,
                                   {'disposition': 'ok'}, tok)
                count('wrapup-%d' % st)
            elif u < 0.88:
                q = rng.choice([q for q, qd in QUEUES.items() if ch in qd['channels']])
                st, b = await call('POST', '/v1/interactions/%s/transfer' % ixid, {'queue': q}, tok)
                count('transfer-queue-%d' % st)
            else:
                q = rng.choice([q for q, qd in rm.queue_table(QUEUES).items() if ch in qd['channels']])
                head = self.r.zrange(rm.KEY + 'q:%s:avail:%s' % (q, ch), 0, 0)
                target = head[0] if head and head[0] != aid else rng.choice(docs)['id']
                st, b = await call('POST', '/v1/interactions/%s/transfer' % ixid, {'agent': target}, tok)
                count('transfer-agent-%d' % st)
            if st not in (200, 409):
                errors.append('work %s: %d %r' % (ixid, st, b))
            working.discard(ixid)

        tasks = set()

        def spawn(coro):
            t = asyncio.ensure_future(coro)
            tasks.add(t)
            t.add_done_callback(lambda t: (tasks.discard(t), not t.cancelled() and t.exception()
                                           and errors.append(repr(t.exception()))))

        async def dispatcher():
            while True:
                eid, f = await offers.get()
                spawn(handle(eid, f))

        dispatch = asyncio.ensure_future(dispatcher())

        # ---- presence: a tenth of the floor is in while the bulk arrives ----
        async def presence(aid, state, reason=None):
            body = {'state': state}
            if reason:
                body['reason'] = reason
            st, b = await call('PUT', '/v1/agents/%s/state' % aid, body, tokens[aid])
            if st != 200:
                errors.append('state %s: %d %r' % (aid, st, b))

        order = [d['id'] for d in docs]
        rng.shuffle(order)
        big = [d['id'] for d in docs if d['capacity'].get('email', 0) >= 30]
        order = [a for a in order if a not in big]   # they log in with the backlog waiting
        order[N_AGENTS // 10:N_AGENTS // 10] = big
        await asyncio.gather(*(presence(aid, 'available') for aid in order[:N_AGENTS // 10]))

        # ---- bulk ingest with concurrency ----
        channels = [ch for ch, w in CHANNEL_WEIGHTS.items() for _ in range(w)]
        serving = {ch: [q for q, d in QUEUES.items() if ch in d['channels']] for ch in rm.CHANNELS}
        seq = [0]

        def new_ix():
            n = seq[0]
            seq[0] += 1
            ch = rng.choice(channels)
            doc = {'channel': ch, 'external_id': 'scale-%d-%d' % (SEED, n),
                   'from': '+34 7%08d' % rng.randrange(10 ** 8)}
            doc['customer'] = {'policy': 'PL-2030-%06d' % rng.randrange(400) if rng.random() < 0.3
                               else 'PL-2031-%06d' % rng.randrange(20000)}
            if rng.random() < 0.8:
                doc['queue'] = rng.choice(serving[ch])
            if rng.random() < 0.15:
                doc['priority'] = rng.randint(1, 100)
            return doc

        async def ingest_one():
            st, b = await call('POST', '/v1/interactions', new_ix())
            count('ingest-%d' % st)
            if st != 202:
                errors.append('ingest: %d %r' % (st, b))

        async def bulk(n):
            async def worker():
                while bulk_left[0] > 0:
                    bulk_left[0] -= 1
                    await ingest_one()
            bulk_left = [n]
            await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))

        t1 = time.monotonic()
        await bulk(N_IX)
        t_ingest = time.monotonic() - t1
        waiting = sum(self.r.zcard(rm.KEY + 'q:%s:wait:%s' % (q, ch))
                      for q, qd in rm.queue_table(QUEUES).items() for ch in qd['channels'])
        # then half of the floor logs in at once: each login routes against the backlog
        t3 = time.monotonic()
        await asyncio.gather(*(presence(aid, 'available')
                               for aid in order[N_AGENTS // 10:N_AGENTS * 6 // 10]))
        t_login = time.monotonic() - t3

        # ---- a busy floor: arrivals, abandons, cancels, presence changes ----
        async def churn():
            end = time.monotonic() + ACTIVE_S
            while time.monotonic() < end and not errors:
                u = rng.random()
                if u < 0.45:
                    spawn(ingest_one())
                elif u < 0.6:
                    ch = rng.choice(channels)
                    q = rng.choice(serving[ch])
                    m = self.r.zrandmember(rm.KEY + 'q:%s:wait:%s' % (q, ch))
                    if m:
                        spawn(call('POST', '/v1/interactions/%s/abandon' % m, {'reason': 'hung-up'}))
                        count('abandon')
                elif u < 0.66:
                    spawn(call('POST', '/v1/interactions/I-%d/cancel' % rng.randint(1, seq[0]),
                               {'reason': 'test'}))
                    count('cancel')
                else:
                    aid = rng.choice(docs)['id']
                    state = rng.choices(['available', 'away', 'offline'], [6, 3, 1])[0]
                    spawn(presence(aid, state, 'break' if state == 'away' else None))
                    count('presence-' + state)
                await asyncio.sleep(0.004)

        await churn()
        # quiet: no new work, let in-flight requests land, then stop the daemons so that
        # Redis holds one state (scripts are atomic: it is a state after a whole script)
        stop.set()
        dispatch.cancel()
        await asyncio.sleep(0.5)
        for t in list(tasks):
            t.cancel()
        await asyncio.sleep(0.2)
        for c in clients:
            c.close()
        for d in self.daemons:
            self.assertEqual(d.stop(), 0)
        stopped.set()
        await collector
        await ar.close()
        t_total = time.monotonic() - t0
        print('floor %.1f s, ingest %d in %.1f s (%.0f/s), %d waiting after it, %d agents in '
              'at once in %.1f s; %d events; total %.1f s\n%s' % (
                  t_floor, N_IX, t_ingest, N_IX / t_ingest, waiting, N_AGENTS // 2, t_login,
                  len(raw_events), t_total, sorted(stats.items())),
              file=sys.stderr)
        self.assertEqual(errors[:10], [])

        # ---- the reference ----
        t2 = time.monotonic()
        # The reference replays the stream as Redis holds it: the live reader above only drives
        # the simulated agents (a loaded test process may fall behind or lose a reply), so it
        # must have seen nothing Redis does not hold, and Redis must have trimmed nothing.
        events = rm.read_events(self.r)
        self.assertEqual(len(events), rm.events_added(self.r), 'the events stream was trimmed')
        held = {eid for eid, _ in events}
        self.assertEqual([eid for eid, _ in raw_events if eid not in held], [],
                         'the live reader saw events Redis does not hold')
        if len(raw_events) != len(events):
            print('live reader saw %d of %d events' % (len(raw_events), len(events)),
                  file=sys.stderr)
        agents = rm.load_agents(self.r, [d['id'] for d in docs])
        ixs = rm.load_interactions(self.r)
        scores = {i: float(h['wait_score']) for i, h in ixs.items()}
        if os.environ.get('OMNICC_TEST_DUMP'):   # for offline analysis of a failure
            with open(os.environ['OMNICC_TEST_DUMP'], 'w') as f:
                json.dump({'events': events, 'ixs': ixs, 'agents': {
                    a: dict(v, queues=sorted(v['queues'])) for a, v in agents.items()}}, f)
        replay = rm.Replay(agents, scores, QUEUES, REJECT_BLOCK, grace_ms=GRACE_MS)
        replay.feed(events)
        last_at = events[-1][1]['at']
        replay.finish(now_ms=last_at - GRACE_MS)
        print('replayed %d events in %.1f s: %s; %d agent choices checked; violations %s' % (
            replay.n, time.monotonic() - t2, sorted(replay.counts.items()),
            replay.strategy_checked, replay.nviol), file=sys.stderr)
        for v in replay.violations[:10]:
            print('  ' + v, file=sys.stderr)
        self.assertGreater(replay.counts.get('offer', 0), N_IX // 10)
        self.assertGreater(waiting, N_IX // 2, 'the floor was not loaded: few interactions waited')
        # every check runs; the failure lists what each found
        problems = {}
        for kind in ('capacity', 'eligibility', 'state', 'priority', 'strategy', 'invariant'):
            if replay.nviol.get(kind):
                problems[kind] = '%d, e.g. %s' % (replay.nviol[kind], replay.of_kind(kind)[:3])
        diff = replay.compare_with(agents, ixs)
        if diff:
            problems['replay vs redis'] = '%d, e.g. %s' % (len(diff), diff[:5])
        drift = rm.check_structures(self.r, QUEUES, agents, ixs)
        if drift:
            problems['index drift'] = '%d, e.g. %s' % (len(drift), drift[:5])
        left = rm.stranded(self.r, QUEUES, agents, ixs, now_ms=last_at, grace_ms=GRACE_MS)
        if left:
            problems['stranded'] = '%d, e.g. %s' % (len(left), left[:5])
        self.assertFalse(problems, '\n' + '\n'.join('%s: %s' % kv for kv in problems.items()))


class Scenario:
    """One redis-server and one omniccd with the given queues, for the small scenarios below."""

    def __init__(self, queues, routing=None):
        self.tmp = tempfile.mkdtemp(prefix='omnicc-scen-')
        self.redis = harness.RedisServer(self.tmp)
        conf = rm.config_text(queues, routing or {}) + '[daemon]\nlog_level = info\n'
        self.d = harness.Omniccd(self.tmp, self.redis.url, conf, start=False)

    def close(self):
        try:
            self.d.stop()
            self.redis.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def agent(self, aid, **doc):
        doc['id'] = aid
        st, b, _ = self.d.post('/v1/agents', doc)
        assert st in (200, 201), b
        st, b, _ = self.d.request('PUT', '/v1/agents/%s/state' % aid, {'state': 'available'})
        assert st == 200, b

    def ingest(self, **doc):
        st, b, _ = self.d.post('/v1/interactions', doc)
        assert st == 202, b
        return b

    def state(self, ixid):
        return self.d.get('/v1/interactions/' + ixid)[1]


class TransferTest(unittest.TestCase):
    def test_transfer_frees_the_agent_for_the_best_waiting_work(self):
        """The agent who transfers an interaction to a queue is free: it must get the best
        waiting interaction among its queues (docs/ROUTING.md: "the best score wins"), not
        the interaction it just let go because that one was routed first."""
        sc = Scenario({'sales': {'channels': ['voice']}, 'claims': {'channels': ['voice']}})
        try:
            sc.d.start()
            sc.agent('t-1', capacity={'voice': 1})
            first = sc.ingest(channel='voice', external_id='tr-1', queue='sales')
            st, b, _ = sc.d.post('/v1/reservations/%s/accept' % first['reservation'], None)
            self.assertEqual(st, 200, b)
            # while t-1 talks, an urgent claim arrives (priority 100: hours of head start)
            urgent = sc.ingest(channel='voice', external_id='tr-2', queue='claims', priority=100)
            self.assertNotIn('reservation', urgent)
            st, b, _ = sc.d.post('/v1/interactions/%s/transfer' % first['id'], {'queue': 'sales'})
            self.assertEqual(st, 200, b)
            self.assertEqual(sc.state(urgent['id'])['state'], 'offered',
                             'the freed agent was not offered the urgent claim; it got %s back: %s'
                             % (first['id'], sc.state(first['id'])))
            self.assertEqual(sc.state(first['id'])['state'], 'queued')
        finally:
            sc.close()

    def test_transfer_to_a_queue_with_max_wait_does_not_end_the_call_at_once(self):
        """An answered interaction transferred to a queue starts waiting there: max_wait must
        not count the time it spent with the first agent (it is measured from created_at, so
        a call older than max_wait is canceled by the next sweep, right after the transfer)."""
        sc = Scenario({'sales': {'channels': ['voice']},
                       'home': {'channels': ['voice'], 'skills': {'home': 1}, 'max_wait': 5,
                                'on_max_wait': 'close'}})
        try:
            sc.d.start()
            sc.agent('t-2', capacity={'voice': 1})
            ix = sc.ingest(channel='voice', external_id='mw-1', queue='sales')
            st, b, _ = sc.d.post('/v1/reservations/%s/accept' % ix['reservation'], None)
            self.assertEqual(st, 200, b)
            time.sleep(6)   # a conversation longer than home's max_wait
            st, b, _ = sc.d.post('/v1/interactions/%s/transfer' % ix['id'], {'queue': 'home'})
            self.assertEqual(st, 200, b)
            time.sleep(2.5)  # the sweep runs at least once a second
            h = sc.state(ix['id'])
            self.assertEqual(h['state'], 'queued', 'transferred call ended %.1f s after the '
                             'transfer: %s' % (2.5, h))
        finally:
            sc.close()


class OverflowTargetTest(unittest.TestCase):
    """overflow_queue may name a queue that does not serve all of the source queue's channels
    (the config is accepted). The daemon must either refuse that configuration, or never
    move an interaction into a queue that cannot serve its channel: moved there, it waits in
    q:<target>:wait:<ch>, which no agent index covers and GET /v1/queues does not count, so
    nobody can ever be offered it."""

    def test_overflow_never_strands_work_in_a_queue_without_its_channel(self):
        tmp = tempfile.mkdtemp(prefix='omnicc-ovf-')
        try:
            red = harness.RedisServer(tmp)
            queues = {'sales': {'channels': ['voice', 'email'], 'overflow_after': 1,
                                'overflow_queue': 'backoffice'},
                      'backoffice': {'channels': ['email'], 'skills': {'backoffice': 1}}}
            conf = rm.config_text(queues, {'reject_block': 5})
            d = harness.Omniccd(tmp, red.url, conf, start=False)
            check = subprocess.run([harness.OMNICCD, '-c', d.config_path, '--check'],
                                   capture_output=True, text=True, timeout=30)
            if check.returncode != 0:
                # refused: fine, as long as it says why
                red.stop()
                self.assertIn('overflow_queue', check.stdout + check.stderr)
                return
            d.start()
            try:
                st, _, _ = d.post('/v1/agents', {'id': 'ovf-1', 'capacity': {'voice': 1, 'email': 1}})
                self.assertIn(st, (200, 201))
                st, ix, _ = d.post('/v1/interactions', {'channel': 'voice', 'external_id': 'ovf-v1',
                                                         'queue': 'sales'})
                self.assertEqual(st, 202, ix)
                time.sleep(2.5)   # overflow_after passes, the sweep runs (at least every second)
                st, _, _ = d.request('PUT', '/v1/agents/ovf-1/state', {'state': 'available'})
                self.assertEqual(st, 200)
                harness.wait_for(lambda: d.get('/v1/interactions/' + ix['id'])[1]['state'] == 'offered',
                                 5, 'the voice interaction offered to the only voice agent')
            finally:
                d.stop()
                red.stop()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    unittest.main()
