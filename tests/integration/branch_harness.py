"""Branch terminal bridge test helpers: a certificate authority made with the openssl command
line (issue, revoke, CRL), a terminal client speaking the framed protocol over mutual TLS,
and a forwarding proxy whose link can be cut and restored."""
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid

CA_CONF = """
[ ca ]
default_ca = ca_default
[ ca_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
certificate = $dir/ca.pem
private_key = $dir/ca.key
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 30
default_crl_days = 30
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
[ ext_client ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = $ENV::SAN
[ ext_server ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $ENV::SAN
"""


def run(args, env=None, **kw):
    e = dict(os.environ)
    e.setdefault('SAN', 'DNS:unused.invalid')  # the CA config reads it in every command
    e.update(env or {})
    out = subprocess.run(args, capture_output=True, text=True, env=e, timeout=60, **kw)
    if out.returncode != 0:
        raise RuntimeError('%s failed: %s' % (' '.join(args[:3]), out.stderr))
    return out.stdout


class CA:
    """A small CA in its own directory: ca.pem, ca.key, index.txt; EC P-256 keys."""

    def __init__(self, directory, name='Test Branch CA'):
        self.dir = directory
        os.makedirs(os.path.join(directory, 'newcerts'), exist_ok=True)
        open(os.path.join(directory, 'index.txt'), 'w').close()
        with open(os.path.join(directory, 'serial'), 'w') as f:
            f.write('1000\n')
        with open(os.path.join(directory, 'crlnumber'), 'w') as f:
            f.write('01\n')
        self.conf = os.path.join(directory, 'ca.cnf')
        with open(self.conf, 'w') as f:
            f.write(CA_CONF.format(dir=directory))
        self.cert = os.path.join(directory, 'ca.pem')
        self.key = os.path.join(directory, 'ca.key')
        run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
             '-nodes', '-keyout', self.key, '-out', self.cert, '-days', '365', '-subj',
             '/CN=' + name, '-addext', 'basicConstraints=critical,CA:TRUE',
             '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
        self.crl = os.path.join(directory, 'crl.pem')
        self.gen_crl()

    def issue(self, name, cn, san='DNS:terminal.invalid', server=False, days=30,
              startdate=None, enddate=None):
        """A certificate and key in this CA's directory; returns (cert, key)."""
        key = os.path.join(self.dir, name + '.key')
        csr = os.path.join(self.dir, name + '.csr')
        cert = os.path.join(self.dir, name + '.pem')
        run(['openssl', 'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
             '-keyout', key, '-out', csr, '-subj', '/CN=' + cn])
        args = ['openssl', 'ca', '-batch', '-notext', '-config', self.conf, '-extensions',
                'ext_server' if server else 'ext_client', '-in', csr, '-out', cert]
        if startdate:
            args += ['-startdate', startdate, '-enddate', enddate]
        else:
            args += ['-days', str(days)]
        run(args, env={'SAN': san})
        return cert, key

    def terminal(self, branch, terminal, how='san'):
        """A terminal certificate naming branch and terminal by SAN URI (or CN)."""
        name = '%s-%s-%s' % (branch, terminal, uuid.uuid4().hex[:6])
        if how == 'san':
            return self.issue(name, 'teller terminal', san='URI:urn:omnicc:terminal:%s:%s' % (branch, terminal))
        return self.issue(name, '%s@%s' % (terminal, branch))

    def serial(self, cert):
        out = run(['openssl', 'x509', '-in', cert, '-noout', '-serial'])
        return out.strip().split('=', 1)[1]

    def revoke(self, cert):
        run(['openssl', 'ca', '-config', self.conf, '-revoke', cert])
        self.gen_crl()

    def gen_crl(self):
        run(['openssl', 'ca', '-config', self.conf, '-gencrl', '-out', self.crl])


class Closed(Exception):
    pass


