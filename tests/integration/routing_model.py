"""A brute-force reference of omnicc routing for the system-level tests (test_multi_daemon,
test_routing_scale) and the benchmarks. Everything here is recomputed from first principles
from two sources only: the Redis state (agent and interaction hashes) and the event log
(the stream 'omnicc:{main}:events', entries with fields at, type, agent, data as JSON):

- Replay: walks the event log in order (every script is atomic, so the log order is the
  order of the state changes) and keeps each agent's presence and load per channel, each
  interaction's place (waiting in which queue/channel, offered/assigned to whom) and every
  reject block. It checks each offer at decision time: the agent was available, eligible
  (skills) and below capacity on the channel and in total, and no waiting interaction it
  could take had a better score (priority); an interaction routed to the best agent went to
  the first one in its queue's strategy order (strategy). At every point of the log that is
  certainly a script boundary (the 'at' timestamp changes: one script writes one 'at'), it
  checks the routing invariant of docs/ROUTING.md for what changed since the previous
  boundary: no interaction waits while an eligible, available agent with capacity is not
  blocked from it, no such agent sits idle next to work it could take, and every reject
  block that ended was re-routed by its deadline (within grace_ms).
- check_structures: rebuilds every q:<Q>:avail:<ch>, q:<Q>:wait:<ch>, q:<Q>:age and
  q:<Q>:agents from the agent and interaction hashes and compares them to the real ones;
  loads against the interactions agents hold; reservations against offered interactions.

Queues are described here as dicts: {'channels': [...], 'skills': {skill: level},
'strategy': ..., 'overflow_skills': {...} or None, ...}; config_text() writes them as
omniccd config sections, and eligible_queues() mirrors daemon/router.c."""
import bisect
import heapq
import json

KEY = 'omnicc:{main}:'
CHANNELS = ('voice', 'email', 'fax', 'branch', 'webchat')
HELD = ('offered', 'assigned', 'wrapup')
EPS = 1e-6


def config_text(queues, routing):
    """[routing] and [queue NAME] sections for the given description."""
    out = ['[routing]'] + ['%s = %s' % kv for kv in routing.items()]
    for name, q in queues.items():
        out.append('[queue %s]' % name)
        out.append('channels = %s' % ' '.join(q['channels']))
        if q.get('skills'):
            out.append('skills = %s' % ' '.join('%s:%d' % kv for kv in q['skills'].items()))
        for k in ('strategy', 'sticky_seconds', 'overflow_after', 'overflow_queue', 'max_wait',
                  'on_max_wait', 'sla_seconds'):
            if q.get(k) is not None:
                out.append('%s = %s' % (k, q[k]))
        if q.get('overflow_skills') is not None:
            out.append('overflow_skills = %s' %
                       ' '.join('%s:%d' % kv for kv in q['overflow_skills'].items()))
    return '\n'.join(out) + '\n'


def meets(skills, req):
    return all(skills.get(s, 0) >= lvl for s, lvl in req.items())


def queue_table(queues):
    """Real and virtual (NAME~overflow) queues: name -> {'channels', 'skills', 'strategy'}."""
    t = {}
    for name, q in queues.items():
        t[name] = {'channels': list(q['channels']), 'skills': dict(q.get('skills') or {}),
                   'strategy': q.get('strategy', 'longest-idle')}
        if q.get('overflow_skills') is not None:
            t[name + '~overflow'] = {'channels': list(q['channels']),
                                     'skills': dict(q['overflow_skills']),
                                     'strategy': q.get('strategy', 'longest-idle')}
    return t


def pool_of(q):
    """The routing pool of a queue_table() entry, as the daemon names it (docs/ROUTING.md):
    queues with the same requirements and strategy share their indexes of agents."""
    return '%s/%s' % (q['strategy'], ','.join('%s:%d' % kv for kv in sorted(q['skills'].items())))


def eligible_queues(skills, queues):
    return {n for n, q in queue_table(queues).items() if meets(skills, q['skills'])}


def agent_free_for(a, load, ch):
    return (a['presence'] == 'available' and load.get(ch, 0) < a['cap'].get(ch, 0) and
            sum(load.values()) < a['cap_total'])


def read_events(r, start='-'):
    """Every entry of the events stream from start on: [(id, {at, type, agent, data})]."""
    out = []
    cur = start
    while True:
        page = r.xrange(KEY + 'events', cur, '+', count=5000)
        if cur != '-' and page and page[0][0] == cur[1:]:
            page = page[1:]
        if not page:
            return out
        for eid, f in page:
            out.append((eid, {'at': int(f['at']), 'type': f['type'], 'agent': f.get('agent', ''),
                              'data': json.loads(f.get('data') or '{}')}))
        cur = '(' + page[-1][0]


