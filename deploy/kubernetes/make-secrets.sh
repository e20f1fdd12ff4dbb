#!/bin/sh
# Writes a random password into each of base/secrets/redis-password and
# base/secrets/respgate-password that does not exist yet (it never replaces one), readable only
# by you. `kubectl apply -k` turns them into the redis-auth and respgate-auth Secrets. Run it
# once, before the first apply, and keep the files: clients need respgate-password.
set -eu
dir=$(dirname "$0")/base/secrets
umask 077
for name in redis-password respgate-password; do
  if [ ! -s "$dir/$name" ]; then
    # 32 random bytes as 64 hex digits: nothing that needs quoting in redis.conf or a URL.
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$dir/$name"
    echo "make-secrets: wrote $dir/$name"
  fi
done
