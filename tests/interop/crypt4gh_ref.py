#!/usr/bin/env python3
"""An independent Crypt4GH 1.0 encoder and decoder, for interop tests of crypto/crypt4gh.c.

Written from the GA4GH specification (hts-specs crypt4gh, sections 3 and 4) and the documented
c4gh-v1 key format, on python3-cryptography (X25519, ChaCha20-Poly1305) and hashlib (BLAKE2b,
scrypt) and python3-bcrypt (bcrypt_pbkdf, for keys protected with "bcrypt"): no code in common
with the C side, which uses libsodium, OpenSSL and its own bcrypt_pbkdf.

  crypt4gh_ref.py keygen SK PK [--passphrase-file F [--kdf scrypt|bcrypt] [--rounds N]]
  crypt4gh_ref.py encrypt --recipient PK [--recipient PK]... [--edit L,L,...] [--aead SEQ]
                          [--decoy N] < plain > c4gh
  crypt4gh_ref.py decrypt --sk SK [--passphrase-file F] < c4gh > plain
  crypt4gh_ref.py shared-key READER_SK_HEX WRITER_PK_HEX     (prints the reader's K_shared)
"""
import argparse
import base64
import hashlib
import os
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization
from cryptography.exceptions import InvalidTag

SEG = 65536
RAW = serialization.Encoding.Raw


def die(msg):
    print('crypt4gh_ref: ' + msg, file=sys.stderr)
    sys.exit(1)


def pub_bytes(sk):
    return sk.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)


def shared_key(own_sk, peer_pk, writer):
    """Spec 3.3.1: Blake2b(K_dh || K_pr || K_pw), first 32 bytes."""
    dh = own_sk.exchange(X25519PublicKey.from_public_bytes(peer_pk))
    own = pub_bytes(own_sk)
    reader, wr = (peer_pk, own) if writer else (own, peer_pk)
    return hashlib.blake2b(dh + reader + wr, digest_size=64).digest()[:32]


def armour(kind, data):
    return ('-----BEGIN CRYPT4GH %s KEY-----\n%s\n-----END CRYPT4GH %s KEY-----\n'
            % (kind, base64.b64encode(data).decode(), kind)).encode()


def unarmour(text, kind):
    lines = [l.strip() for l in text.decode().strip().splitlines()]
    if lines[0] != '-----BEGIN CRYPT4GH %s KEY-----' % kind or \
       lines[-1] != '-----END CRYPT4GH %s KEY-----' % kind:
        die('not a Crypt4GH %s key' % kind.lower())
    return base64.b64decode(''.join(lines[1:-1]), validate=True)


def s16(b):
    return struct.pack('>H', len(b)) + b


def read_s16(buf, off):
    (n,) = struct.unpack_from('>H', buf, off)
    if off + 2 + n > len(buf):
        die('key cut short')
    return buf[off + 2:off + 2 + n], off + 2 + n


def kek(kdf, passphrase, rounds, salt):
    """The key-encryption key: scrypt as the reference tools use it (N = 2^14, r = 8, p = 1,
    rounds ignored), or bcrypt_pbkdf with the key's rounds (python3-bcrypt's bcrypt.kdf)."""
    if kdf == b'scrypt':
        return hashlib.scrypt(passphrase, salt=salt, n=1 << 14, r=8, p=1, dklen=32)
    if kdf == b'bcrypt':
        import bcrypt   # only here: the other commands run without python3-bcrypt
        return bcrypt.kdf(passphrase, salt, 32, rounds, ignore_few_rounds=True)
    die('unsupported kdf %r' % kdf)


def keygen(args):
    if args.secret_hex:
        sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(args.secret_hex))
    else:
        sk = X25519PrivateKey.generate()
    raw = sk.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    if args.passphrase_file:
        pw = open(args.passphrase_file, 'rb').read().rstrip(b'\n')
        kdf = args.kdf.encode()
        rounds = args.rounds if kdf == b'bcrypt' else 0
        salt, nonce = os.urandom(16), os.urandom(12)
        blob = nonce + ChaCha20Poly1305(kek(kdf, pw, rounds, salt)).encrypt(nonce, raw, None)
        enc = (b'c4gh-v1' + s16(kdf) + s16(struct.pack('>I', rounds) + salt) +
               s16(b'chacha20_poly1305') + s16(blob) + s16(b'made by crypt4gh_ref.py'))
    else:
        enc = b'c4gh-v1' + s16(b'none') + s16(b'none') + s16(raw)
    with open(args.sk, 'wb') as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(armour('PRIVATE', enc))
    with open(args.pk, 'wb') as f:
        f.write(armour('PUBLIC', pub_bytes(sk)))


def load_sk(path, passphrase_file):
    buf = unarmour(open(path, 'rb').read(), 'PRIVATE')
    if buf[:7] != b'c4gh-v1':
        die('no c4gh-v1 magic')
    kdf, off = read_s16(buf, 7)
    if kdf != b'none':
        opts, off = read_s16(buf, off)
    cipher, off = read_s16(buf, off)
    blob, off = read_s16(buf, off)
    if cipher == b'none':
        raw = blob
    else:
        if cipher != b'chacha20_poly1305':
            die('unsupported key protection')
        pw = open(passphrase_file, 'rb').read().rstrip(b'\n')
        (rounds,) = struct.unpack_from('>I', opts, 0)
        raw = ChaCha20Poly1305(kek(kdf, pw, rounds, opts[4:])).decrypt(blob[:12], blob[12:],
                                                                      None)
    return X25519PrivateKey.from_private_bytes(raw)


