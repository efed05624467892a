"""The analytical CRM (docs/ANALYTICS.md, docs/EXPORT.md, docs/API.md "Data rights") against
a real redis-server and omniccd: the service report kept as things happen (hour buckets,
the insurer's zone for days and weeks, a daylight-saving day, empty periods, interactions
spanning buckets, the segment at the time of contact), the warehouse export (resumable
cursor, exactly once across a restart, CSV and NDJSON from the command line, loaded into a
real PostgreSQL whose SQL reproduces the report figure for figure), `reports rebuild`
equal to the live counters after a random run, and data rights (access export, legal hold,
erasure that leaves nothing of the person in lookups, cases, reports, export, attachments),
every access audited."""
import calendar
import csv
import datetime
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
from test_routing import BASE, Floor

TZ = 'Europe/Madrid'
CONFIG = '''
[analytics]
timezone = Europe/Madrid
[routing]
boost_voice = 0
boost_webchat = 0
boost_email = 0
boost_fax = 0
boost_branch = 0
reject_block = 0
offer_timeout_voice = 120
offer_timeout_email = 120
offer_timeout_webchat = 120
[queue default]
channels = voice email fax branch webchat
sla_seconds = 20
[queue claims]
channels = voice email
skills = claims
sla_seconds = 1
'''
RAW = ['offered', 'answered', 'abandoned', 'answered_in_sla', 'wait_ms', 'handled',
       'handle_ms', 'wrap_ms', 'transfers', 'timed_out', 'new_cases', 'repeat_cases']
DIMS = ['channel', 'queue', 'segment', 'branch', 'agent']


def read_doc(name):
    with open(os.path.join(os.path.dirname(__file__), '..', '..', 'docs', name)) as f:
        return f.read()


def utc_hour(y, m, d, h):
    return calendar.timegm((y, m, d, h, 0, 0)) // 3600


class Reports(Floor):
    def report(self, q, expect=200):
        st, out, _ = self.d.get('/v1/reports/service?' + q)
        self.assertEqual(st, expect, out)
        return out

    def today_query(self, group_by='channel', interval='day'):
        # the local day (Madrid) around now, padded: a run near midnight stays inside
        now = datetime.datetime.utcnow()
        a = (now - datetime.timedelta(days=1)).strftime('%Y-%m-%d')
        b = (now + datetime.timedelta(days=2)).strftime('%Y-%m-%d')
        return 'from=%s&to=%s&interval=%s&group_by=%s' % (a, b, interval, group_by)

    def rollup_keys(self, pattern='rp:*'):
        out = {}
        for k in self.redis.raw('KEYS', BASE + pattern):
            if not k:  # no key at all
                continue
            lines = self.redis.raw('HGETALL', k)
            out[k] = dict(zip(lines[0::2], lines[1::2]))
        return out


