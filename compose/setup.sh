#!/bin/sh
# Writes compose/.env from compose/.env.example with a fresh random secret in every empty
# NAME= line (192 bits from /dev/urandom, hex: safe inside URLs). Refuses to overwrite an
# existing file; the file is readable by its owner only.
# Also makes serve's HTTPS certificate and key, compose/tls/serve.{crt,key} (self-signed,
# EC P-256, for the names serve, localhost and 127.0.0.1 plus $SERVE_TLS_SAN, e.g.
# SERVE_TLS_SAN=DNS:gpu1.example,IP:10.0.0.5), unless both exist already. Clients trust
# compose/tls/serve.crt. Needs OpenSSL 1.1.1 or later.
#   compose/setup.sh [OUTPUT]            (default: compose/.env beside this script; the tls/
#                                         folder goes beside OUTPUT)
#   compose/setup.sh --update [OUTPUT]   an existing .env: add a fresh secret for every secret
#                                         of the example it lacks (a newer version's), change
#                                         nothing else; make the certificate if missing
set -eu
here=$(cd "$(dirname "$0")" && pwd)
update=0
if [ "${1:-}" = "--update" ]; then
  update=1
  shift
fi
out=${1:-$here/.env}
tls_dir=$(dirname "$out")/tls
if ! command -v openssl >/dev/null 2>&1; then
  echo "setup.sh: openssl not found (it makes serve's TLS certificate); install it first" >&2
  exit 1
fi
if [ "$update" = 0 ] && [ -e "$out" ]; then
  echo "setup.sh: $out exists; delete it first to generate new secrets" \
    "(or add what a newer version needs: setup.sh --update)" >&2
  exit 1
fi
if [ "$update" = 1 ] && [ ! -e "$out" ]; then
  echo "setup.sh: $out does not exist; run setup.sh without --update" >&2
  exit 1
fi
secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
umask 077

# serve's certificate: the key stays mode 0644 so that the container's user (uid 10001) can
# read it through the bind mount; the folder (0700) keeps the other users of this machine out
make_tls() {
  if [ -s "$tls_dir/serve.crt" ] && [ -s "$tls_dir/serve.key" ]; then
    echo "setup.sh: kept $tls_dir/serve.crt and serve.key (delete them for a new certificate)"
    return
  fi
  mkdir -p "$tls_dir"
  chmod 700 "$tls_dir"
  san="DNS:serve,DNS:localhost,IP:127.0.0.1${SERVE_TLS_SAN:+,$SERVE_TLS_SAN}"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
    -subj "/CN=serve" -addext "subjectAltName=$san" \
    -keyout "$tls_dir/serve.key.tmp" -out "$tls_dir/serve.crt.tmp" 2>"$tls_dir/openssl.log" || {
    cat "$tls_dir/openssl.log" >&2
    rm -f "$tls_dir/serve.key.tmp" "$tls_dir/serve.crt.tmp" "$tls_dir/openssl.log"
    echo "setup.sh: openssl could not make the certificate" >&2
    exit 1
  }
  rm -f "$tls_dir/openssl.log"
  chmod 644 "$tls_dir/serve.key.tmp" "$tls_dir/serve.crt.tmp"
  mv "$tls_dir/serve.key.tmp" "$tls_dir/serve.key"
  mv "$tls_dir/serve.crt.tmp" "$tls_dir/serve.crt"
  echo "setup.sh: wrote $tls_dir/serve.crt and serve.key ($san)"
}

if [ "$update" = 1 ]; then
  added=0
  # a last line without its newline would run into the first one added
  if [ -s "$out" ] && [ -n "$(tail -c 1 "$out")" ]; then echo >> "$out"; fi
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      [A-Z]*=)
        if ! grep -q "^$line" "$out"; then
          printf '%s%s\n' "$line" "$(secret)" >> "$out"
          added=$((added + 1))
        fi
        ;;
    esac
  done < "$here/.env.example"
  echo "setup.sh: added $added new secrets to $out"
  make_tls
  exit 0
fi

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
while IFS= read -r line || [ -n "$line" ]; do
  case $line in
    [A-Z]*=) printf '%s%s\n' "$line" "$(secret)" ;;
    *) printf '%s\n' "$line" ;;
  esac
done < "$here/.env.example" > "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "setup.sh: wrote $out ($(grep -c '^[A-Z_]*=[0-9a-f]\{48\}$' "$out") secrets)"
make_tls