def packet(writer_sk, reader_pk, payload):
    nonce = os.urandom(12)
    ct = ChaCha20Poly1305(shared_key(writer_sk, reader_pk, True)).encrypt(nonce, payload, None)
    body = struct.pack('<I', 0) + pub_bytes(writer_sk) + nonce + ct
    return struct.pack('<I', 4 + len(body)) + body


def encrypt(args):
    recipients = [unarmour(open(p, 'rb').read(), 'PUBLIC') for p in args.recipient]
    writer = X25519PrivateKey.generate()
    data_key = os.urandom(32)
    method = 1 if args.aead is not None else 0
    params = struct.pack('<II', 0, method) + data_key
    if method == 1:
        params += struct.pack('<Q', args.aead)
    packets = []
    for _ in range(args.decoy):    # packets for a stranger, which a reader must skip
        packets.append(packet(writer, pub_bytes(X25519PrivateKey.generate()), params))
    for pk in recipients:
        packets.append(packet(writer, pk, params))
        if args.edit is not None:
            lengths = [int(x) for x in args.edit.split(',') if x != '']
            packets.append(packet(writer, pk, struct.pack('<II', 1, len(lengths)) +
                                  b''.join(struct.pack('<Q', l) for l in lengths)))
    out = sys.stdout.buffer
    out.write(b'crypt4gh' + struct.pack('<II', 1, len(packets)) + b''.join(packets))
    aead = ChaCha20Poly1305(data_key)
    src = sys.stdin.buffer
    i = 0
    last = None
    while True:
        seg = src.read(SEG)
        if not seg and (method == 0 or (last is not None and last < SEG)):
            break
        nonce = os.urandom(12)
        ad = struct.pack('<Q', (args.aead + i) % (1 << 64)) if method == 1 else None
        out.write(nonce + aead.encrypt(nonce, seg, ad))
        i += 1
        last = len(seg)
        if method == 1 and len(seg) < SEG:
            break


def decrypt(args):
    sk = load_sk(args.sk, args.passphrase_file)
    buf = sys.stdin.buffer.read()
    if buf[:8] != b'crypt4gh':
        die('no magic')
    version, count = struct.unpack_from('<II', buf, 8)
    if version != 1:
        die('version %d' % version)
    off = 16
    keys, edits, method = [], None, None
    for _ in range(count):
        (plen, enc) = struct.unpack_from('<II', buf, off)
        pkt = buf[off:off + plen]
        off += plen
        if enc != 0:
            continue
        wpk, nonce, ct = pkt[8:40], pkt[40:52], pkt[52:]
        try:
            pt = ChaCha20Poly1305(shared_key(sk, wpk, False)).decrypt(nonce, ct, None)
        except InvalidTag:
            continue
        (ptype,) = struct.unpack_from('<I', pt, 0)
        if ptype == 0:
            (m,) = struct.unpack_from('<I', pt, 4)
            if method is not None and m != method:
                die('mixed methods')
            method = m
            seq = struct.unpack_from('<Q', pt, 40)[0] if m == 1 else 0
            keys.append((pt[8:40], seq))
        elif ptype == 1:
            if edits is not None:
                die('two edit lists')
            (n,) = struct.unpack_from('<I', pt, 4)
            edits = list(struct.unpack_from('<%dQ' % n, pt, 8))
        else:
            die('packet type %d' % ptype)
    if not keys:
        die('not addressed to this key')
    data = buf[off:]
    plain = []
    i = 0
    pos = 0
    last = None
    while pos < len(data):
        seg = data[pos:pos + SEG + 28]
        pos += len(seg)
        for k, seq in keys:
            ad = struct.pack('<Q', (seq + i) % (1 << 64)) if method == 1 else None
            try:
                plain.append(ChaCha20Poly1305(k).decrypt(seg[:12], seg[12:], ad))
                break
            except InvalidTag:
                pass
        else:
            die('segment %d does not authenticate' % i)
        last = len(seg) - 28
        i += 1
    if method == 1 and (last is None or last == SEG):
        die('the final segment is missing')
    text = b''.join(plain)
    if edits is not None:
        out, p = [], 0
        for j, l in enumerate(edits):
            if j % 2 == 0:
                p += l
                if j == len(edits) - 1:
                    out.append(text[p:])
            else:
                out.append(text[p:p + l])
                p += l
        text = b''.join(out) if edits else text
    sys.stdout.buffer.write(text)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest='cmd', required=True)
    k = sub.add_parser('keygen')
    k.add_argument('sk')
    k.add_argument('pk')
    k.add_argument('--passphrase-file')
    k.add_argument('--kdf', choices=['scrypt', 'bcrypt'], default='scrypt')
    k.add_argument('--rounds', type=int, default=16)
    k.add_argument('--secret-hex', help='the X25519 secret (known-answer vectors); default random')
    e = sub.add_parser('encrypt')
    e.add_argument('--recipient', action='append', required=True)
    e.add_argument('--edit')
    e.add_argument('--aead', type=int)
    e.add_argument('--decoy', type=int, default=0)
    d = sub.add_parser('decrypt')
    d.add_argument('--sk', required=True)
    d.add_argument('--passphrase-file')
    s = sub.add_parser('shared-key')
    s.add_argument('reader_sk')
    s.add_argument('writer_pk')
    a = ap.parse_args()
    if a.cmd == 'keygen':
        keygen(a)
    elif a.cmd == 'encrypt':
        encrypt(a)
    elif a.cmd == 'decrypt':
        decrypt(a)
    else:
        sk = X25519PrivateKey.from_private_bytes(bytes.fromhex(a.reader_sk))
        print(shared_key(sk, bytes.fromhex(a.writer_pk), False).hex())


if __name__ == '__main__':
    main()
