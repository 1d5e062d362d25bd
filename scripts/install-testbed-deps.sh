#!/usr/bin/env bash
# Installs the real servers the test suite runs against (Dovecot, OpenSSH's sshd) from Debian
# packages when they are missing. The tests fail, never skip, when these are absent: this script
# is what makes a fresh machine (and CI) able to run them.
set -euo pipefail

need=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# ssh-keygen comes with openssh-client (a dependency of openssh-server); openssl makes the test CA.
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# PostgreSQL (the journal's multi-worker backend; tests/support/postgres.py starts it): the
# server binaries, not just a client, which also creates /usr/lib/postgresql/<ver>/bin.
command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
  || need+=(postgresql)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing test-bed packages: ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "installing test-bed packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# policy-rc.d (present in containers) keeps the packages from starting system services;
# the tests start their own instances on loopback ports.
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
