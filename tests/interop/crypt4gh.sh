#!/usr/bin/env bash
# Crypt4GH interop: crypto/crypt4gh.c (through c4ghtool) against crypt4gh_ref.py, an independent
# implementation on python3-cryptography, in both directions: files and keys made by Python read
# here, files and keys made here read by Python. Sizes at the segment edges, several recipients,
# packets for strangers, edit lists, the AEAD method, OpenSSH ed25519 keys (with and without a
# passphrase, each cipher ssh-keygen writes), Crypt4GH keys protected with scrypt and bcrypt.
#   crypt4gh.sh C4GHTOOL SRCDIR WORKDIR
set -euo pipefail
tool=$1 src=$2 work=$3
# Debian's interpreter, where scripts/deps.sh installs python3-cryptography and python3-bcrypt.
py=python3
[[ -x /usr/bin/python3 ]] && py=/usr/bin/python3
ref="$py $src/crypt4gh_ref.py"
rm -rf "$work"
mkdir -p "$work"
cd "$work"
umask 077

printf 'python passphrase\n' >pass.py
printf 'c passphrase\n' >pass.c
$ref keygen py.sec py.pub --passphrase-file pass.py
$ref keygen py2.sec py2.pub
"$tool" keygen c.sec pass.c >c.pub
"$tool" keygen c2.sec - >c2.pub
# The public key each side derives from the other's private key file (scrypt-protected or not).
"$tool" pubkey py.sec pass.py | cmp - py.pub
"$tool" pubkey py2.sec | cmp - py2.pub
head -c 70000 /dev/urandom >plain.keys
"$tool" encrypt py.pub <plain.keys >k1.c4gh
$ref decrypt --sk py.sec --passphrase-file pass.py <k1.c4gh | cmp - plain.keys
$ref encrypt --recipient c.pub <plain.keys >k2.c4gh
$ref decrypt --sk c.sec --passphrase-file pass.c <k2.c4gh | cmp - plain.keys
"$tool" decrypt c.sec pass.c <k2.c4gh | cmp - plain.keys
ok=5
for size in 0 1 65535 65536 65537 200000 1048577; do
	head -c "$size" /dev/urandom >plain.$size
	# Python -> C: two recipients (we are the second), a stranger's packet first.
	$ref encrypt --recipient py2.pub --recipient c2.pub --decoy 1 <plain.$size >py.$size.c4gh
	"$tool" decrypt c2.sec <py.$size.c4gh | cmp - plain.$size
	# ... and with the AEAD method (sequence numbers bound, a final segment).
	$ref encrypt --recipient c2.pub --aead 18446744073709551614 <plain.$size >pya.$size.c4gh
	"$tool" decrypt c2.sec <pya.$size.c4gh | cmp - plain.$size
	# C -> Python, for two recipients; Python reads our unprotected key file too.
	"$tool" encrypt py2.pub c2.pub <plain.$size >c.$size.c4gh
	$ref decrypt --sk py2.sec <c.$size.c4gh | cmp - plain.$size
	$ref decrypt --sk c2.sec <c.$size.c4gh | cmp - plain.$size
	ok=$((ok + 4))
done
# Edit lists made by Python, applied here as Python applies them.
head -c 500000 /dev/urandom >plain.edit
for edits in "0,7853,71721,307929,51299,38" "10" "65530,12" "1,1,1,1,196608" "0" "70000,100000000,5"; do
	$ref encrypt --recipient c2.pub --edit "$edits" <plain.edit >e.c4gh
	$ref decrypt --sk c2.sec <e.c4gh >want
	"$tool" decrypt c2.sec <e.c4gh | cmp - want
	ok=$((ok + 1))
