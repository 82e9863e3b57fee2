#!/bin/sh
# Render users.acl.template into the ACL file redis.conf names, then exec the rest of the
# command line (redis-server ...). Used by deploy/compose.yaml and deploy/k8s alike.
#
#   REDIS_REGISTRY_PASSWORD, REDIS_SIMULATE_PASSWORD, REDIS_OPERATOR_PASSWORD,
#   REDIS_ADMIN_PASSWORD                                                     required
#   OFFLOAD_REGISTRY_KEY_PREFIX   default offload-registry
#   ACL_TEMPLATE, ACL_FILE        default /usr/local/etc/redis/users.acl.template, /run/redis/users.acl
#
# Passwords: at least 16 characters of A-Z a-z 0-9 . _ ~ - (URL-safe, so they go into
# redis://user:password@host URLs as they are; e.g. `openssl rand -hex 24`).
set -eu
template=${ACL_TEMPLATE:-/usr/local/etc/redis/users.acl.template}
out=${ACL_FILE:-/run/redis/users.acl}
prefix=${OFFLOAD_REGISTRY_KEY_PREFIX:-offload-registry}

fail() { echo "render-acl: $*" >&2; exit 1; }
check_password() {  # NAME VALUE
  case $2 in
    '') fail "$1 is not set" ;;
    CHANGE-ME*) fail "$1 still holds its placeholder" ;;
    *[!A-Za-z0-9._~-]*) fail "$1 may only hold A-Z a-z 0-9 . _ ~ -" ;;
  esac
  [ "${#2}" -ge 16 ] || fail "$1 must be at least 16 characters long"
}
check_password REDIS_REGISTRY_PASSWORD "${REDIS_REGISTRY_PASSWORD:-}"
check_password REDIS_SIMULATE_PASSWORD "${REDIS_SIMULATE_PASSWORD:-}"
check_password REDIS_OPERATOR_PASSWORD "${REDIS_OPERATOR_PASSWORD:-}"
check_password REDIS_ADMIN_PASSWORD "${REDIS_ADMIN_PASSWORD:-}"
case $prefix in
  '' | *[!A-Za-z0-9._:-]*) fail "OFFLOAD_REGISTRY_KEY_PREFIX may only hold A-Z a-z 0-9 . _ : -" ;;
esac

umask 077
sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' \
  -e "s/@KEY_PREFIX@/$prefix/g" \
  -e "s/@REDIS_REGISTRY_PASSWORD@/$REDIS_REGISTRY_PASSWORD/g" \
  -e "s/@REDIS_SIMULATE_PASSWORD@/$REDIS_SIMULATE_PASSWORD/g" \
  -e "s/@REDIS_OPERATOR_PASSWORD@/$REDIS_OPERATOR_PASSWORD/g" \
  -e "s/@REDIS_ADMIN_PASSWORD@/$REDIS_ADMIN_PASSWORD/g" \
  "$template" >"$out"
if grep -q '@[A-Z_]*@' "$out"; then
  fail "unrendered placeholder left in $out"
fi
exec "$@"
