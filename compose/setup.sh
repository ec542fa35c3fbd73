#!/bin/sh
# Writes compose/.env from compose/.env.example with a fresh random secret in every empty
# NAME= line (192 bits from /dev/urandom, hex: safe inside URLs). Refuses to overwrite an
# existing file; the file is readable by its owner only.
#   compose/setup.sh [OUTPUT]        (default: compose/.env beside this script)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/.env}
if [ -e "$out" ]; then
  echo "setup.sh: $out exists; delete it first to generate new secrets" >&2
  exit 1
fi
secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
umask 077
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
