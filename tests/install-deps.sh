#!/usr/bin/env bash
# Installs the Debian packages the tests run against (real Postfix, Dovecot,
# rbldnsd, redis-server, python3-dkim, OpenDKIM, postgrey, swaks). Needs root
# for apt-get; without root it only lists what is missing (the tests that need
# a missing tool skip with a printed reason).
set -euo pipefail
pkgs="postfix swaks dovecot-core rbldnsd python3-dkim python3-dnspython opendkim opendkim-tools postgrey redis-server gcc"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing Debian packages (run as root to install):$missing" >&2
	exit 0
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# Postfix must not be configured as the system mailer: the tests run their own instance.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian starts services on install where it can; the tests start their own.
for s in postfix dovecot opendkim postgrey redis-server rbldnsd; do
	service "$s" stop >/dev/null 2>&1 || true
done
