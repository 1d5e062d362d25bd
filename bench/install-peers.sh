#!/usr/bin/env bash
# The peers compare_peers.py runs beside scalix-migrate: mbsync (Debian's isync) and the Perl
# modules imapsync 2.229 needs (the script itself is ../shared/peers/imapsync, read-only), plus
# GNU time for peak RSS. Root and apt; nothing is fetched from anywhere else.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root (apt-get install)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends time isync libmail-imapclient-perl \
  libio-socket-ssl-perl libdigest-hmac-perl libterm-readkey-perl libfile-copy-recursive-perl \
  libio-tee-perl libunicode-string-perl libreadonly-perl libsys-meminfo-perl \
  libregexp-common-perl libencode-imaputf7-perl libdata-uniqid-perl libproc-processtable-perl \
  libjson-webtoken-perl libcrypt-openssl-rsa-perl libhtml-parser-perl libwww-perl libjson-perl \
  libnet-dns-perl libmodule-scandeps-perl libfile-tail-perl libdist-checkconflicts-perl \
  libcgi-pm-perl libauthen-ntlm-perl libio-socket-inet6-perl libnet-ssleay-perl >/dev/null
perl "$(dirname "$0")/../../shared/peers/imapsync" --version >/dev/null
mbsync --version
