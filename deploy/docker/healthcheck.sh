#!/bin/bash
# HEALTHCHECK of the expertd images: GET /health, healthy on 200 (503 = loading or draining).
# Plain bash /dev/tcp instead of curl, which would pull ~20 MB of TLS and LDAP libraries into a
# runtime image that otherwise holds only what `ldd expertd` names.
exec 3<>"/dev/tcp/127.0.0.1/${EXPERTD_PORT:-8080}" || exit 1
printf 'GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 3 status <&3 || exit 1
case "$status" in
"HTTP/1."?" 200 "*) exit 0 ;;
*) exit 1 ;;
esac
