#!/bin/sh
# Writes compose/.env from compose/.env.example with a fresh random secret in every empty
# NAME= line (192 bits from /dev/urandom, hex: safe inside URLs), then the credentials of each
# service (the list below): NATS_PASSWORD_<SERVICE> (its own NATS user, see nats.conf) and
# GRPC_TOKEN_<SERVICE> (its own gRPC identity, grpc.client_token), and GRPC_AUTH_TOKEN, the
# platform's gRPC token (role admin: the operator's CLI). Refuses to overwrite an existing
# file; the file is readable by its owner only.
# Also makes, beside OUTPUT in tls/ (0700), unless they exist already:
# - serve's HTTPS certificate and key, serve.{crt,key} (self-signed, EC P-256, for the names
#   serve, localhost and 127.0.0.1 plus $SERVE_TLS_SAN, e.g.
#   SERVE_TLS_SAN=DNS:gpu1.example,IP:10.0.0.5). Clients trust tls/serve.crt.
# - the services' gRPC certificate and key, grpc.{crt,key} (the same kind, for every service
#   name, localhost and 127.0.0.1 plus $GRPC_TLS_SAN): each service serves it and trusts it
#   when it calls another; so does the operator's CLI (grpc.tls_cert_file).
# and writes every time tls/grpc-identities.yaml: each service's identity (role service) by
# the sha256 of its GRPC_TOKEN_<SERVICE> in OUTPUT. One-line entries of other identities
# already there are kept: `  - {name: alice, role: promoter, token_sha256: <sha256 hex>}`.
# Needs OpenSSL 1.1.1 or later.
#   compose/setup.sh [OUTPUT]            (default: compose/.env beside this script; the tls/
#                                         folder goes beside OUTPUT)
#   compose/setup.sh --update [OUTPUT]   an existing .env: add a fresh secret for every secret
#                                         it lacks (a newer version's), change nothing else;
#                                         make the certificates if missing
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

# the platform's services: each gets its own NATS user and gRPC identity
# (tests/deploy/test_compose.py checks this list against the catalog)
services="registry ingest synth trainer evaluator monitor serve"
upper() { printf '%s' "$1" | tr 'a-z' 'A-Z'; }
# the secrets setup.sh adds beyond the example's: one NAME per line
service_secrets() {
  echo GRPC_AUTH_TOKEN
  for svc in $services; do
    echo "NATS_PASSWORD_$(upper "$svc")"
    echo "GRPC_TOKEN_$(upper "$svc")"
  done
}

# a certificate and key, tls/NAME.{crt,key}, for the names in SAN: the key stays mode 0644 so
# that the container's user (uid 10001) can read it through the bind mount; the folder (0700)
# keeps the other users of this machine out
make_cert() {
  name=$1
  san=$2
  if [ -s "$tls_dir/$name.crt" ] && [ -s "$tls_dir/$name.key" ]; then
    echo "setup.sh: kept $tls_dir/$name.crt and $name.key (delete them for a new certificate)"
    return
  fi
  mkdir -p "$tls_dir"
  chmod 700 "$tls_dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
    -subj "/CN=$name" -addext "subjectAltName=$san" \
    -keyout "$tls_dir/$name.key.tmp" -out "$tls_dir/$name.crt.tmp" 2>"$tls_dir/openssl.log" || {
    cat "$tls_dir/openssl.log" >&2
    rm -f "$tls_dir/$name.key.tmp" "$tls_dir/$name.crt.tmp" "$tls_dir/openssl.log"
    echo "setup.sh: openssl could not make the certificate" >&2
    exit 1
  }
  rm -f "$tls_dir/openssl.log"
  chmod 644 "$tls_dir/$name.key.tmp" "$tls_dir/$name.crt.tmp"
  mv "$tls_dir/$name.key.tmp" "$tls_dir/$name.key"
  mv "$tls_dir/$name.crt.tmp" "$tls_dir/$name.crt"
  echo "setup.sh: wrote $tls_dir/$name.crt and $name.key ($san)"
}

make_tls() {
  make_cert serve "DNS:serve,DNS:localhost,IP:127.0.0.1${SERVE_TLS_SAN:+,$SERVE_TLS_SAN}"
  names=""
  for svc in $services; do names="${names}DNS:$svc,"; done
  make_cert grpc "${names}DNS:localhost,IP:127.0.0.1${GRPC_TLS_SAN:+,$GRPC_TLS_SAN}"
}

# tls/grpc-identities.yaml: the services' identities from the tokens in $out, after the
# one-line entries of other identities the file has (mode 0644 like the keys: it holds only
# digests, and the container's user reads it through the bind mount)
write_identities() {
  file="$tls_dir/grpc-identities.yaml"
  mkdir -p "$tls_dir"
  chmod 700 "$tls_dir"
  {
    echo "# gRPC identities (grpc.identities_file of every service), written by compose/setup.sh."
    echo "# The services' entries (role service) are rewritten from compose/.env on every run;"
    echo "# add people and systems as one-line entries, kept as they are:"
    echo "#   - {name: alice, role: promoter, token_sha256: <sha256 hex of alice's token>}"
    echo "identities:"
    if [ -f "$file" ]; then
      grep '^  - {' "$file" | grep -v 'role: service' || true
    fi
    for svc in $services; do
      token=$(sed -n "s/^GRPC_TOKEN_$(upper "$svc")=//p" "$out" | tail -n 1)
      if [ -z "$token" ]; then
        echo "setup.sh: $out has no GRPC_TOKEN_$(upper "$svc")" >&2
        exit 1
      fi
      digest=$(printf '%s' "$token" | openssl dgst -sha256 -r | cut -d ' ' -f 1)
      echo "  - {name: $svc, role: service, token_sha256: $digest}"
    done
  } > "$file.tmp"
  chmod 644 "$file.tmp"
  mv "$file.tmp" "$file"
  echo "setup.sh: wrote $file"
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
  for name in $(service_secrets); do
    if ! grep -q "^$name=" "$out"; then
      printf '%s=%s\n' "$name" "$(secret)" >> "$out"
      added=$((added + 1))
    fi
  done
  echo "setup.sh: added $added new secrets to $out"
  make_tls
  write_identities
  exit 0
fi

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
{
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      [A-Z]*=) printf '%s%s\n' "$line" "$(secret)" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done < "$here/.env.example"
  echo
  echo "# --- each service's own credentials (generated by setup.sh, not in .env.example) --------"
  echo "# GRPC_AUTH_TOKEN: the platform's gRPC token (role admin), for the operator's CLI"
  echo "# NATS_PASSWORD_<SERVICE>: its NATS user; GRPC_TOKEN_<SERVICE>: its gRPC identity"
  for name in $(service_secrets); do
    printf '%s=%s\n' "$name" "$(secret)"
  done
} > "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "setup.sh: wrote $out ($(grep -c '^[A-Z_]*=[0-9a-f]\{48\}$' "$out") secrets)"
make_tls
write_identities