def events_added(r):
    """How many entries were ever added to the events stream (XINFO entries-added)."""
    info = r.xinfo_stream(KEY + 'events')
    return int(info.get('entries-added', info.get('length')))


def load_agents(r, ids):
    """{id: {'cap': {ch: n}, 'cap_total', 'skills', 'queues', 'presence', 'load', ...}}"""
    p = r.pipeline(transaction=False)
    for aid in ids:
        p.hgetall(KEY + 'agent:' + aid)
        p.smembers(KEY + 'agent:' + aid + ':queues')
    res = p.execute()
    out = {}
    for i, aid in enumerate(ids):
        h, qs = res[2 * i], res[2 * i + 1]
        if not h:
            continue
        out[aid] = {'h': h, 'queues': set(qs), 'presence': h.get('presence', 'offline'),
                    'cap': {ch: int(h.get('cap:' + ch, 0)) for ch in CHANNELS},
                    'cap_total': int(h.get('cap_total', 0)),
                    'load': {ch: int(h.get('load:' + ch, 0)) for ch in CHANNELS},
                    'load_total': int(h.get('load_total', 0)),
                    'skills': json.loads(h.get('skills') or '{}')}
    return out


def all_agent_ids(r):
    return list(r.zrange(KEY + 'agents', 0, -1))


def load_interactions(r, n_max=None):
    """Every interaction hash I-1..I-<seq:ix>: {id: hash}."""
    n = int(r.get(KEY + 'seq:ix') or 0) if n_max is None else n_max
    out = {}
    for start in range(1, n + 1, 2000):
        p = r.pipeline(transaction=False)
        ids = ['I-%d' % i for i in range(start, min(n, start + 1999) + 1)]
        for i in ids:
            p.hgetall(KEY + 'ix:' + i)
        for i, h in zip(ids, p.execute()):
            if h:
                out[i] = h
    return out