done
# Not addressed to us: refused, nothing written.
$ref encrypt --recipient py2.pub <plain.1 >other.c4gh
if "$tool" decrypt c2.sec <other.c4gh >out 2>err; then echo "wrong recipient decrypted" >&2; exit 1; fi
grep -q "not addressed to this key" err
test ! -s out
# An OpenSSH ed25519 key: Python converts it independently; files for it read here.
ssh-keygen -q -t ed25519 -N '' -C interop -f ssh.key
# X25519 public key of an OpenSSH ed25519 key file (passphrase in $2 if any), by python3-
# cryptography: SHA-512 of the seed, clamped, times the base point.
ssh_x25519() {
	$py - "$@" <<'PY'
import base64, hashlib, sys
from cryptography.hazmat.primitives import serialization as s
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
pw = open(sys.argv[2], 'rb').read().rstrip(b'\n') if len(sys.argv) > 2 else None
k = s.load_ssh_private_key(open(sys.argv[1], 'rb').read(), pw)
seed = k.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption())
h = bytearray(hashlib.sha512(seed).digest()[:32]); h[0] &= 248; h[31] &= 127; h[31] |= 64
pk = X25519PrivateKey.from_private_bytes(bytes(h)).public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
print('-----BEGIN CRYPT4GH PUBLIC KEY-----\n%s\n-----END CRYPT4GH PUBLIC KEY-----' % base64.b64encode(pk).decode())
PY
}
ssh_x25519 ssh.key >ssh.pub
"$tool" pubkey ssh.key | cmp - ssh.pub
$ref encrypt --recipient ssh.pub <plain.65537 >ssh.c4gh
"$tool" decrypt ssh.key <ssh.c4gh | cmp - plain.65537
ok=$((ok + 2))
# Passphrase-protected OpenSSH keys (kdf bcrypt, OpenSSH's default 16 rounds), for each cipher
# ssh-keygen writes: OpenSSH itself removes the passphrase from a copy (ssh-keygen -p), Python
# converts that copy, and our reading of the protected key must give the same X25519 key.
printf 'ssh passphrase\n' >pass.ssh
for cipher in aes256-ctr aes256-gcm@openssh.com chacha20-poly1305@openssh.com aes128-cbc; do
	rm -f ssh-enc.key ssh-enc.key.pub ssh-dec.key
	ssh-keygen -q -t ed25519 -N 'ssh passphrase' -Z "$cipher" -C interop -f ssh-enc.key
	cp ssh-enc.key ssh-dec.key
	ssh-keygen -q -p -P 'ssh passphrase' -N '' -f ssh-dec.key >/dev/null
	ssh_x25519 ssh-dec.key >ssh-enc.pub
	"$tool" pubkey ssh-enc.key pass.ssh | cmp - ssh-enc.pub
	if "$tool" pubkey ssh-enc.key pass.py >out 2>err; then
		echo "an OpenSSH key ($cipher) opened with the wrong passphrase" >&2; exit 1
	fi
	grep -q "passphrase does not open" err
	ok=$((ok + 2))
done
# aes256-ctr (the default) python3-cryptography also opens itself, passphrase and all.
ssh-keygen -q -t ed25519 -N 'ssh passphrase' -C interop -f ssh-ctr.key
ssh_x25519 ssh-ctr.key pass.ssh >ssh-ctr.pub
"$tool" pubkey ssh-ctr.key pass.ssh | cmp - ssh-ctr.pub
$ref encrypt --recipient ssh-ctr.pub <plain.65537 >ssh-ctr.c4gh
"$tool" decrypt ssh-ctr.key pass.ssh <ssh-ctr.c4gh | cmp - plain.65537
ok=$((ok + 2))
# A Crypt4GH key protected with bcrypt (python3-bcrypt's bcrypt_pbkdf), at the Python reference
# tool's default 16 rounds and the C one's 100: read here, files for it decrypted.
for rounds in 16 100; do
	$ref keygen pyb.sec pyb.pub --passphrase-file pass.py --kdf bcrypt --rounds $rounds
	"$tool" pubkey pyb.sec pass.py | cmp - pyb.pub
	$ref encrypt --recipient pyb.pub <plain.65537 >pyb.c4gh
	"$tool" decrypt pyb.sec pass.py <pyb.c4gh | cmp - plain.65537
	if "$tool" pubkey pyb.sec pass.c >out 2>err; then
		echo "a bcrypt-protected key opened with the wrong passphrase" >&2; exit 1
	fi
	ok=$((ok + 3))
done
echo "crypt4gh interop: $ok checks passed"