class Terminal:
    """One terminal connection: 4-byte big-endian length + JSON frames over mutual TLS."""

    def __init__(self, port, cert, key, ca, host='127.0.0.1', timeout=10):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        ctx.check_hostname = False
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname='localhost')
        self.sock.settimeout(timeout)
        self.buf = b''
        self.events = []
        self.seq = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, obj):
        data = json.dumps(obj).encode()
        self.sock.sendall(struct.pack('>I', len(data)) + data)

    def _fill(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed('eof')
            self.buf += chunk

    def recv(self):
        self._fill(4)
        n = struct.unpack('>I', self.buf[:4])[0]
        self._fill(4 + n)
        data, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        return json.loads(data)

    def reply(self, msg_id):
        """The ACK/NACK/WELCOME/PONG naming msg_id; EVENTs met on the way are kept."""
        while True:
            f = self.recv()
            if f.get('type') == 'EVENT':
                self.events.append(f)
                self.seq = max(self.seq, f['seq'])
                continue
            if f.get('msg_id') == msg_id or (msg_id is None and f.get('msg_id') is None):
                return f
            raise AssertionError('unexpected frame %r waiting for %s' % (f, msg_id))

    def request(self, type_, msg_id=None, **fields):
        msg_id = msg_id or uuid.uuid4().hex
        obj = {'v': 1, 'type': type_, 'msg_id': msg_id}
        obj.update(fields)
        self.send(obj)
        return self.reply(msg_id)

    def ok(self, type_, **fields):
        r = self.request(type_, **fields)
        if r.get('type') not in ('ACK', 'WELCOME', 'PONG'):
            raise AssertionError('%s refused: %r' % (type_, r))
        return r

    def hello(self, cursor=None):
        fields = {} if cursor is None else {'cursor': cursor}
        return self.ok('HELLO', **fields)

    def wait_event(self, name, timeout=5.0, pred=None):
        deadline = time.time() + timeout
        while True:
            for e in self.events:
                if e['event'] == name and (pred is None or pred(e)):
                    self.events.remove(e)
                    return e
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError('no %s event (have %r)' % (name, [e['event'] for e in self.events]))
            self.sock.settimeout(left)
            try:
                f = self.recv()
            except (socket.timeout, TimeoutError):
                continue
            finally:
                self.sock.settimeout(10)
            if f.get('type') == 'EVENT':
                self.events.append(f)
                self.seq = max(self.seq, f['seq'])

    def refused(self, timeout=5.0):
        """True when the server ends the connection (TLS alert, reset or EOF) before answering."""
        try:
            self.sock.settimeout(timeout)
            self.send({'v': 1, 'type': 'HELLO', 'msg_id': 'probe'})
            f = self.recv()
            return f.get('type') not in ('WELCOME',)
        except (Closed, ssl.SSLError, OSError):
            return True


def tls_refused(port, cert, key, ca):
    """Connect and say HELLO; True when the server refuses (at the handshake or right after)."""
    try:
        t = Terminal(port, cert, key, ca, timeout=5)
    except (ssl.SSLError, OSError):
        return True
    try:
        return t.refused()
    finally:
        t.close()


class Proxy:
    """A TCP forwarder between a terminal and omniccd whose link can be cut (every connection
    reset, new ones refused) and restored."""

    def __init__(self, target_port):
        self.target = ('127.0.0.1', target_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.up = True
        self.mute = False  # replies from the server are swallowed (requests still arrive)
        self.pairs = []
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if not self.up:
                self._reset(c)
                continue
            try:
                s = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._reset(c)
                continue
            with self.lock:
                self.pairs.append((c, s))
            threading.Thread(target=self._pump, args=(c, s), daemon=True).start()

    @staticmethod
    def _reset(sock):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            sock.close()
        except OSError:
            pass

    def _pump(self, a, b):
        socks = [a, b]
        try:
            while True:
                r, _, _ = select.select(socks, [], [], 0.2)
                if not self.up:
                    break
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError('closed')
                    if s is b and self.mute:
                        continue
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            self._reset(a)
            self._reset(b)
            with self.lock:
                if (a, b) in self.pairs:
                    self.pairs.remove((a, b))

    def cut(self):
        """Reset every connection and refuse new ones: the link is down."""
        self.up = False
        time.sleep(0.4)

    def restore(self):
        self.up = True
        self.mute = False

    def stop(self):
        self.stopped = True
        self.up = False
        self.lsock.close()