class Replay:
    """Walks the event log; see the module docstring. agents: as load_agents() returns
    (cap, cap_total and eligibility are taken as constant: tests do not PATCH agents while
    the log they check is written). scores: {interaction: wait_score}. queues: the queue
    description (eligibility is recomputed from skills and compared with the agents' sets).
    routing: reject_block (s). grace_ms: how long after a reject block ends the deadline
    sweep may take to re-route (the only window in which the invariant may lag)."""

    def __init__(self, agents, scores, queues, reject_block, grace_ms=3000,
                 check_priority=True, max_violations=200):
        self.qt = queue_table(queues)
        self.queues = queues
        self.scores = scores
        self.block_ms = reject_block * 1000
        self.grace = grace_ms
        self.check_priority = check_priority
        self.max_violations = max_violations
        self.violations = []
        self.nviol = {}
        self.counts = {}
        self.a = {}
        for aid, ag in agents.items():
            elig = eligible_queues(ag['skills'], queues)
            if elig != ag['queues']:
                self.violate(None, 'agent %s: eligible queues %s, daemon stored %s'
                             % (aid, sorted(elig), sorted(ag['queues'])))
            self.a[aid] = {'presence': 'offline', 'cap': ag['cap'], 'cap_total': ag['cap_total'],
                           'queues': elig}
        self.load = {aid: {} for aid in self.a}
        self.max_load = {aid: {} for aid in self.a}
        self.max_total = {aid: 0 for aid in self.a}
        self.ix = {}            # id -> {'queue', 'channel', 'state', 'agent'}
        self.wait = {}          # (Q, ch) -> sorted [(score, id)]
        self.avail = {}         # (Q, ch) -> set of agent ids free for it
        self.excl = {}          # (ix, agent) -> until ms
        self.excl_heap = []     # (until, ix, agent): blocks to see re-routed when they end
        self.accepted = {}      # ix -> times accepted
        self.offers = {}        # agent -> number of offers
        self.direct = {}        # ix -> agent: a transfer to an agent, offered next
        self.dirty_ix = set()
        self.dirty_agents = set()
        self.last_at = None
        self.cur_at = 0
        self.prev = None
        self.pos = None
        self.la = {aid: 0 for aid in self.a}    # last_activity as the scripts set it
        self.lo = {aid: 0 for aid in self.a}    # last_offer
        self.routing = None     # interaction the current script routes to the best agent
        self.strategy_checked = 0
        self.n = 0
        for aid in self.a:
            self._reindex(aid)

    # ---- state helpers ----
    def violate(self, eid, msg, kind=None):
        """kind: capacity | eligibility | priority | strategy | invariant | state (the default: the
        log contradicts itself or the replay); derived from the message when not given."""
        if kind is None:
            head = msg.split(':', 1)[0]
            kind = {'priority': 'priority', 'stranded': 'invariant', 'idle': 'invariant',
                    'block not re-routed': 'invariant',
                    'stranded at the end': 'invariant'}.get(head)
            if kind is None:
                if 'capacity' in msg or 'went negative' in msg:
                    kind = 'capacity'
                elif 'not eligible' in msg or 'eligible queues' in msg or 'blocked from it' in msg:
                    kind = 'eligibility'
                else:
                    kind = 'state'
        self.nviol[kind] = self.nviol.get(kind, 0) + 1
        if len(self.violations) < self.max_violations:
            self.violations.append('%s [%s] %s' % (eid or '-', kind, msg))

    def of_kind(self, *kinds):
        return [v for v in self.violations if v.split('] ', 1)[0].split('[')[-1] in kinds]

    def free_for(self, aid, ch):
        return agent_free_for(self.a[aid], self.load[aid], ch)

    def _reindex(self, aid):
        ag = self.a[aid]
        for q in ag['queues']:
            qd = self.qt.get(q)
            if not qd:
                continue
            for ch in qd['channels']:
                s = self.avail.setdefault((q, ch), set())
                if self.free_for(aid, ch):
                    s.add(aid)
                else:
                    s.discard(aid)

    def _wait_add(self, ixid):
        x = self.ix[ixid]
        sc = self.scores.get(ixid)
        if sc is None:
            self.violate(self.pos, '%s has no wait_score' % ixid)
            sc = 0.0
        bisect.insort(self.wait.setdefault((x['queue'], x['channel']), []), (sc, ixid))
        x['state'] = 'queued'
        x['agent'] = None
        self.dirty_ix.add(ixid)

    def _wait_remove(self, ixid):
        x = self.ix[ixid]
        if x['state'] != 'queued':
            return
        lst = self.wait.get((x['queue'], x['channel']), [])
        sc = self.scores.get(ixid, 0.0)
        i = bisect.bisect_left(lst, (sc, ixid))
        if i < len(lst) and lst[i][1] == ixid:
            del lst[i]
        else:
            self.violate(self.pos, '%s not found waiting in %s/%s' % (ixid, x['queue'], x['channel']))

    def _load(self, aid, ch, d):
        if aid not in self.a:
            self.violate(self.pos, 'event for unknown agent %r' % aid)
            return
        ld = self.load[aid]
        ld[ch] = ld.get(ch, 0) + d
        self.la[aid] = self.cur_at
        if d > 0:
            self.lo[aid] = self.cur_at
        if ld[ch] < 0:
            self.violate(self.pos, 'agent %s load on %s went negative' % (aid, ch))
        tot = sum(ld.values())
        self.max_load[aid][ch] = max(self.max_load[aid].get(ch, 0), ld[ch])
        self.max_total[aid] = max(self.max_total[aid], tot)
        if ld[ch] > self.a[aid]['cap'].get(ch, 0):
            self.violate(self.pos, 'agent %s over capacity on %s: %d > %d'
                         % (aid, ch, ld[ch], self.a[aid]['cap'].get(ch, 0)))
        if tot > self.a[aid]['cap_total']:
            self.violate(self.pos, 'agent %s over total capacity: %d > %d'
                         % (aid, tot, self.a[aid]['cap_total']))
        self._reindex(aid)
        if d < 0:
            self.dirty_agents.add(aid)

    def excluded(self, ixid, aid, at, grace=0):
        u = self.excl.get((ixid, aid))
        return u is not None and u + grace > at

    # ---- invariant at script boundaries ----
    def boundary(self, at):
        """The state here is one after a whole script: check what changed since the last."""
        for ixid in self.dirty_ix:
            x = self.ix.get(ixid)
            if not x or x['state'] != 'queued':
                continue
            for aid in self.avail.get((x['queue'], x['channel']), ()):
                if not self.excluded(ixid, aid, at, self.grace):
                    self.violate(self.pos, 'stranded: %s waits in %s/%s while %s is available '
                                 'with capacity and not blocked' % (ixid, x['queue'], x['channel'], aid))
                    break
        for aid in self.dirty_agents:
            ag = self.a[aid]
            for q in ag['queues']:
                qd = self.qt.get(q)
                if not qd:
                    continue
                for ch in qd['channels']:
                    if not self.free_for(aid, ch):
                        continue
                    for sc, ixid in self.wait.get((q, ch), ()):
                        if not self.excluded(ixid, aid, at, self.grace):
                            self.violate(self.pos, 'idle: %s is available with capacity on %s '
                                         'while %s waits in %s' % (aid, ch, ixid, q))
                            break
        self.dirty_ix.clear()
        self.dirty_agents.clear()
        # a reject block that ended: the block-end deadline must have re-routed the work
        h = self.excl_heap
        while h and h[0][0] + self.grace <= at:
            until, ixid, aid = heapq.heappop(h)
            x = self.ix.get(ixid)
            if (self.excl.get((ixid, aid)) != until or not x or x['state'] != 'queued' or
                    aid not in self.avail.get((x['queue'], x['channel']), ())):
                continue
            self.violate(self.pos, 'block not re-routed: %s\'s block on %s ended at %d; at %d '
                         '(%d ms later) %s still waits in %s/%s and %s is available with '
                         'capacity' % (aid, ixid, until, at, at - until, ixid, x['queue'],
                                       x['channel'], aid))

    # ---- the log ----
    def feed(self, entries):
        for eid, e in entries:
            if self.last_at is not None and e['at'] != self.last_at:
                self.boundary(self.last_at)
            self.pos = eid
            self.last_at = self.cur_at = e['at']
            if e['type'] not in ('agent.presence', 'offer'):
                self.routing = None
            self.n += 1
            self.counts[e['type']] = self.counts.get(e['type'], 0) + 1
            h = getattr(self, 'on_' + e['type'].replace('.', '_'), None)
            if h:
                h(eid, e, e['data'])
            self.prev = e

    def finish(self, now_ms=None):
        if self.last_at is not None:
            self.boundary(self.last_at)
        if now_ms is not None:
            # final state: every waiting interaction against every free agent
            for (q, ch), lst in self.wait.items():
                for aid in self.avail.get((q, ch), ()):
                    for sc, ixid in lst:
                        if not self.excluded(ixid, aid, now_ms):
                            self.violate('end', 'stranded at the end: %s waits in %s/%s while '
                                         '%s is available with capacity' % (ixid, q, ch, aid))
                            break

    def on_interaction_queued(self, eid, e, d):
        ixid = d['interaction']
        if ixid in self.ix:
            self.violate(eid, '%s queued twice' % ixid)
        self.ix[ixid] = {'queue': d['queue'], 'channel': d['channel'], 'state': 'new', 'agent': None}
        self._wait_add(ixid)
        self.routing = ixid

    def on_offer(self, eid, e, d):
        aid = e['agent']
        ixid = d['interaction']['id']
        x = self.ix.get(ixid)
        if x is None:
            self.violate(eid, 'offer of unknown %s' % ixid)
            return
        if aid not in self.a:
            self.violate(eid, 'offer to unknown agent %s' % aid)
            return
        ch = x['channel']
        if d['interaction']['channel'] != ch or d['interaction']['queue'] != x['queue']:
            self.violate(eid, 'offer of %s says %s/%s, replay has %s/%s' % (
                ixid, d['interaction']['queue'], d['interaction']['channel'], x['queue'], ch))
        if x['state'] != 'queued':
            self.violate(eid, 'offer of %s which is %s' % (ixid, x['state']))
        direct = self.direct.pop(ixid, None)
        ag = self.a[aid]
        if not self.free_for(aid, ch):
            self.violate(eid, 'offer of %s to %s who is %s with load %s (capacity %s, total %d)' % (
                ixid, aid, ag['presence'], self.load[aid], ag['cap'], ag['cap_total']),
                'capacity' if ag['presence'] == 'available' else 'eligibility')
        if direct is None:
            if x['queue'] not in ag['queues']:
                self.violate(eid, 'offer of %s (%s) to %s who is not eligible' % (ixid, x['queue'], aid))
            if self.excluded(ixid, aid, e['at']):
                self.violate(eid, 'offer of %s to %s who is blocked from it' % (ixid, aid))
            if self.check_priority:
                self._check_priority(eid, e, aid, ixid)
            if self.routing == ixid:
                self._check_strategy(eid, e, aid, ixid)
        elif direct != aid:
            self.violate(eid, '%s transferred to %s but offered to %s' % (ixid, direct, aid))
        self._wait_remove(ixid)
        x['state'] = 'offered'
        x['agent'] = aid
        x['resv'] = d['reservation']['id']
        self.offers[aid] = self.offers.get(aid, 0) + 1
        self._load(aid, ch, +1)

    def agent_score(self, aid, strategy):
        if strategy == 'least-occupied':
            occ = (100 * sum(self.load[aid].values())) // max(1, self.a[aid]['cap_total'])
            return occ * 1e13 + self.la[aid]
        if strategy == 'round-robin':
            return float(self.lo[aid])
        return float(self.la[aid])

    def _check_strategy(self, eid, e, aid, ixid):
        """An interaction routed to the best agent (arrival, back after a reject or timeout,
        transfer to a queue, overflow): the first of q:<Q>:avail:<ch> in the queue's
        strategy order that is not blocked from it (among the 16 the script looks at)."""
        self.routing = None
        x = self.ix[ixid]
        q = self.queues.get(x['queue']) or self.queues.get(x['queue'].split('~')[0]) or {}
        if q.get('sticky_seconds'):
            return
        strategy = self.qt[x['queue']]['strategy']
        cands = sorted(self.avail.get((x['queue'], x['channel']), ()),
                       key=lambda a: (self.agent_score(a, strategy), a))[:16]
        want = next((a for a in cands if not self.excluded(ixid, a, e['at'])), None)
        self.strategy_checked += 1
        if want != aid:
            self.violate(eid, 'strategy: %s (%s/%s, %s) offered to %s; the %s order gives %s '
                         '(scores: %s %s, %s %s)' % (
                             ixid, x['queue'], x['channel'], strategy, aid, strategy, want, aid,
                             self.agent_score(aid, strategy), want,
                             want and self.agent_score(want, strategy)), 'strategy')

    def _check_priority(self, eid, e, aid, ixid):
        mine = self.scores.get(ixid, 0.0)
        for q in self.a[aid]['queues']:
            qd = self.qt.get(q)
            if not qd:
                continue
            for ch in qd['channels']:
                if not self.free_for(aid, ch):
                    continue
                for sc, other in self.wait.get((q, ch), ()):
                    if sc >= mine - EPS:
                        break
                    # a block that ended takes effect when the sweep re-routes it (the
                    # deadline check holds that to grace_ms); until then new arrivals may
                    # go first, as the invariant check above allows too
                    if other != ixid and not self.excluded(other, aid, e['at'], self.grace):
                        p = self.prev or {}
                        back = (p.get('type') == 'interaction.transferred' and
                                p['data'].get('interaction') == ixid and
                                p['data'].get('agent') == aid and p['data'].get('to_queue'))
                        self.violate(eid, 'priority: %s (score %.3f) offered to %s while %s '
                                     '(score %.3f, %s/%s) waited and %s could take it%s%s' % (
                                         ixid, mine, aid, other, sc, q, ch, aid,
                                         ' (the same script: %s had just transferred %s to '
                                         'queue %s and got it back)' % (aid, ixid, back)
                                         if back else '',
                                         ' (its block for %s had ended %d ms before)' % (
                                             aid, e['at'] - self.excl[(other, aid)])
                                         if (other, aid) in self.excl else ''))
                        return

    def _end_offer(self, eid, e, d, how):
        ixid, aid = d['interaction'], d['agent']
        x = self.ix.get(ixid)
        if x is None:
            return
        if x['state'] != 'offered' or x['agent'] != aid or x.get('resv') != d['reservation']:
            self.violate(eid, 'offer.%s of %s by %s, replay has it %s by %s' % (
                how, ixid, aid, x['state'], x['agent']))
            return
        self._load(aid, x['channel'], -1)
        if how == 'withdrawn':
            x['state'] = 'withdrawn'
            x['agent'] = None
            return
        if self.block_ms > 0:
            self.excl[(ixid, aid)] = e['at'] + self.block_ms
            heapq.heappush(self.excl_heap, (e['at'] + self.block_ms, ixid, aid))
        self._wait_add(ixid)
        self.routing = ixid

    def on_offer_rejected(self, eid, e, d):
        self._end_offer(eid, e, d, 'rejected')

    def on_offer_timeout(self, eid, e, d):
        self._end_offer(eid, e, d, 'timeout')

    def on_offer_withdrawn(self, eid, e, d):
        self._end_offer(eid, e, d, 'withdrawn')

    def on_offer_accepted(self, eid, e, d):
        ixid, aid = d['interaction'], d['agent']
        self.accepted[ixid] = self.accepted.get(ixid, 0) + 1
        x = self.ix.get(ixid)
        if x is None or x['state'] != 'offered' or x['agent'] != aid:
            self.violate(eid, 'accepted %s by %s, replay has it %s' % (ixid, aid, x and x['state']))
            return
        x['state'] = 'assigned'

    def on_interaction_wrapup(self, eid, e, d):
        x = self.ix.get(d['interaction'])
        if x is None or x['state'] != 'assigned':
            self.violate(eid, 'wrap-up of %s, replay has it %s' % (d['interaction'], x and x['state']))
            return
        x['state'] = 'wrapup'

    def _release(self, eid, x, ixid):
        if x['state'] in ('assigned', 'wrapup') and x['agent']:
            self._load(x['agent'], x['channel'], -1)
        elif x['state'] == 'queued':
            self._wait_remove(ixid)
        elif x['state'] == 'offered':
            self.violate(eid, '%s ended while offered without a withdrawal' % ixid)
            self._load(x['agent'], x['channel'], -1)

    def _ended(self, eid, d, state):
        ixid = d['interaction']
        x = self.ix.get(ixid)
        if x is None:
            return
        self._release(eid, x, ixid)
        x['state'] = state

    def on_interaction_completed(self, eid, e, d):
        x = self.ix.get(d['interaction'])
        if x is not None and x['state'] not in ('assigned', 'wrapup'):
            self.violate(eid, 'completed %s which is %s' % (d['interaction'], x['state']))
        self._ended(eid, d, 'completed')

    def on_interaction_abandoned(self, eid, e, d):
        self._ended(eid, d, 'abandoned')

    def on_interaction_canceled(self, eid, e, d):
        self._ended(eid, d, 'canceled')

    def on_interaction_transferred(self, eid, e, d):
        ixid = d['interaction']
        x = self.ix.get(ixid)
        if x is None or x['state'] != 'assigned':
            self.violate(eid, 'transfer of %s which is %s' % (ixid, x and x['state']))
            return
        self._load(x['agent'], x['channel'], -1)
        from_agent = x['agent']
        x['agent'] = None
        if not d.get('to_agent') and self.block_ms > 0 and from_agent:
            # the agent that sent it to a queue is not handed it back (like a reject)
            self.excl[(ixid, from_agent)] = e['at'] + self.block_ms
            heapq.heappush(self.excl_heap, (e['at'] + self.block_ms, ixid, from_agent))
        if d.get('to_agent'):
            x['state'] = 'queued'   # not in a waiting set: offered directly next
            self.direct[ixid] = d['to_agent']
            lst = self.wait.setdefault((x['queue'], x['channel']), [])
            bisect.insort(lst, (self.scores.get(ixid, 0.0), ixid))  # reserve() dequeues it
        else:
            x['queue'] = d['to_queue']
            self._wait_add(ixid)
            self.routing = ixid

    def on_interaction_overflowed(self, eid, e, d):
        ixid = d['interaction']
        x = self.ix.get(ixid)
        if x is None or x['state'] != 'queued':
            return
        self._wait_remove(ixid)
        x['queue'] = d['to_queue']
        self._wait_add(ixid)
        self.routing = ixid

    def on_interaction_max_wait(self, eid, e, d):
        x = self.ix.get(d['interaction'])
        if x is not None and d.get('action') == 'close' and x['state'] == 'queued':
            self._wait_remove(d['interaction'])
            x['state'] = 'canceled'

    def on_agent_presence(self, eid, e, d):
        aid = d['agent']
        if aid not in self.a:
            return
        self.a[aid]['presence'] = d['presence']
        self.la[aid] = e['at']
        self._reindex(aid)
        if d['presence'] == 'available':
            self.dirty_agents.add(aid)

    # ---- results ----
    def waiting_sets(self):
        return {k: {i for _, i in v} for k, v in self.wait.items() if v}

    def compare_with(self, agents, ixs):
        """The replayed end state against Redis: loads, presence, interaction states."""
        bad = []
        for aid, ag in agents.items():
            if aid not in self.a:
                continue
            for ch in CHANNELS:
                if ag['load'][ch] != self.load[aid].get(ch, 0):
                    bad.append('agent %s load:%s redis %d, replay %d' % (
                        aid, ch, ag['load'][ch], self.load[aid].get(ch, 0)))
            if ag['presence'] != self.a[aid]['presence']:
                bad.append('agent %s presence redis %s, replay %s' % (
                    aid, ag['presence'], self.a[aid]['presence']))
        for ixid, x in self.ix.items():
            h = ixs.get(ixid)
            if h is None:
                bad.append('%s in the log but not in Redis' % ixid)
                continue
            st = x['state'] if x['state'] != 'withdrawn' else h.get('state')
            if h.get('state') != st:
                bad.append('%s state redis %s, replay %s' % (ixid, h.get('state'), x['state']))
            elif st in HELD and h.get('agent') != x['agent']:
                bad.append('%s held by %s in redis, %s in replay' % (ixid, h.get('agent'), x['agent']))
            elif st == 'queued' and (h.get('queue') != x['queue']):
                bad.append('%s waits in %s in redis, %s in replay' % (ixid, h.get('queue'), x['queue']))
        return bad


