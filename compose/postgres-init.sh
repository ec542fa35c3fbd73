#!/bin/sh
# First start of the PostgreSQL volume: one role and database for the registry, one for Argilla,
# with the passwords compose passes from compose/.env. (The image runs this once, as postgres.)
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
  --set tw_password="$TUNEWRIGHT_DB_PASSWORD" --set argilla_password="$ARGILLA_DB_PASSWORD" <<'SQL'
CREATE ROLE tunewright LOGIN PASSWORD :'tw_password';
CREATE DATABASE tunewright OWNER tunewright;
CREATE ROLE argilla LOGIN PASSWORD :'argilla_password';
CREATE DATABASE argilla OWNER argilla;
SQL
