#!/bin/sh
# As the official image: own /data, drop to the user valkey, run the command.
set -eu
if [ "$(id -u)" = 0 ]; then
    chown -R valkey:valkey /data
    exec setpriv --reuid=valkey --regid=valkey --init-groups "$0" "$@"
fi
exec "$@"
