"""omnicc-teller driven as a teller would use it: in tmux (send-keys, capture-pane), against a
real omniccd with the branch bridge, through a forwarding proxy whose link the test cuts and
restores. Online: sign in, walk-in, lookup with purpose, note, consent, FNOL, end with an
outcome, call next, handover, an offer accepted. Offline: the teller keeps working, the
work is spooled (and survives a restart of the terminal), lookups say they need the link,
and when the link returns every spooled action is delivered exactly once - also when an
acknowledgement was lost on the way."""
import json
import os
import re
import signal
import subprocess
import time
import unittest

import harness
from branch_harness import Proxy, Terminal
from test_branch import BranchBase

TELLER = os.environ.get('OMNICC_TELLER', os.path.join(os.path.dirname(__file__), '..', '..',
                                                      'build', 'teller', 'omnicc-teller'))


class Screen:
    """One omnicc-teller in its own tmux session, 80x24."""

    def __init__(self, test, name, conf):
        self.test = test
        self.name = name
        self.runs = 0
        self.session = name
        self.conf = conf
        self.start()

    def tmux(self, *args):
        return subprocess.run(['tmux', '-S', self.sock] + list(args), capture_output=True,
                              text=True, timeout=10)

    def start(self):
        # a fresh tmux server each time: one being killed may still hold the old socket
        self.runs += 1
        self.sock = os.path.join(self.test.tmp, 'tmux-%s-%d' % (self.name, self.runs))
        cmd = 'env LANG=C.UTF-8 TERM=screen %s -c %s; sleep 600' % (TELLER, self.conf)
        r = self.tmux('-f', '/dev/null', 'new-session', '-d', '-s', self.session, '-x', '80',
                      '-y', '24', cmd)
        if r.returncode != 0:
            raise AssertionError('tmux: %s' % r.stderr)

    def stop(self):
        """End the session; a terminal program that does not exit within 5 s is killed, so
        nothing started here outlives the test."""
        pid = self.pid()
        self.tmux('kill-server')
        deadline = time.time() + 5
        while pid and time.time() < deadline:
            try:
                with open('/proc/%d/stat' % pid) as f:
                    if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                        break
            except OSError:
                break
            time.sleep(0.05)
        else:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def keys(self, *keys):
        for k in keys:
            # literal text with -l; key names (Enter, F2, Right, Escape) without
            if re.fullmatch(r'(Enter|Escape|Tab|Up|Down|Left|Right|BSpace|F\d+|C-\w)', k):
                self.tmux('send-keys', '-t', self.session, k)
            else:
                self.tmux('send-keys', '-t', self.session, '-l', k)
            time.sleep(0.05)

    def text(self):
        return self.tmux('capture-pane', '-p', '-t', self.session).stdout

    def wait(self, pattern, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.text()
            m = re.search(pattern, t)
            if m:
                return m
            time.sleep(0.1)
        raise AssertionError('screen never showed %r; it shows:\n%s' % (pattern, self.text()))

    def choose(self, value):
        """Cycle the focused choice field until it shows value."""
        for _ in range(12):
            if '< %s >' % value in self.text():
                return
            self.keys('Right')
            time.sleep(0.1)
        raise AssertionError('no choice %s:\n%s' % (value, self.text()))

    def pid(self):
        out = self.tmux('list-panes', '-t', self.session, '-F', '#{pane_pid}').stdout.strip()
        if not out.isdigit():
            return None
        kids = subprocess.run(['pgrep', '-P', out], capture_output=True, text=True).stdout.split()
        for k in kids:
            try:
                with open('/proc/%s/comm' % k) as f:
                    if f.read().strip() == 'omnicc-teller':
                        return int(k)
            except OSError:
                pass
        return None


class TellerTest(BranchBase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.proxy = Proxy(cls.port)

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        super().tearDownClass()

    def teller_screen(self, name, agent):
        cert, key = self.cert('mad01', name)
        spool = os.path.join(self.tmp, 'spool-' + name)
        conf = os.path.join(self.tmp, name + '.conf')
        with open(conf, 'w') as f:
            f.write('server = 127.0.0.1:%d\nserver_name = localhost\nca = %s\ncert = %s\n'
                    'key = %s\nspool = %s\ncounter = 2\nhandover_queue = callcentre\n'
                    'timeout = 3\n' % (self.proxy.port, self.ca.cert, cert, key, spool))
        s = Screen(self, name, conf)
        self.addCleanup(s.stop)
        s.wait(r'Sign in')
        s.wait(r'ONLINE')
        s.keys(agent, 'Enter', self.teller(agent), 'Enter')
        s.wait(r'Signed in as')
        return s

    def history(self, case_id):
        st, case, _ = self.d.get('/v1/cases/%s?limit=500' % case_id)
        self.assertEqual(st, 200, case)
        return case['history']

    def test_a_day_at_the_counter(self):
        s = self.teller_screen('desk-a', 'teresa')
        # a walk-in served at once
        s.keys('F3')
        s.wait(r'Walk-in visit')
        s.choose('claim_fnol')
        s.keys('Enter', 'Lucía Fernández', 'Enter', 'PL-2024-555001', 'Enter', '600 555 001',
               'Enter', 'Enter', 'came about hail', 'Enter', 'Enter')
        m = s.wait(r'Visit (I-\d+) recorded \(ticket (C\d+)\)')
        visit, ticket = m.group(1), m.group(2)
        s.wait(r'Ticket %s\s+Lucía Fernández' % ticket)
        case_id = self.r.hget('omnicc:{main}:ix:' + visit, 'case_id').decode()
        # lookup with a purpose: logged
        s.keys('F2', 'Enter', 'pl-2024-555001', 'Enter')
        s.choose('claim')
        s.keys('Enter')
        s.wait(r'found \(lookup logged\)')
        s.wait(r'Lucía Fernández\s+\(P-\d+')
        log = self.d.get('/v1/access-log?agent=teresa')[1]['entries']
        self.assertEqual((log[0]['purpose'], log[0]['terminal']), ('claim', 'desk-a'))
        # note, consent, first notice of loss
        s.keys('F5', 'Roof tiles broken, photos taken', 'Enter')
        s.wait(r'Sent: Note')
        s.keys('F7')
        s.choose('marketing')
        s.keys('Enter')
        s.choose('no')
        s.keys('Enter', 'asked not to be contacted', 'Enter')
        s.wait(r'Sent: Consent marketing: no')
        s.keys('F8', 'Enter')
        s.choose('hail')
        s.keys('Enter', 'Hail storm broke the roof', 'Enter', 'Calle Mayor 3', 'Enter')
        s.wait(r'First notice of loss F-\d+ recorded')
        # the end of the visit, with its outcome
        s.keys('F6')
        s.choose('claim_opened')
        s.keys('Enter', 'claim opened at the counter', 'Enter')
        s.wait(r'Sent: End %s: claim_opened' % ticket)
        s.wait(r'No visit\.')
        hist = self.history(case_id)
        types = [h['type'] for h in hist]
        for t in ('visit.created', 'visit.called', 'note', 'consent', 'claim.fnol', 'visit.ended'):
            self.assertEqual(types.count(t), 1, t)
        ended = [h for h in hist if h['type'] == 'visit.ended'][0]
        self.assertEqual(ended['outcome'], 'claim_opened')

        # call next: a customer registered at the front desk
        front = self.terminal('mad01', 'front-a', agent='fiona')
        v2 = front.ok('VISIT_CREATE', service='policy_inquiry',
                      customer={'phone': '600 555 002', 'name': 'Jorge Sanz'})['result']
        s.keys('F4')
        s.wait(r'Ticket %s to counter 2' % v2['ticket'])
        s.wait(r'Jorge Sanz')
        # handed over to the contact centre: the visit ends, a callback waits in the queue
        s.keys('F9', 'Enter')
        s.choose('voice')
        s.keys('Enter', 'Call back with the renewal quote', 'Enter')
        m = s.wait(r'Handed over to callcentre as (I-\d+)')
        ix = self.d.get('/v1/interactions/' + m.group(1))[1]
        self.assertEqual((ix['queue'], ix['case_id']), ('callcentre', v2['case_id']))

        # an offer pushed by the router, accepted on the terminal
        self.d.request('PUT', '/v1/agents/teresa/state', {'state': 'available'})
        v3 = front.ok('VISIT_CREATE', service='policy_inquiry',
                      customer={'phone': '600 555 003', 'name': 'Alba Ruiz'})['result']
        s.wait(r'New offer R-\d+')
        s.keys('F10')
        s.wait(r'Offers: Enter accepts')
        s.keys('Enter')
        s.wait(r'Offer accepted: %s' % v3['visit'])
        self.d.request('PUT', '/v1/agents/teresa/state', {'state': 'away'})
        s.keys('F6', 'Enter', 'Enter')
        s.wait(r'Sent: End')
        self.assertEqual(self.r.hget('omnicc:{main}:ix:' + v3['visit'], 'state'), b'completed')
        # the help screen
        s.keys('?')
        s.wait(r'When the link is down the terminal keeps working')
        s.keys('Escape')

    def test_link_cut_mid_visit_the_teller_keeps_working_and_all_is_delivered_once(self):
        s = self.teller_screen('desk-b', 'bruno')
        front = self.terminal('mad01', 'front-b', agent='flor')
        v1 = front.ok('VISIT_CREATE', service='documents',
                      customer={'phone': '600 666 001', 'name': 'Carmen Vidal'})['result']
        s.keys('F4')
        s.wait(r'Ticket %s to counter 2' % v1['ticket'])

        # the link goes down mid-visit
        self.proxy.cut()
        s.wait(r'OFFLINE')
        s.keys('F5', 'Signed the documents while offline', 'Enter')
        s.wait(r'Saved OFFLINE \(sent when the link returns\): Note')
        s.keys('F2', 'Enter', '600666001', 'Enter', 'Enter')
        s.wait(r'OFFLINE: Customer lookup needs the link to the server; nothing was done')
        s.keys('Escape')
        s.keys('F6')
        s.choose('documents_received')
        s.keys('Enter', 'Enter')
        s.wait(r'Pending: 2')
        s.keys('F4')
        s.wait(r'OFFLINE: Call next needs the link')
        # a new walk-in served offline, a note on it, and a handover
        s.keys('F3')
        s.wait(r'Walk-in visit')
        s.choose('documents')
        s.keys('Enter', 'Diego Offline', 'Enter', 'Enter', '600 666 002', 'Enter', 'Enter',
               'Enter', 'Enter')
        s.wait(r'Pending: 3')
        s.keys('F5', 'Brought the signed mandate', 'Enter')
        s.wait(r'Pending: 4')
        s.keys('F9', 'Enter', 'Enter', 'Please call to finish the mandate', 'Enter')
        s.wait(r'Pending: 5')
        s.keys('F11')
        s.wait(r'PENDING Handover to callcentre')
        s.keys('Escape')

        # the terminal is killed and started again, still offline: the spool survives
        pid = s.pid()
        self.assertIsNotNone(pid)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        s.stop()
        s.start()
        s.wait(r'5 actions from before wait in the spool')
        s.keys('bruno', 'Enter', self.tokens['bruno'], 'Enter')
        s.wait(r'on this terminal only')
        s.wait(r'OFFLINE')
        s.wait(r'Pending: 5')

        # the link returns: everything is delivered, once
        self.proxy.restore()
        s.wait(r'ONLINE', 15)
        s.wait(r'Pending: 0\s', 20)
        hist = self.history(v1['case_id'])
        notes = [h for h in hist if h['type'] == 'note']
        self.assertEqual([n['text'] for n in notes], ['Signed the documents while offline'])
        ended = [h for h in hist if h['type'] == 'visit.ended']
        self.assertEqual([e['outcome'] for e in ended], ['documents_received'])
        cust = self.d.get('/v1/customers?phone=600666002')[1]
        self.assertEqual(len(cust['cases']), 1)
        hist2 = self.history(cust['cases'][0]['id'])
        types = [h['type'] for h in hist2]
        self.assertEqual(types.count('visit.created'), 1)
        self.assertEqual(types.count('note'), 1)
        self.assertEqual(types.count('branch.handover'), 1)
        self.assertEqual([h['outcome'] for h in hist2 if h['type'] == 'visit.ended'], ['handover'])
        created = [h for h in hist2 if h['type'] == 'visit.created'][0]
        # the walk-in keeps the terminal's time of capture beside the server's receipt
        self.assertLess(int(created['captured_at']), int(created['at']))

        # an acknowledgement lost on the way: the resend returns the first result
        s.keys('F2')
        s.choose('phone')
        s.keys('Enter', '600666002', 'Enter', 'Enter')
        s.wait(r'found \(lookup logged\)')
        self.proxy.mute = True
        s.keys('F5', 'Said once, delivered once', 'Enter')
        s.wait(r'Pending: 1')
        s.wait(r'OFFLINE', 10)  # no answer within the timeout: the link is dropped
        self.proxy.cut()
        self.proxy.restore()
        s.wait(r'Pending: 0\s', 20)
        hist2 = self.history(cust['cases'][0]['id'])
        self.assertEqual([h['text'] for h in hist2 if h['type'] == 'note'],
                         ['Brought the signed mandate', 'Said once, delivered once'])
        s.keys('F11')
        s.wait(r'sent\s+Note: Said once')
        # the terminal's journal: the second send was answered with the first result
        with open(os.path.join(self.tmp, 'spool-desk-b', 'journal')) as f:
            marks = [json.loads(line) for line in f if '"mark"' in line]
        self.assertTrue(any(m['result'].startswith('delivered before; Note: Said once')
                            for m in marks), marks)


if __name__ == '__main__':
    unittest.main()