def agent_activity(ag):
    if ag['presence'] != 'available':
        return ag['presence'] or 'offline'
    return 'busy' if ag['load_total'] > 0 else 'available'


def agent_score(h, strategy):
    la = float(h.get('last_activity') or 0)
    if strategy == 'least-occupied':
        occ = (100 * int(h.get('load_total') or 0)) // max(1, int(h.get('cap_total') or 1))
        return occ * 1e13 + la
    if strategy == 'round-robin':
        return float(h.get('last_offer') or 0)
    return la


def check_structures(r, queues, agents=None, ixs=None, now_ms=None):
    """Rebuild every routing index from the agent and interaction hashes and compare with
    Redis. Returns a list of differences (empty when nothing drifted)."""
    qt = queue_table(queues)
    if agents is None:
        agents = load_agents(r, all_agent_ids(r))
    if ixs is None:
        ixs = load_interactions(r)
    bad = []
    want_avail, want_wait, want_age, want_counts, want_heads = {}, {}, {}, {}, {}
    for q in qt:
        p = pool_of(qt[q])
        want_counts[p] = {}
        for ch in qt[q]['channels']:
            want_avail[(p, ch)] = {}
            want_heads[(p, ch)] = {}
            want_wait[(q, ch)] = {}
        want_age[q] = {}
    held = {}
    for aid, ag in agents.items():
        load = ag['load']
        if sum(load.values()) != ag['load_total']:
            bad.append('agent %s: load_total %d but per-channel loads sum to %d'
                       % (aid, ag['load_total'], sum(load.values())))
        for ch in CHANNELS:
            if load[ch] > ag['cap'][ch]:
                bad.append('agent %s: load %d > capacity %d on %s' % (aid, load[ch], ag['cap'][ch], ch))
        if ag['load_total'] > ag['cap_total']:
            bad.append('agent %s: load_total %d > cap_total %d' % (aid, ag['load_total'], ag['cap_total']))
        act = agent_activity(ag)
        counted = set()
        for q in ag['queues']:
            if q not in qt:
                bad.append('agent %s: eligible for unknown queue %s' % (aid, q))
                continue
            p = pool_of(qt[q])
            if p not in counted:
                counted.add(p)
                want_counts[p][act] = want_counts[p].get(act, 0) + 1
            for ch in qt[q]['channels']:
                if agent_free_for(ag, load, ch):
                    want_avail[(p, ch)][aid] = agent_score(ag['h'], qt[q]['strategy'])
    for ixid, h in ixs.items():
        st = h.get('state')
        if st == 'queued':
            key = (h['queue'], h['channel'])
            if key not in want_wait:
                bad.append('%s queued in %s which does not serve %s' % (ixid, h['queue'], h['channel']))
                continue
            want_wait[key][ixid] = float(h['wait_score'])
            want_age[h['queue']][ixid] = float(h['created_at'])
        elif st in HELD:
            k = (h.get('agent'), h['channel'])
            held[k] = held.get(k, 0) + 1
            if st == 'offered' and not h.get('reservation'):
                bad.append('%s offered without a reservation' % ixid)
    for aid, ag in agents.items():
        for ch in CHANNELS:
            if held.get((aid, ch), 0) != ag['load'][ch]:
                bad.append('agent %s: load %d on %s but holds %d interactions there'
                           % (aid, ag['load'][ch], ch, held.get((aid, ch), 0)))
    for k in list(held):
        if k[0] not in agents:
            bad.append('interactions held by unknown agent %s' % (k,))

    def zset(key):
        return {m: s for m, s in r.zrange(key, 0, -1, withscores=True)}

    for (p, ch), want in want_avail.items():
        got = zset('%spool:%s:avail:%s' % (KEY, p, ch))
        if set(got) != set(want):
            bad.append('pool:%s:avail:%s drifted: missing %s, extra %s' % (
                p, ch, sorted(set(want) - set(got))[:10], sorted(set(got) - set(want))[:10]))
        else:
            for m, s in want.items():
                if abs(got[m] - s) > 1.0:
                    bad.append('pool:%s:avail:%s: %s score %r, agent hash gives %r' % (p, ch, m, got[m], s))
                    break
    for (q, ch), want in want_wait.items():
        got = zset('%sq:%s:wait:%s' % (KEY, q, ch))
        if set(got) != set(want):
            bad.append('q:%s:wait:%s drifted: missing %s, extra %s' % (
                q, ch, sorted(set(want) - set(got))[:10], sorted(set(got) - set(want))[:10]))
        else:
            for m, s in want.items():
                if abs(got[m] - s) > 1e-3:
                    bad.append('q:%s:wait:%s: %s score %r, wait_score %r' % (q, ch, m, got[m], s))
                    break
    for (q, ch), want in want_wait.items():
        if want:
            want_heads[(pool_of(qt[q]), ch)][q] = min(want.values())
    for (p, ch), want in want_heads.items():
        got = zset('%spool:%s:heads:%s' % (KEY, p, ch))
        if set(got) != set(want) or any(abs(got[q] - s) > 1e-3 for q, s in want.items()):
            bad.append('pool:%s:heads:%s %s, the wait sets give %s' % (p, ch, got, want))
    for q, want in want_age.items():
        got = zset('%sq:%s:age' % (KEY, q))
        if set(got) != set(want):
            bad.append('q:%s:age drifted: missing %s, extra %s' % (
                q, sorted(set(want) - set(got))[:10], sorted(set(got) - set(want))[:10]))
    for p, want in want_counts.items():
        got = {k: int(v) for k, v in r.hgetall('%spool:%s:agents' % (KEY, p)).items() if int(v) != 0}
        if got != want:
            bad.append('pool:%s:agents counts %s, agents give %s' % (p, got, want))
    # open reservations <-> offered interactions, each with its deadline
    resv_ids = set()
    for k in r.scan_iter(match=KEY + 'resv:*', count=1000):
        resv_ids.add(k[len(KEY) + 5:])
    offered = {h['reservation']: i for i, h in ixs.items() if h.get('state') == 'offered'}
    if resv_ids != set(offered):
        bad.append('reservations %s vs offered interactions %s' % (
            sorted(resv_ids - set(offered))[:10], sorted(set(offered) - resv_ids)[:10]))
    deadlines = set(r.zrange(KEY + 'deadlines', 0, -1))
    for rid in offered:
        if 'resv:' + rid not in deadlines:
            bad.append('reservation %s has no deadline' % rid)
    return bad