class LiveReportTest(Reports, harness.TestCase):
    """One random run through the API; every assertion compares against the run's own model."""
    extra_config = CONFIG

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = None

    def setUp(self):
        if LiveReportTest.model is None:
            LiveReportTest.model = False  # one attempt: a failed run fails every test
            LiveReportTest.model = self.run_floor()
        if LiveReportTest.model is False:
            self.fail('the random run failed (see the first failure)')

    def import_customers(self, recs):
        body = ''.join(json.dumps(r) + '\n' for r in recs)
        st, out, _ = self.d.post('/v1/customers/import', body, content_type='application/x-ndjson')
        self.assertEqual(st, 200, out)

    def run_floor(self):
        rnd = random.Random(4242)
        # policyholders: segments from premium x loyalty (docs/ANALYTICS.md)
        self.import_customers([
            {'id': 'H-1', 'name': 'Ana', 'phones': ['600111001'], 'annual_premium': 2400,
             'tenure_years': 9, 'claims_last_3y': 0},            # platinum
            {'id': 'H-2', 'name': 'Bea', 'phones': ['600111002'], 'annual_premium': 2400,
             'tenure_years': 1, 'claims_last_3y': 0},            # gold
            {'id': 'H-3', 'name': 'Cai', 'phones': ['600111003'], 'annual_premium': 700,
             'tenure_years': 1, 'claims_last_3y': 0},            # silver
        ])
        segs = {'600111001': 'platinum', '600111002': 'gold', '600111003': 'silver'}
        self.make_agent('an-a1', {'claims': 1}, {'voice': 10, 'email': 10, 'webchat': 10, 'fax': 10})
        self.make_agent('an-a2', {'claims': 1}, {'voice': 10, 'email': 10, 'webchat': 10, 'fax': 10})
        m = {'offered': {}, 'answered': 0, 'abandoned': 0, 'transfers': 0, 'handled': 0,
             'in_sla': 0, 'by_segment': {}, 'by_queue': {}, 'by_agent': {}, 'ids': [],
             'cases': {}}

        def bump(d, k, n=1):
            d[k] = d.get(k, 0) + n

        for n in range(36):
            ch = rnd.choice(['voice', 'voice', 'email', 'webchat', 'fax'])
            phone = rnd.choice(list(segs) + [None])
            queue = 'claims' if ch in ('voice', 'email') and rnd.random() < 0.4 else 'default'
            if n == 35:  # a segment change between two contacts of the same person
                self.import_customers([{'id': 'H-3', 'name': 'Cai', 'phones': ['600111003'],
                                        'annual_premium': 100, 'tenure_years': 1,
                                        'claims_last_3y': 0}])
                segs['600111003'] = 'standard'
                phone, ch, queue = '600111003', 'voice', 'default'
            body = {'channel': ch, 'external_id': self.ext('an'), 'queue': queue,
                    'subject': 'contact %d' % n}
            if phone:
                body['customer'] = {'phone': phone}
            out = self.ingest(**body)
            iid = out['id']
            m['ids'].append(iid)
            bump(m['cases'], out['case_id'])
            bump(m['offered'], ch)
            bump(m['by_segment'], segs.get(phone, 'standard'))
            bump(m['by_queue'], queue)
            x = self.wait_state(iid, 'offered')
            action = rnd.choice(['complete', 'wrapup', 'transfer', 'abandon', 'late'])
            if n == 35:
                action = 'complete'
            if action == 'abandon':
                self.work(iid, 'abandon', {'reason': 'hung-up'})
                m['abandoned'] += 1
                continue
            if action == 'late':
                if queue != 'claims':
                    action = 'complete'
                else:
                    time.sleep(1.1)  # beyond the claims queue's 1 s target
            self.accept(x['reservation'])
            m['answered'] += 1
            bump(m['by_agent'], x['agent'])
            if action != 'late':
                m['in_sla'] += 1
            if action == 'transfer':
                self.work(iid, 'transfer', {'queue': 'default', 'note': 'to general'})
                m['transfers'] += 1
                y = self.wait_state(iid, 'offered')
                self.accept(y['reservation'])
            if action == 'wrapup':
                self.work(iid, 'wrapup', {'disposition': 'done'})
            else:
                self.work(iid, 'complete')
            m['handled'] += 1
        return m

    def test_totals_match_the_run(self):
        m = self.model
        rep = self.report(self.today_query('channel'))
        t = rep['total']
        self.assertEqual(t['offered'], len(m['ids']))
        self.assertEqual(t['answered'], m['answered'])
        self.assertEqual(t['abandoned'], m['abandoned'])
        self.assertEqual(t['transfers'], m['transfers'])
        self.assertEqual(t['handled'], m['handled'])
        self.assertEqual(t['answered_in_sla'], m['in_sla'])
        self.assertAlmostEqual(t['abandon_rate'], round(m['abandoned'] / len(m['ids']), 4))
        self.assertAlmostEqual(t['service_level'],
                               round(m['in_sla'] / (m['answered'] + m['abandoned']), 4))
        self.assertEqual({g['key']: g['offered'] for g in rep['groups']}, m['offered'])
        self.assertGreater(t['wait_ms'], 0)
        self.assertIsNotNone(t['asa_seconds'])
        self.assertIsNotNone(t['aht_seconds'])
        self.assertEqual(t['contacts_per_case'], round(t['offered'] / t['new_cases'], 4))
        # first-contact resolution: cases with a second contact, counted where they opened
        self.assertEqual(t['new_cases'], len(m['cases']))
        repeats = sum(1 for n in m['cases'].values() if n > 1)
        self.assertGreater(repeats, 0)
        self.assertEqual(t['repeat_cases'], repeats)
        self.assertAlmostEqual(t['fcr_rate'], round(1 - repeats / len(m['cases']), 4))
        # the day of the run is one of three local days; the others are empty, with zeros
        self.assertEqual(len(rep['periods']), 3)
        self.assertEqual(sum(p['total']['offered'] for p in rep['periods']), len(m['ids']))
        empty = [p for p in rep['periods'] if p['total']['offered'] == 0]
        self.assertTrue(empty)
        self.assertEqual(empty[0]['groups'], [])
        self.assertIsNone(empty[0]['total']['service_level'])

    def test_every_dimension_adds_up(self):
        m = self.model
        seg = self.report(self.today_query('segment'))
        self.assertEqual({g['key']: g['offered'] for g in seg['groups']}, m['by_segment'])
        que = self.report(self.today_query('queue'))
        self.assertEqual({g['key']: g['offered'] for g in que['groups']}, m['by_queue'])
        ag = self.report(self.today_query('agent'))
        got = {g['key']: g['answered'] for g in ag['groups'] if g['answered']}
        self.assertEqual(got, m['by_agent'])
        self.assertEqual(sum(g['offered'] for g in ag['groups'] if g['key'] == '-'), len(m['ids']))
        br = self.report(self.today_query('branch'))
        self.assertEqual([g['key'] for g in br['groups']], ['-'])
        for rep in (seg, que, ag, br):
            for f in RAW:
                if rep['group_by'] != 'agent' or f not in ('offered', 'abandoned', 'new_cases',
                                                           'repeat_cases'):
                    self.assertEqual(sum(g[f] for g in rep['groups']), rep['total'][f], (rep['group_by'], f))

    def test_day_counters_equal_the_hours(self):
        # today's local day is read from the day counters rd:<day>:<dim> (counted from today:
        # the map 'rdays' was made on a fresh database) plus the hours not yet folded into
        # them, the hour report from the hour hashes
        self.assertEqual(self.redis.cli('HGET', BASE + 'rdays', 'zone'), 'Europe/Madrid')
        now_hour = int(time.time()) // 3600
        self.assertLessEqual(int(self.redis.cli('HGET', BASE + 'rdays', 'from')), now_hour)
        self.assertTrue(self.redis.cli('HGET', BASE + 'rdays', str(now_hour + 24)))  # ahead
        # the fold mark of a fresh database is the hour it started in; the run's hour has
        # not ended, so ingest wrote the hour hash only and no day counter exists yet
        mark = int(self.redis.cli('HGET', BASE + 'rdays', 'folded'))
        self.assertIn(mark, (now_hour - 1, now_hour))
        self.assertEqual(self.rollup_keys('rd:*'), {})
        for dim in ('channel', 'queue', 'segment', 'branch', 'agent'):
            day = self.report(self.today_query(dim, 'day'))
            hour = self.report(self.today_query(dim, 'hour'))
            self.assertEqual(day['groups'], hour['groups'], dim)
            self.assertEqual(day['total'], hour['total'], dim)
            week = self.report(self.today_query(dim, 'week'))
            self.assertEqual(week['groups'], hour['groups'], dim)

    def test_segment_is_the_one_at_the_time_of_contact(self):
        # H-3 was silver for its earlier contacts and standard for the last one
        st, c, _ = self.d.get('/v1/customers?phone=600111003')
        self.assertEqual((st, c['segment']), (200, 'standard'))
        last = self.ix(self.model['ids'][-1])
        self.assertEqual(last['segment'], 'standard')
        seg = self.report(self.today_query('segment'))
        self.assertIn('silver', [g['key'] for g in seg['groups']])

    def test_hour_interval_and_csv(self):
        rep = self.report(self.today_query('channel', 'hour'))
        self.assertEqual(len(rep['periods']), sum(p['hours'] for p in rep['periods']))
        self.assertEqual(sum(p['total']['offered'] for p in rep['periods']), len(self.model['ids']))
        st, body, h = self.d.request('GET', '/v1/reports/service?format=csv&' + self.today_query('queue'),
                                     raw=True)
        self.assertEqual(st, 200)
        self.assertTrue(h['content-type'].startswith('text/csv'))
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        tot = [r for r in rows if r['queue'] == '(total)']
        self.assertEqual(sum(int(r['offered']) for r in tot), len(self.model['ids']))

    def test_bad_requests(self):
        self.report('from=2026-01-01&to=2026-01-02&interval=month', 400)
        self.report('from=2026-01-01&to=2026-01-02&group_by=colour', 400)
        self.report('from=yesterday&to=2026-01-02', 400)
        self.report('from=2026-01-02&to=2026-01-01', 400)
        self.report('from=2000-01-01&to=2026-01-01', 400)  # beyond report_max_days
        st, _, _ = self.d.get('/v1/reports/service?from=2026-01-01&to=2026-01-02', auth=False)
        self.assertEqual(st, 401)

    def export_all(self, limit=7, restart_after=None):
        cursor, ids, lines, pages = '0', [], [], 0
        while True:
            st, body, h = self.d.request('GET', '/v1/export/events?cursor=%s&limit=%d' % (cursor, limit),
                                         raw=True)
            self.assertEqual(st, 200, body)
            page = [json.loads(l) for l in body.decode().splitlines()]
            if not page:
                self.assertEqual(h['omnicc-next-cursor'], cursor)
                return ids, lines
            lines.extend(page)
            ids.extend(e['id'] for e in page)
            cursor = h['omnicc-next-cursor']
            self.assertEqual(cursor, page[-1]['id'])
            pages += 1
            if restart_after is not None and pages == restart_after:
                self.d.stop()
                self.d.start()

    def test_export_resumes_exactly_once_across_a_restart(self):
        ids, lines = self.export_all(limit=7, restart_after=3)
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(ids, sorted(ids, key=lambda i: tuple(int(x) for x in i.split('-'))))
        self.assertEqual(len(ids), int(self.redis.raw('XLEN', BASE + 'xs')[0]))
        self.assertTrue(all(e['v'] == 1 for e in lines))
        kinds = {e['kind'] for e in lines}
        self.assertEqual(kinds, {'case_event', 'fact'})
        # pseudonymous: no texts, no addresses
        text = json.dumps(lines)
        for needle in ('contact 1', '600111', 'Ana', 'hung-up', 'to general'):
            self.assertNotIn(needle, text)
        st, _, _ = self.d.get('/v1/export/events?cursor=nonsense')
        self.assertEqual(st, 400)

    def test_export_cursor_older_than_the_stream_is_gone(self):
        st, body, _ = self.d.request('GET', '/v1/export/events?cursor=1-0&limit=1', raw=True)
        self.assertEqual(st, 410, body)

    def cli(self, *args):
        out = subprocess.run([harness.OMNICCD, '-c', self.d.config_path] + list(args),
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout

    def test_cli_export_ndjson_and_csv(self):
        nd = [json.loads(l) for l in self.cli('export', '--since', '0', '--format', 'ndjson').splitlines()]
        self.assertEqual(len(nd), int(self.redis.raw('XLEN', BASE + 'xs')[0]))
        mid = nd[len(nd) // 2]['id']
        rest = self.cli('export', '--since', mid).splitlines()
        self.assertEqual([json.loads(l)['id'] for l in rest], [e['id'] for e in nd if
                                                                 tuple(map(int, e['id'].split('-'))) >
                                                                 tuple(map(int, mid.split('-')))])
        facts = list(csv.DictReader(io.StringIO(self.cli('export', '--format', 'csv', '--table', 'facts'))))
        self.assertEqual(len(facts), sum(1 for e in nd if e['kind'] == 'fact'))
        self.assertEqual(sum(int(f['offered']) for f in facts), len(self.model['ids']))
        future = (datetime.datetime.utcnow() + datetime.timedelta(days=1)).strftime('%Y-%m-%dT00:00Z')
        self.assertEqual(self.cli('export', '--since', future), '')

    def test_rebuild_equals_live(self):
        # from the case histories (RebuildTest covers every channel and figure), then from
        # the export stream; each after the live counters were damaged
        before = self.rollup_keys()
        self.assertTrue(before)
        for args, counted in ((('reports', 'rebuild'), 'facts'),
                              (('reports', 'rebuild', '--from-export'), 'facts_replayed')):
            k = sorted(before)[0]
            self.redis.cli('HINCRBY', k, sorted(before[k])[0], 1000)
            self.redis.cli('DEL', sorted(before)[-1])
            out = json.loads(self.cli(*args))
            self.assertGreater(out[counted], 0)
            self.assertEqual(self.rollup_keys(), before, args)

    def test_postgres_reproduces_the_report(self):
        pg = PostgresFixture.get()
        if pg is None:
            self.skipTest('PostgreSQL (postgresql-15) not installed')
        tmp = tempfile.mkdtemp(prefix='omnicc-pgload-')
        try:
            ev = os.path.join(tmp, 'events.csv')
            fa = os.path.join(tmp, 'facts.csv')
            with open(ev, 'w') as f:
                f.write(self.cli('export', '--format', 'csv', '--table', 'events'))
            with open(fa, 'w') as f:
                f.write(self.cli('export', '--format', 'csv', '--table', 'facts'))
            schema = read_doc('export_schema.sql')
            pg.psql(schema)
            pg.psql("\\copy omnicc_events FROM '%s' WITH (FORMAT csv, HEADER true)\n"
                    "\\copy omnicc_facts FROM '%s' WITH (FORMAT csv, HEADER true)\n" % (ev, fa))
            for group_by, interval in (('channel', 'day'), ('segment', 'day'), ('queue', 'hour'),
                                       ('agent', 'week')):
                rep = self.report(self.today_query(group_by, interval))
                frm, to = rep['from'], rep['to']
                sql = read_doc('export_report.sql')
                sql = (sql.replace(':tz', "'%s'" % TZ).replace(':interval', "'%s'" % interval)
                       .replace(':group_by', group_by).replace(':from', "'%s'" % frm)
                       .replace(':to', "'%s'" % to))
                rows = pg.query(sql)
                fields = ['offered', 'answered', 'abandoned', 'answered_in_sla', 'service_level',
                          'asa_seconds', 'aht_seconds', 'transfers', 'handled', 'new_cases',
                          'contacts_per_case', 'repeat_cases', 'fcr_rate']
                got = {(r[0], r[1]): dict(zip(fields, r[2:])) for r in rows}
                want = {}
                for p in rep['periods']:
                    start = p['start'][:19].replace('T', ' ')
                    for g in p['groups']:
                        want[(start, g['key'])] = {k: g[k] for k in fields}
                self.assertTrue(want)
                self.assertEqual(set(got), set(want), (group_by, interval))
                for k, w in want.items():
                    for f, v in w.items():
                        gv = got[k][f]
                        if v is None or gv is None:
                            self.assertEqual((f, gv), (f, v), (group_by, k))
                        else:
                            self.assertAlmostEqual(float(gv), float(v), places=3, msg=(group_by, k, f))
            # ASA from the case events themselves (first acceptance per interaction) agrees
            asa_events = pg.query(
                "SELECT sum(w) FROM (SELECT DISTINCT ON (interaction_id) (doc->>'wait_ms')::bigint AS w "
                "FROM omnicc_events WHERE type = 'offer.accepted' ORDER BY interaction_id, id) s")[0][0]
            asa_facts = pg.query("SELECT sum(wait_ms) FROM omnicc_facts")[0][0]
            self.assertEqual(int(asa_events), int(asa_facts))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class PostgresFixture:
    """A throwaway PostgreSQL: initdb + pg_ctl in a temporary directory, as a non-root user,
    on a free port, its unix socket in the temporary directory."""
    _inst = None

    @classmethod
    def get(cls):
        if cls._inst is None:
            bindir = None
            for v in ('17', '16', '15', '14', '13'):
                if os.path.exists('/usr/lib/postgresql/%s/bin/initdb' % v):
                    bindir = '/usr/lib/postgresql/%s/bin' % v
                    break
            if not bindir:
                return None
            cls._inst = cls(bindir)
        return cls._inst

    def __init__(self, bindir):
        self.bindir = bindir
        self.tmp = tempfile.mkdtemp(prefix='omnicc-pg-')
        os.chmod(self.tmp, 0o777)
        self.data = os.path.join(self.tmp, 'data')
        self.port = harness.free_port()
        self.prefix = []
        if os.geteuid() == 0:
            self.prefix = ['runuser', '-u', 'postgres', '--']
            shutil.chown(self.tmp, 'postgres')
        self.run([bindir + '/initdb', '-D', self.data, '-A', 'trust', '-U', 'omnicc', '-E', 'UTF8',
                  '--no-sync'])
        self.run([bindir + '/pg_ctl', '-D', self.data, '-l', os.path.join(self.tmp, 'pg.log'), '-w',
                  '-o', "-p %d -k %s -c listen_addresses='' -c fsync=off" % (self.port, self.tmp),
                  'start'])
        import atexit
        atexit.register(self.stop)

    def run(self, argv, client=False):
        # the server runs as a non-root user; psql (a client) as whoever runs the test
        out = subprocess.run((argv if client else self.prefix + argv), capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError('%s: %s %s' % (argv[0], out.stdout, out.stderr))
        return out.stdout

    def psql(self, sql):
        return self.run(['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', self.tmp, '-p',
                         str(self.port), '-U', 'omnicc', '-d', 'postgres', '-c', sql]
                        if '\\copy' not in sql else
                        ['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', self.tmp, '-p',
                         str(self.port), '-U', 'omnicc', '-d', 'postgres', '-f', self._file(sql)],
                        client=True)

    def _file(self, sql):
        path = os.path.join(self.tmp, 'script-%d.sql' % harness.free_port())
        with open(path, 'w') as f:
            f.write(sql)
        os.chmod(path, 0o644)
        return path

    def query(self, sql):
        out = self.run(['psql', '-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-h',
                        self.tmp, '-p', str(self.port), '-U', 'omnicc', '-d', 'postgres', '-c', sql],
                       client=True)
        rows = []
        for line in out.splitlines():
            if line:
                rows.append([None if c == '' else c for c in line.split('\t')])
        return rows

    def stop(self):
        subprocess.run(self.prefix + [self.bindir + '/pg_ctl', '-D', self.data, '-m', 'immediate',
                                      'stop'], capture_output=True, timeout=60)
        shutil.rmtree(self.tmp, ignore_errors=True)


class PeriodTest(Reports, harness.TestCase):
    """Day and week boundaries in the insurer's zone, over counters written directly (the
    scripts take the time from Redis, which a test cannot move), and a live interaction
    answered in a later hour than it arrived."""
    extra_config = CONFIG

    def put(self, hour, channel, **metrics):
        for k, n in metrics.items():
            self.redis.cli('HINCRBY', '%srp:%d' % (BASE, hour), '%s|default|standard|-|-|%s' % (channel, k), n)

    def test_daylight_saving_days_have_23_and_25_hours(self):
        # Madrid: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET
        for h in range(utc_hour(2026, 3, 28, 23), utc_hour(2026, 3, 29, 22)):  # the local day
            self.put(h, 'voice', offered=1)
        self.put(utc_hour(2026, 3, 28, 22), 'voice', offered=100)  # 23:00 local, the day before
        self.put(utc_hour(2026, 3, 29, 22), 'voice', offered=1000)  # 00:00 local, the day after
        rep = self.report('from=2026-03-28&to=2026-03-31&interval=day')
        days = [(p['start'], p['hours'], p['total']['offered']) for p in rep['periods']]
        self.assertEqual(days, [('2026-03-28T00:00:00+01:00', 24, 100),
                                ('2026-03-29T00:00:00+01:00', 23, 23),
                                ('2026-03-30T00:00:00+02:00', 24, 1000)])
        rep = self.report('from=2026-10-25&to=2026-10-26&interval=hour')
        self.assertEqual(len(rep['periods']), 25)
        rep = self.report('from=2026-10-25&to=2026-10-26&interval=day')
        self.assertEqual([p['hours'] for p in rep['periods']], [25])

    def test_daylight_saving_week(self):
        # Mon 2026-03-23 .. Sun 2026-03-29 (Madrid) has 167 hours; Sunday 23:30 CEST is
        # 21:30 UTC (that week), Monday 00:30 CEST 22:30 UTC (the next)
        # (on channel 'branch', which no other test of this class writes)
        self.put(utc_hour(2026, 3, 29, 21), 'branch', offered=1)
        self.put(utc_hour(2026, 3, 29, 22), 'branch', offered=10)
        self.put(utc_hour(2026, 3, 22, 22), 'branch', offered=100)  # Sun 23:00 CET: the week before
        rep = self.report('from=2026-03-23&to=2026-04-06&interval=week')
        self.assertEqual([(p['start'], p['hours'], sum(g['offered'] for g in p['groups'] if g['key'] == 'branch'))
                          for p in rep['periods']],
                         [('2026-03-23T00:00:00+01:00', 167, 1), ('2026-03-30T00:00:00+02:00', 168, 10)])

    def test_time_zone_boundaries(self):
        # 23:30 UTC on 31 January is 00:30 on 1 February in Madrid
        self.put(utc_hour(2026, 1, 31, 23), 'email', offered=3, answered=2, wait_ms=4000,
                 answered_in_sla=1)
        rep = self.report('from=2026-01-31&to=2026-02-02&interval=day&group_by=channel')
        self.assertEqual([p['total']['offered'] for p in rep['periods']], [0, 3])
        self.assertEqual(rep['periods'][1]['groups'][0]['key'], 'email')
        self.assertEqual(rep['periods'][1]['total']['asa_seconds'], 2.0)
        # an absolute window in UTC selects the same hour
        rep = self.report('from=2026-01-31T23:00Z&to=2026-02-01T00:00Z&interval=hour')
        self.assertEqual(rep['total']['offered'], 3)
        self.assertEqual(rep['from'], '2026-02-01T00:00:00+01:00')
        # weeks start on Monday, local time: Mon 2026-01-26 .. Sun 2026-02-01
        rep = self.report('from=2026-01-26&to=2026-02-09&interval=week')
        self.assertEqual([(p['start'][:10], p['total']['offered']) for p in rep['periods']],
                         [('2026-01-26', 3), ('2026-02-02', 0)])

    def test_empty_period(self):
        rep = self.report('from=2025-06-01&to=2025-06-03&interval=day&group_by=agent')
        self.assertEqual([p['groups'] for p in rep['periods']], [[], []])
        self.assertEqual(rep['total']['offered'], 0)
        self.assertIsNone(rep['total']['asa_seconds'])
        self.assertEqual(rep['groups'], [])

    def test_an_interaction_spanning_buckets_counts_where_it_arrived(self):
        self.make_agent('pd-a', {}, {'voice': 1})
        out = self.ingest(channel='voice', queue='default')
        iid = out['id']
        x = self.wait_state(iid, 'offered')
        # it arrived two hours ago (as if it had waited that long)
        created = int(self.redis.cli('HGET', BASE + 'ix:' + iid, 'created_at')) - 2 * 3600 * 1000
        self.redis.cli('HSET', BASE + 'ix:' + iid, 'created_at', created)
        self.accept(x['reservation'])
        self.work(iid, 'complete')
        arrival_hour = created // 3600000
        now_hour = int(time.time()) // 3600
        q = 'from=%d&to=%d&interval=hour' % (arrival_hour * 3600000, (now_hour + 1) * 3600000)
        rep = self.report(q)
        per = {p['start']: p['total'] for p in rep['periods']}
        first = rep['periods'][0]['total']
        self.assertEqual(first['answered'], 1)
        self.assertEqual(first['answered_in_sla'], 0)  # waited two hours: beyond 20 s
        self.assertGreaterEqual(first['wait_ms'], 2 * 3600 * 1000)
        self.assertEqual(first['handled'], 1)
        self.assertEqual(sum(p['offered'] for p in per.values()), 1)  # at the real arrival
        # its arrival hour is before the fold mark (the hour omniccd started in): the late
        # figures went into the day counters at once, the arrival into the open hour only;
        # a daily report adds both up as the hours do
        self.assertLess(arrival_hour, int(self.redis.cli('HGET', BASE + 'rdays', 'folded')))
        days = self.rollup_keys('rd:*')
        self.assertEqual(sum(int(v) for k, f in days.items() if k.endswith(':channel')
                             for n, v in f.items() if n == 'voice|answered'), 1)
        a = (datetime.datetime.utcfromtimestamp(arrival_hour * 3600) -
             datetime.timedelta(days=1)).strftime('%Y-%m-%d')
        b = (datetime.datetime.utcnow() + datetime.timedelta(days=2)).strftime('%Y-%m-%d')
        for g in ('channel', 'agent'):
            q = 'from=%s&to=%s&group_by=%s' % (a, b, g)
            self.assertEqual(self.report(q + '&interval=day')['total'],
                             self.report(q + '&interval=hour')['total'])
            self.assertEqual(self.report(q + '&interval=day')['groups'],
                             self.report(q + '&interval=hour')['groups'])


    def test_day_counters_only_in_their_zone_and_from_their_first_day(self):
        # a whole local day is read from rd:<day>:<dim> when 'rdays' is of the report's zone
        # and the day is not before its 'from'; otherwise from the hour hashes
        day = utc_hour(2026, 2, 9, 23)  # 2026-02-10 00:00 in Madrid (CET)
        self.put(day + 5, 'fax', offered=4)
        self.redis.cli('HSET', BASE + 'rd:%d:channel' % day, 'fax|offered', 40)
        self.redis.cli('HSET', BASE + 'rd:%d:agent' % day, 'A-1|answered', 30)
        q = 'from=2026-02-10&to=2026-02-11&interval=day'
        try:
            self.redis.cli('HSET', BASE + 'rdays', 'from', 0)
            self.assertEqual(self.report(q)['total']['offered'], 40)
            ag = self.report(q + '&group_by=agent')
            self.assertEqual({g['key']: (g['offered'], g['answered']) for g in ag['groups']},
                             {'-': (40, -30), 'A-1': (0, 30)})  # '-' is total minus agents
            self.assertEqual(self.report(q.replace('day', 'hour'))['total']['offered'], 4)
            self.redis.cli('HSET', BASE + 'rdays', 'zone', 'Europe/Lisbon')
            self.assertEqual(self.report(q)['total']['offered'], 4)
            self.redis.cli('HSET', BASE + 'rdays', 'zone', 'Europe/Madrid', 'from', day + 24)
            self.assertEqual(self.report(q)['total']['offered'], 4)
            # a partial day is read from the hours
            self.assertEqual(self.report('from=2026-02-10T01:00&to=2026-02-11&interval=day')
                             ['total']['offered'], 4)
        finally:
            self.redis.cli('DEL', BASE + 'rd:%d:channel' % day, BASE + 'rd:%d:agent' % day)
            self.redis.cli('HSET', BASE + 'rdays', 'zone', 'Europe/Madrid', 'from', 1e15)


class FoldTest(Reports, harness.TestCase):
    """omniccd folds ended hours into the day counters by itself: hour hashes of three past
    hours (as rollup() leaves them, with agents and a branch) and the fold mark before them,
    then omniccd starts: the mark moves past them up to the last hour ended, their figures
    are in the day counters (branch and agent '-' not kept), and every report by day equals
    the one by hour."""
    extra_config = CONFIG

    def test_omniccd_folds_ended_hours(self):
        now_hour = int(time.time()) // 3600
        h0 = now_hour - 20 * 24
        hours = (h0, h0 + 1, h0 + 30)
        self.d.stop()
        for i, h in enumerate(hours):
            for f, n in (('voice|default|gold|-|-|offered', 3 + i),
                         ('voice|default|gold|-|A-1|answered', 2),
                         ('branch|default|standard|B-1|-|offered', 1),
                         ('branch|default|standard|B-1|A-2|handle_ms', 60000 + i)):
                self.redis.cli('HINCRBY', '%srp:%d' % (BASE, h), f, n)
        self.redis.cli('HSET', BASE + 'rdays', 'folded', h0, 'from', 0)
        self.d.start()
        deadline = time.time() + 15
        while int(self.redis.cli('HGET', BASE + 'rdays', 'folded')) < now_hour - 1:
            self.assertLess(time.time(), deadline, 'the fold did not run')
            time.sleep(0.1)
        self.assertLessEqual(int(self.redis.cli('HGET', BASE + 'rdays', 'folded')), now_hour)
        tot = {}
        for k, f in self.rollup_keys('rd:*').items():
            for n, v in f.items():
                tot[k.rsplit(':', 1)[1], n] = tot.get((k.rsplit(':', 1)[1], n), 0) + int(v)
        self.assertEqual(tot, {('channel', 'voice|offered'): 12, ('channel', 'voice|answered'): 6,
                               ('channel', 'branch|offered'): 3,
                               ('channel', 'branch|handle_ms'): 180003,
                               ('queue', 'default|offered'): 15, ('queue', 'default|answered'): 6,
                               ('queue', 'default|handle_ms'): 180003,
                               ('segment', 'gold|offered'): 12, ('segment', 'gold|answered'): 6,
                               ('segment', 'standard|offered'): 3,
                               ('segment', 'standard|handle_ms'): 180003,
                               ('branch', 'B-1|offered'): 3, ('branch', 'B-1|handle_ms'): 180003,
                               ('agent', 'A-1|answered'): 6, ('agent', 'A-2|handle_ms'): 180003})
        a = datetime.datetime.utcfromtimestamp((h0 - 48) * 3600).strftime('%Y-%m-%d')
        b = datetime.datetime.utcfromtimestamp((h0 + 30 + 48) * 3600).strftime('%Y-%m-%d')
        for g in DIMS:
            q = 'from=%s&to=%s&group_by=%s' % (a, b, g)
            day, hour = self.report(q + '&interval=day'), self.report(q + '&interval=hour')
            self.assertEqual((day['total'], day['groups']), (hour['total'], hour['groups']), g)
            self.assertEqual(day['total']['offered'], 15)


class HalfHourZoneTest(Reports, harness.TestCase):
    """A zone with a non-whole-hour offset (India, +05:30): days of 24 UTC hours each, each
    starting on the UTC hour that holds local midnight (23:30 local)."""
    extra_config = CONFIG.replace('timezone = Europe/Madrid', 'timezone = Asia/Kolkata')

    def test_days_start_on_the_hour_holding_local_midnight(self):
        put = PeriodTest.put
        put(self, utc_hour(2026, 1, 9, 17), 'voice', offered=100)  # 22:30-23:30 on the 9th
        put(self, utc_hour(2026, 1, 9, 18), 'voice', offered=1)    # 23:30-00:30: the 10th
        put(self, utc_hour(2026, 1, 10, 17), 'voice', offered=2)   # 22:30-23:30 on the 10th
        put(self, utc_hour(2026, 1, 10, 18), 'voice', offered=10)  # the 11th
        rep = self.report('from=2026-01-10&to=2026-01-12&interval=day')
        self.assertEqual(rep['timezone'], 'Asia/Kolkata')
        self.assertEqual([(p['start'], p['hours'], p['total']['offered']) for p in rep['periods']],
                         [('2026-01-09T23:30:00+05:30', 24, 3), ('2026-01-10T23:30:00+05:30', 24, 10)])
        rep = self.report('from=2026-01-05&to=2026-01-19&interval=week')  # Mondays
        self.assertEqual([(p['start'], p['hours']) for p in rep['periods']],
                         [('2026-01-04T23:30:00+05:30', 168), ('2026-01-11T23:30:00+05:30', 168)])
        self.assertEqual(rep['periods'][0]['total']['offered'], 113)


class ReportBudgetTest(Reports, harness.TestCase):
    """A report that would read more hour-counter fields than [analytics] report_max_fields
    is refused before it holds Redis for long; one within it is answered."""
    extra_config = CONFIG + '[analytics]\nreport_max_fields = 100\n'

    def test_a_report_beyond_the_field_budget_is_refused(self):
        for day, hour in ((10, 9), (11, 9)):
            h = '%srp:%d' % (BASE, utc_hour(2026, 2, day, hour))
            args = ['HSET', h]
            for a in range(30):  # 30 agents x 2 metrics = 60 fields an hour
                args += ['voice|default|standard|-|A-%d|answered' % a, 1,
                         'voice|default|standard|-|A-%d|wait_ms' % a, 1000]
            self.redis.cli(*args)
        rep = self.report('from=2026-02-10&to=2026-02-11&interval=day&group_by=agent')
        self.assertEqual(rep['total']['answered'], 30)
        self.assertEqual(len(rep['groups']), 30)
        out = self.report('from=2026-02-10&to=2026-02-12&interval=day&group_by=agent', 400)
        self.assertIn('report_max_fields', json.dumps(out))


class BranchDimensionTest(Reports, harness.TestCase):
    extra_config = CONFIG

    def test_branch_dimension_from_the_metadata(self):
        self.ingest(channel='branch', queue='default', metadata={'branch': 'B-0042', 'terminal': 'T1'})
        self.ingest(channel='voice', queue='default')
        rep = self.report(self.today_query('branch'))
        self.assertEqual({g['key']: g['offered'] for g in rep['groups']}, {'B-0042': 1, '-': 1})


class RebuildTest(Reports, harness.TestCase):
    """`omniccd reports rebuild` recomputes every counter from the case histories: after a
    random run over the five channels (generic ingest, plus a visitor through the web chat
    adapter) with re-contacts, transfers to a queue and to an agent, rejects, abandons,
    cancels, wrap-ups (immediate and timed, ended by the sweep), answers beyond the SLA and
    closes at max_wait, the rebuilt counters equal the live ones, key for key and field for
    field, even after the live ones were damaged."""
    ORIGIN = 'https://www.insurer.example'
    extra_config = CONFIG + '''
[queue slow]
channels = webchat fax branch
skills = nobody
max_wait = 1
on_max_wait = close
[webchat]
allowed_origins = https://www.insurer.example
'''

    def chat_session(self):
        st, body, _ = self.d.request('POST', '/v1/chat/sessions',
                                     {'name': 'Visitor', 'email': 'v-%s@example.com' % self.ext('v')},
                                     auth=False, headers={'Origin': self.ORIGIN})
        self.assertEqual(st, 201, body)
        iid = None
        deadline = time.time() + 10
        while not iid and time.time() < deadline:
            iid = self.redis.cli('GET', BASE + 'idem:webchat:' + body['session'])
            if not iid:
                time.sleep(0.05)
        self.assertTrue(iid)
        return iid

    def test_rebuild_from_the_histories_equals_live(self):
        # the fold mark ahead, as in the hour of an upgrade: every figure of this run goes
        # into the day counters at once (as late figures of folded hours do); the fold is
        # checked against them at the end
        now_hour = int(time.time()) // 3600
        self.redis.cli('HSET', BASE + 'rdays', 'folded', now_hour + 2)
        rnd = random.Random(1717)
        chans = ['voice', 'email', 'webchat', 'fax', 'branch']
        cap = {ch: 10 for ch in chans}
        self.make_agent('rb-a1', {'claims': 1}, cap, wrapup={'email': 1, 'branch': 1})
        self.make_agent('rb-a2', {'claims': 1}, cap)
        phones = ['600222001', '600222002', '600222003']
        ids, late_done = [], False
        for n in range(34):
            if n in (5, 20):
                iid = self.chat_session()
                ch, queue = 'webchat', 'default'
            else:
                ch = chans[n % 5] if n < 10 else rnd.choice(chans)
                queue = 'default'
                if ch in ('voice', 'email') and rnd.random() < 0.4:
                    queue = 'claims'
                elif ch in ('webchat', 'fax', 'branch') and rnd.random() < 0.15 or n == 7:
                    queue = 'slow'  # nobody serves it: closed at max_wait by the sweep
                body = {'channel': ch, 'external_id': self.ext('rb'), 'queue': queue}
                phone = rnd.choice(phones + [None])
                if phone:
                    body['customer'] = {'phone': phone}
                if ch == 'branch' or rnd.random() < 0.2:
                    body['metadata'] = {'branch': rnd.choice(['B-1', 'B-2'])}
                iid = self.ingest(**body)['id']
            ids.append(iid)
            if queue == 'slow':
                continue
            x = self.wait_state(iid, 'offered')
            action = rnd.choice(['complete', 'wrapup', 'wrapup', 'transfer', 'to_agent',
                                 'abandon', 'reject', 'cancel'])
            if n < 8:
                action = ['complete', 'wrapup', 'transfer', 'to_agent', 'abandon', 'reject',
                          'cancel', 'complete'][n]
            if action == 'abandon':
                self.work(iid, 'abandon', {'reason': 'left'})
                continue
            if action == 'reject':
                self.reject(x['reservation'])
                x = self.wait_state(iid, 'offered')
            if queue == 'claims' and not late_done:
                time.sleep(1.1)  # beyond the claims queue's 1 s target
                late_done = True
            self.accept(x['reservation'])
            if action in ('transfer', 'to_agent'):
                if action == 'to_agent':
                    other = 'rb-a2' if x['agent'] == 'rb-a1' else 'rb-a1'
                    self.work(iid, 'transfer', {'agent': other})
                else:
                    self.work(iid, 'transfer', {'queue': 'default'})
                y = self.wait_state(iid, 'offered')
                self.accept(y['reservation'])
            if action == 'cancel':
                self.work(iid, 'cancel', {'reason': 'duplicate'})
            elif action == 'wrapup':
                self.work(iid, 'wrapup', {'disposition': 'done'})
            else:
                self.work(iid, 'complete')
        # timed wrap-ups end and the slow queue's contacts close, both by the sweep
        deadline = time.time() + 15
        while time.time() < deadline:
            states = [self.ix(i)['state'] for i in ids]
            if not any(s in ('queued', 'offered', 'wrapup') for s in states):
                break
            time.sleep(0.2)
        self.assertFalse([s for s in states if s in ('queued', 'offered', 'wrapup')], states)
        live = self.rollup_keys()
        live_days = self.rollup_keys('rd:*')
        self.assertTrue(live_days)
        seen = {}
        for fields in live.values():
            for f, v in fields.items():
                d = f.split('|')
                seen[d[5]] = seen.get(d[5], 0) + int(v)
                seen[d[0]] = seen.get(d[0], 0) + 1
                seen['branch ' + d[3]] = 1
        for f in RAW + chans + ['branch B-1', 'branch B-2']:
            self.assertGreater(seen.get(f, 0), 0, f)  # every figure and channel is exercised
        self.assertLess(seen['answered_in_sla'], seen['answered'])
        self.assertEqual(seen['offered'], len(ids))
        # damage the live counters: a wrong figure, a lost hour, a stray field and hour
        k = sorted(live)[0]
        self.redis.cli('HINCRBY', k, sorted(live[k])[0], 5)
        self.redis.cli('HSET', k, 'voice|default|standard|-|-|offered', 99)
        self.redis.cli('DEL', sorted(live)[-1])
        self.redis.cli('HSET', BASE + 'rp:1', 'voice|default|standard|-|-|offered', 1)
        d = sorted(live_days)[0]
        self.redis.cli('HINCRBY', d, sorted(live_days[d])[0], 7)
        self.redis.cli('DEL', sorted(live_days)[-1])
        self.redis.cli('HSET', BASE + 'rd:1:channel', 'voice|offered', 1)
        self.assertNotEqual(self.rollup_keys(), live)
        self.assertNotEqual(self.rollup_keys('rd:*'), live_days)
        out = json.loads(self.cli('reports', 'rebuild'))
        self.assertEqual(self.rollup_keys(), live)
        self.assertEqual(self.rollup_keys('rd:*'), live_days)
        self.assertEqual(out['day_keys'], len(live_days))
        self.assertEqual(self.redis.cli('HGET', BASE + 'rdays', 'from'), '0')
        cases = [k for k in self.redis.raw('KEYS', BASE + 'case:*:hist') if k]
        self.assertEqual(out['histories'], len(cases))
        self.assertEqual(out['hours'], len(live))
        self.assertEqual(out['cleared_keys'], len(live))
        # the same again on rebuilt counters: nothing changes
        json.loads(self.cli('reports', 'rebuild'))
        self.assertEqual(self.rollup_keys(), live)
        self.assertEqual(self.rollup_keys('rd:*'), live_days)
        self.assertEqual(int(self.redis.cli('HGET', BASE + 'rdays', 'folded')), now_hour + 2)
        self.check_fold_and_rebuild_mark(live, live_days)

    def check_fold_and_rebuild_mark(self, live, live_days):
        """The fold of ended hours into the day counters gives what writing them at once
        gave: the run's hour hashes copied two weeks back (ended hours), the mark set to the
        first of them, `omniccd reports fold` makes the day counters of those days, equal
        field for field (summed over the days) to the ones this run wrote as it went; a
        daily report equals the hourly one before and after; a second fold changes nothing;
        a rebuild leaves the hours from the mark out of the day counters."""
        shift = 14 * 24
        hours = sorted(int(k.rsplit(':', 1)[1]) for k in live)
        for h in hours:
            self.redis.cli('COPY', '%srp:%d' % (BASE, h), '%srp:%d' % (BASE, h - shift))
        first = hours[0] - shift
        a = datetime.datetime.utcfromtimestamp((first - 48) * 3600).strftime('%Y-%m-%d')
        b = datetime.datetime.utcfromtimestamp((hours[-1] - shift + 48) * 3600).strftime('%Y-%m-%d')
        q = 'from=%s&to=%s' % (a, b)

        def reports():
            out = {}
            for g in DIMS:
                for iv in ('day', 'hour'):
                    r = self.report('%s&group_by=%s&interval=%s' % (q, g, iv))
                    out[g, iv] = (r['total'], r['groups'])
                self.assertEqual(out[g, 'day'], out[g, 'hour'], g)
            return out
        self.redis.cli('HSET', BASE + 'rdays', 'folded', first)
        before = reports()  # unfolded: the days read from the hour hashes
        self.assertEqual(before['channel', 'day'][0]['offered'],
                         sum(int(v) for f in live.values() for k, v in f.items()
                             if k.endswith('|offered')))
        out = json.loads(self.cli('reports', 'fold'))
        mark = int(self.redis.cli('HGET', BASE + 'rdays', 'folded'))
        self.assertGreater(mark, hours[-1] - shift)
        self.assertLessEqual(mark, int(time.time()) // 3600)
        self.assertEqual(out['folded_to'], mark)  # (the daemon's own fold may have run first)

        def by_dim(keys):
            tot = {}
            for k, f in keys.items():
                dim = k.rsplit(':', 1)[1]
                for n, v in f.items():
                    tot[dim, n] = tot.get((dim, n), 0) + int(v)
            return tot
        days = self.rollup_keys('rd:*')
        folded = {k: f for k, f in days.items() if k not in live_days}
        self.assertTrue(folded)
        self.assertEqual(by_dim(folded), by_dim(live_days))
        self.assertEqual(reports(), before)
        again = json.loads(self.cli('reports', 'fold'))
        self.assertEqual((again['hours'], again['folded_to']), (0, mark))
        self.assertEqual(self.rollup_keys('rd:*'), days)
        # a rebuild with the mark inside the copied days puts only the hours before it into
        # the day counters (the copies are no facts of any history: they are dropped)
        self.redis.cli('HSET', BASE + 'rdays', 'folded', hours[0])
        json.loads(self.cli('reports', 'rebuild'))
        self.assertEqual(self.rollup_keys(), live)
        self.assertEqual(self.rollup_keys('rd:*'), {})
        self.assertEqual(int(self.redis.cli('HGET', BASE + 'rdays', 'folded')), hours[0])

    def cli(self, *args):
        out = subprocess.run([harness.OMNICCD, '-c', self.d.config_path] + list(args),
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout


class RollupsOffTest(Reports, harness.TestCase):
    extra_config = CONFIG + '[analytics]\nrollups = no\n'

    def test_no_counters_when_switched_off(self):
        self.ingest(channel='voice', queue='default')
        self.assertEqual([k for k in self.redis.raw('KEYS', BASE + 'rp:*') if k], [])
        self.assertEqual(self.redis.cli('HGET', BASE + 'routing:conf', 'rollups'), '0')


class RetentionTest(Reports, harness.TestCase):
    """Retention per channel with a shortened period: webchat content kept 2 s, voice forever."""
    extra_config = CONFIG + '[analytics]\nretention_webchat = 0.000023\nretention_interval = 1\n'

    def attachment(self, data):
        sha = hashlib.sha256(data).hexdigest()
        d = os.path.join(self.d.state_dir, 'attachments', sha[:2])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, sha), 'wb') as f:
            f.write(data)
        return sha

    def test_content_expires_per_channel(self):
        sha = self.attachment(b'photo of the dent')
        chat = self.ingest(channel='webchat', subject='Dent in the door', body='see photo',
                           metadata={'attachments': [{'sha256': sha}]}, customer={'name': 'Rita'})
        call = self.ingest(channel='voice', subject='Call about the dent', case_id=chat['case_id'])
        self.assertEqual(chat['case_id'], call['case_id'])
        harness.wait_for(lambda: 'expired_at' in self.ix(chat['id']), 15, 'webchat content expired')
        x = self.ix(chat['id'])
        for f in ('subject', 'body', 'metadata'):
            self.assertNotIn(f, x)
        self.assertFalse(os.path.exists(os.path.join(self.d.state_dir, 'attachments', sha[:2], sha)))
        self.assertEqual(self.ix(call['id'])['subject'], 'Call about the dent')  # voice: kept
        st, case, _ = self.d.get('/v1/cases/' + chat['case_id'])
        text = json.dumps(case)
        self.assertNotIn('Dent in the door', text)
        self.assertIn('Call about the dent', text)
        # the figures stay; the index holds nothing left to do
        self.assertEqual(self.report(self.today_query())['total']['offered'], 2)
        self.assertEqual(self.redis.raw('ZCARD', BASE + 'ret:webchat')[0], '0')
        self.assertEqual([k for k in self.redis.raw('KEYS', BASE + 'ret:voice') if k], [])


class DataRightsTest(Reports, harness.TestCase):
    extra_config = CONFIG

    def attachment(self, data):
        sha = hashlib.sha256(data).hexdigest()
        d = os.path.join(self.d.state_dir, 'attachments', sha[:2])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, sha), 'wb') as f:
            f.write(data)
        return sha

    def test_export_hold_erase(self):
        self.d.post('/v1/customers/import', json.dumps(
            {'id': 'H-9', 'name': 'Eva Erasable', 'phones': ['600999111'], 'emails': ['eva@example.org'],
             'policies': ['PL-2024-009999'], 'annual_premium': 2500, 'tenure_years': 8,
             'claims_last_3y': 0}) + '\n', content_type='application/x-ndjson')
        sha = self.attachment(b'%PDF-1.4 Eva claim form')
        a = self.ingest(channel='email', **{'from': 'eva@example.org'}, subject='Eva claim',
                        body='My name is Eva Erasable, policy PL-2024-009999',
                        metadata={'attachments': [{'sha256': sha, 'filename': 'claim.pdf'}]},
                        customer={'policy': 'PL-2024-009999'})
        b = self.ingest(channel='voice', **{'from': '+34 600 999 111'}, subject='Eva calls back')
        self.assertEqual(a['customer_id'], b['customer_id'])
        cid, case = a['customer_id'], a['case_id']
        self.d.post('/v1/cases/%s/notes' % case, {'text': 'Eva sounded upset', 'author': 'alice'})
        # someone else, untouched by the erasure
        other = self.ingest(channel='voice', **{'from': '+34 600 555 000'}, subject='Other person')
        # a contact naming her email and the other person's phone: a conflict on both
        conflict = self.ingest(channel='email', **{'from': 'eva@example.org'}, subject='Eva again',
                               customer={'phone': '600555000'})
        self.assertEqual(conflict['conflicts'], [other['customer_id']])
        st, oc, _ = self.d.get('/v1/customers/' + other['customer_id'])
        self.assertIn('eva@example.org', json.dumps(oc['conflicts']))
        st, _, _ = self.d.get('/v1/attachments/' + sha)
        self.assertEqual(st, 200)

        st, ex, _ = self.d.get('/v1/customers/%s/export' % cid)
        self.assertEqual(st, 200, ex)
        self.assertEqual(ex['profile']['name'], 'Eva Erasable')
        self.assertIn('phone:+34600999111', ex['identifiers'])
        self.assertEqual(ex['segment_history'][0]['to'], 'platinum')
        texts = json.dumps(ex)
        for needle in ('Eva claim', 'My name is Eva', 'Eva sounded upset', 'Eva calls back'):
            self.assertIn(needle, texts)

        st, out, _ = self.d.post('/v1/cases/%s/hold' % case, {'reason': 'litigation 2026/17'})
        self.assertEqual(st, 200, out)
        st, out, _ = self.d.post('/v1/customers/%s/erase' % cid, {'reason': 'GDPR art. 17 request'})
        self.assertEqual(st, 409, out)
        self.assertIn('litigation 2026/17', out['error']['message'])
        st, out, _ = self.d.post('/v1/customers/%s/erase' % cid, {})
        self.assertEqual(st, 400, out)
        st, out, _ = self.d.request('DELETE', '/v1/cases/%s/hold' % case)
        self.assertEqual(st, 200, out)
        st, out, _ = self.d.post('/v1/customers/%s/erase' % cid, {'reason': 'GDPR art. 17 request'})
        self.assertEqual(st, 200, out)
        self.assertEqual(out['attachments_removed'], [sha])

        # nothing of her is left anywhere the API reaches
        for q in ('phone=600999111', 'email=eva@example.org', 'policy=PL-2024-009999'):
            st, body, _ = self.d.get('/v1/customers?' + q)
            self.assertEqual(st, 404, (q, body))
        st, cust, _ = self.d.get('/v1/customers/' + cid)
        leaked = json.dumps(cust)
        st, cs, _ = self.d.get('/v1/cases/' + case)
        self.assertEqual(st, 200)
        leaked += json.dumps(cs)
        for iid in (a['id'], b['id']):
            st, ix, _ = self.d.get('/v1/interactions/' + iid)
            leaked += json.dumps(ix)
        st, ex2, _ = self.d.get('/v1/customers/%s/export' % cid)
        leaked += json.dumps(ex2)
        st, oc, _ = self.d.get('/v1/customers/' + other['customer_id'])
        self.assertEqual(len(oc['conflicts']), 1)
        self.assertTrue(oc['conflicts'][0]['erased'])
        leaked += json.dumps(oc)
        st, body, _ = self.d.request('GET', '/v1/export/events?cursor=0&limit=10000', raw=True)
        leaked += body.decode()
        rep = self.report(self.today_query('segment'))
        leaked += json.dumps(rep)
        for needle in ('Eva', 'eva@', '600999111', '600 999 111', 'PL-2024-009999', 'claim',
                       'upset', 'calls back'):
            self.assertNotIn(needle, leaked, needle)
        st, _, _ = self.d.get('/v1/attachments/' + sha)
        self.assertEqual(st, 404)
        self.assertEqual(rep['total']['offered'], 4)  # the figures stay, pseudonymous
        # the other person is untouched
        st, ix, _ = self.d.get('/v1/interactions/' + other['id'])
        self.assertEqual(ix['subject'], 'Other person')
        # a new contact from her old number is a new, unknown person
        c = self.ingest(channel='voice', **{'from': '+34 600 999 111'})
        self.assertNotEqual(c['customer_id'], cid)

        # every access, export and erasure is in the audit stream
        st, au, _ = self.d.get('/v1/audit')
        actions = [e['action'] for e in au['entries']]
        for act in ('customer.export', 'case.hold', 'customer.erase.refused', 'case.unhold',
                    'customer.erase', 'report.service', 'export.events'):
            self.assertIn(act, actions)
        erase = [e for e in au['entries'] if e['action'] == 'customer.erase'][0]
        self.assertEqual((erase['object'], erase['detail']), (cid, 'GDPR art. 17 request'))

    def test_unknown_ids(self):
        st, _, _ = self.d.get('/v1/customers/P-404/export')
        self.assertEqual(st, 404)
        st, _, _ = self.d.post('/v1/customers/P-404/erase', {'reason': 'x'})
        self.assertEqual(st, 404)
        st, _, _ = self.d.post('/v1/cases/C-404/hold', {'reason': 'x'})
        self.assertEqual(st, 404)


class ChannelDataRightsTest(Reports, harness.TestCase):
    """Erasure covers what the email and fax channels keep beside the interactions: the
    threading index (msgid:), outbound messages (msgout:) and faxes (faxout:, faxprov:),
    the acknowledgement rate limit keyed by the address (ackrl:), Message-ID idempotency
    keys, OCR text, and jobs not yet sent on both outboxes (the SMTP relay and the fax
    provider here are ports nobody listens on, so everything stays queued). Afterwards no key
    in Redis, by name or content, holds anything of the person."""

    @classmethod
    def setUpClass(cls):
        from test_fax import GATEWAY_SECRET
        cls.tmp = tempfile.mkdtemp(prefix='omnicc-test-')
        files = {'inbound.token': 'inbound-token-erase-0123456789', 'imap.pw': 'secret',
                 'gateway.secret': GATEWAY_SECRET, 'phaxio.secret': 'api-secret'}
        for name, value in files.items():
            with open(os.path.join(cls.tmp, name), 'w') as f:
                f.write(value + '\n')
        closed = harness.free_port()
        p = lambda n: os.path.join(cls.tmp, n)
        cls.extra_config = CONFIG + (
            '[email]\ninbound_token_file = %s\nfrom_address = claims@insurer.example\n'
            'smtp_url = smtp://127.0.0.1:%d\nsmtp_starttls = no\nretry_base = 60\n'
            'outbox_poll_ms = 100\n'
            '[mailbox claims]\nurl = imap://127.0.0.1:%d/INBOX\nuser = claims\n'
            'password_file = %s\nstarttls = no\npoll_interval = 3600\n'
            'address = claims@insurer.example\nack_reply = yes\n'
            '[mailbox faxes]\nurl = imap://127.0.0.1:%d/INBOX\nuser = faxes\n'
            'password_file = %s\nstarttls = no\npoll_interval = 3600\nchannel = fax\n'
            'address = faxes@insurer.example\n'
            '[fax]\ngateway_secret_file = %s\nocr_workers = 1\noutbound = phaxio\n'
            'phaxio_api_base = http://127.0.0.1:%d\nphaxio_api_key = k\n'
            'phaxio_api_secret_file = %s\nclaim_idle = 3600\noutbox_poll_ms = 100\n'
            % (p('inbound.token'), closed, closed, p('imap.pw'), closed, p('imap.pw'),
               p('gateway.secret'), closed, p('phaxio.secret')))
        cls.redis = harness.RedisServer(cls.tmp)
        cls.d = harness.Omniccd(cls.tmp, cls.redis.url, cls.extra_config)

    def inbound(self, raw, mailbox):
        st, out, _ = self.d.request('POST', '/v1/email/inbound?mailbox=' + mailbox, raw,
                                    auth=False, content_type='message/rfc822', headers={
                                        'Authorization': 'Bearer inbound-token-erase-0123456789'})
        self.assertEqual(st, 202, out)
        return out

    def all_of_redis(self):
        """Every key's name and content, as text."""
        out = []
        for k in self.redis.raw('KEYS', '*'):
            t = self.redis.cli('TYPE', k)
            cmd = {'string': ('GET', k), 'hash': ('HGETALL', k), 'list': ('LRANGE', k, 0, -1),
                   'set': ('SMEMBERS', k), 'zset': ('ZRANGE', k, 0, -1),
                   'stream': ('XRANGE', k, '-', '+')}.get(t)
            out += [k + ' ' + v for v in (self.redis.raw(*cmd) if cmd else [])] or [k + ' ']
        return '\n'.join(out)

    def test_erase_covers_email_and_fax_keys(self):
        from email.message import EmailMessage
        from test_fax import fax_pages, gateway_headers, multipart
        self.d.post('/v1/customers/import', json.dumps(
            {'id': 'H-77', 'name': 'Ida Mailfax', 'phones': ['600777333'],
             'emails': ['ida.mailfax@example.org'], 'policies': ['PL-2024-007733'],
             'annual_premium': 900, 'tenure_years': 3, 'claims_last_3y': 0}) + '\n',
            content_type='application/x-ndjson')
        # an email, acknowledged automatically (ackrl:), answered by an agent (msgout:, msgid:)
        m = EmailMessage()
        m['From'] = 'Ida Mailfax <ida.mailfax@example.org>'
        m['To'] = 'claims@insurer.example'
        m['Subject'] = 'Water damage'
        m['Message-ID'] = '<ida-mailfax-1@idas-laptop.example.org>'
        m.set_content('My kitchen is flooded. Ida Mailfax, PL-2024-007733')
        mail = self.inbound(m.as_bytes(), 'claims')
        st, rep, _ = self.d.post('/v1/interactions/%s/reply' % mail['id'],
                                 {'body': 'Dear Ida Mailfax, we are on it.'})
        self.assertEqual(st, 202, rep)
        mid = rep['message_id']
        # a fax from her number through a gateway; OCR reads her name on the cover sheet
        cover = fax_pages(self.tmp, [['FAX', 'From: Ida Mailfax', 'Policy PL-2024-007733']])
        body, ctype = multipart([('gateway_id', 'erase-' + self.ext()), ('from', '+34600777333'),
                                 ('tsi', 'IDA MAILFAX HOME')],
                                [('file', 'fax.tif', 'image/tiff', cover)])
        st, fx, _ = self.d.post('/v1/fax/inbound', body, auth=False, content_type=ctype,
                                headers=gateway_headers(body))
        self.assertEqual(st, 200, fx)
        harness.wait_for(lambda: self.d.get('/v1/interactions/' + fx['interaction'])[1]
                         .get('ocr_at'), 90, 'OCR')
        self.assertIn('Mailfax', self.d.get('/v1/interactions/' + fx['interaction'])[1]['ocr_text'])
        # a fax back to her, waiting for the provider (faxout:, outbox:fax)
        st, out, _ = self.d.post('/v1/interactions/%s/fax' % fx['interaction'],
                                 {'to': '+34 600 777 333', 'document': fx['document']})
        self.assertEqual(st, 202, out)
        # a fax-to-email message from her number (idem:fax:email:<Message-ID>)
        m2 = EmailMessage()
        m2['From'] = 'noreply@fax.example.net'
        m2['To'] = 'faxes@insurer.example'
        m2['Subject'] = 'Fax from +34 600 777 333'
        m2['Message-ID'] = '<fax-for-ida-mailfax@idas-home.example.org>'
        m2.set_content('fax attached')
        m2.add_attachment(cover, maintype='image', subtype='tiff', filename='fax.tif')
        fm = self.inbound(m2.as_bytes(), 'faxes')
        st, fmix, _ = self.d.get('/v1/interactions/' + fm['id'])
        self.assertEqual(fmix['channel'], 'fax')
        self.assertEqual(fmix['customer_id'], mail['customer_id'])
        cid = mail['customer_id']
        self.assertEqual(self.d.get('/v1/interactions/' + fx['interaction'])[1]['customer_id'], cid)
        before = self.all_of_redis()
        for k in ('msgid:<ida-mailfax-1@idas-laptop.example.org>', 'msgid:' + mid,
                  'msgout:' + mid, 'ackrl:ida.mailfax@example.org',
                  'idem:email:<ida-mailfax-1@idas-laptop.example.org>',
                  'idem:fax:email:fax-for-ida-mailfax@idas-home.example.org', 'faxout:' + out['id']):
            self.assertIn(BASE + k + ' ', before)
        self.assertIn('Dear Ida Mailfax', before)  # the reply job, not yet sent

        st, er, _ = self.d.post('/v1/customers/%s/erase' % cid, {'reason': 'GDPR art. 17'})
        self.assertEqual(st, 200, er)
        after = self.all_of_redis()
        for needle in ('ida', 'Ida', 'IDA', 'Mailfax', 'mailfax', '600777333', '600 777 333',
                       'PL-2024-007733', 'flooded'):
            lines = [l for l in after.splitlines() if needle in l]
            self.assertEqual(lines, [], needle)
        for k in ('msgout:' + mid, 'msgid:' + mid, 'faxout:' + out['id']):
            self.assertNotIn(BASE + k + ' ', after)
        self.assertEqual(self.redis.raw('XLEN', BASE + 'outbox:email'), ['0'])
        self.assertEqual(self.redis.raw('ZCARD', BASE + 'outbox:email:retry'), ['0'])
        self.assertEqual(self.redis.raw('XLEN', BASE + 'outbox:fax'), ['0'])
        self.assertEqual(self.redis.raw('XPENDING', BASE + 'outbox:fax', 'senders')[0], '0')
        # the same mail again is a new contact of an unknown person, not her old interaction
        again = self.inbound(m.as_bytes(), 'claims')
        self.assertNotEqual(again['id'], mail['id'])
        self.assertNotEqual(again['customer_id'], cid)


if __name__ == '__main__':
    unittest.main()