def stranded(r, queues, agents=None, ixs=None, now_ms=None, grace_ms=0):
    """Interactions left waiting that an eligible, available agent with capacity (not blocked
    from it) could take, and offers left open past their expiry, from Redis alone:
    [(ix, state, agent)]. grace_ms: how long after a reject block or an offer expires the
    deadline sweep may take (0 when the floor has been quiet for a while)."""
    qt = queue_table(queues)
    if agents is None:
        agents = load_agents(r, all_agent_ids(r))
    if ixs is None:
        ixs = load_interactions(r)
    if now_ms is None:
        t = r.time()
        now_ms = t[0] * 1000 + t[1] // 1000
    free = {}   # (queue, channel) -> agents available with capacity there
    for aid, ag in agents.items():
        for q in ag['queues']:
            for ch in qt.get(q, {}).get('channels', ()):
                if agent_free_for(ag, ag['load'], ch):
                    free.setdefault((q, ch), []).append(aid)
    out = []
    for ixid, h in ixs.items():
        if h.get('state') == 'offered':
            exp = r.hget('%sresv:%s' % (KEY, h.get('reservation')), 'expires_at')
            if exp is None or int(exp) + grace_ms < now_ms:
                out.append((ixid, 'offered', h.get('agent')))
            continue
        cands = free.get((h.get('queue'), h.get('channel')))
        if h.get('state') != 'queued' or not cands:
            continue
        excl = {k: int(v) for k, v in r.hgetall('%six:%s:excl' % (KEY, ixid)).items()}
        for aid in cands:
            if excl.get(aid, 0) + grace_ms <= now_ms:
                out.append((ixid, 'queued', aid))
                break
    return out


def sanitized_build(omniccd):
    """True when omniccd was built with AddressSanitizer (tests scale down: it runs several
    times slower there)."""
    try:
        with open(omniccd, 'rb') as f:
            return b'__asan_init' in f.read()
    except OSError:
        return False
