#!/usr/bin/env bash
# Regenerate the sample reports committed under reports/examples/cdnow/ (linked from the
# README): train on CDNOW, replay the weekly job at five dates whose outcome windows close
# before the data ends (so realized AUC exists), one a week before the end, and one at the
# end of the data; keep the evaluation report and the last weekly report.
set -euo pipefail
cd "$(dirname "$0")/.."
FIDELIS="${FIDELIS:-cargo run --quiet --bin fidelis --}"
WS="$(mktemp -d "${TMPDIR:-/tmp}/fidelis-examples.XXXXXX")"
trap 'rm -rf "$WS"' EXIT
sed -e "s#^models_dir = .*#models_dir = \"$WS/models\"#" \
    -e "s#^reports_dir = .*#reports_dir = \"$WS/reports\"#" configs/cdnow.toml > "$WS/cdnow.toml"
printf '\n[output]\ndir = "%s/output"\nsql = ["sqlite://%s/output/fidelis.sqlite"]\n' "$WS" "$WS" >> "$WS/cdnow.toml"
$FIDELIS train --config "$WS/cdnow.toml" -q > /dev/null
for d in 1998-03-04 1998-03-11 1998-03-18 1998-03-25 1998-04-01 1998-06-24; do
  $FIDELIS weekly --config "$WS/cdnow.toml" --as-of "$d" -q > /dev/null
done
$FIDELIS weekly --config "$WS/cdnow.toml" -q > /dev/null
OUT=reports/examples/cdnow
rm -rf "$OUT"
mkdir -p "$OUT/weekly/charts"
cp -r "$WS/reports/$(cat "$WS/models/latest")" "$OUT/evaluation"
last="$(ls "$WS/reports/weekly" | grep -E '^[0-9-]+\.html$' | sort | tail -n 1)"
last="${last%.html}"
cp "$WS/reports/weekly/$last".{html,md,json} "$OUT/weekly/"
cp "$WS/reports/weekly/charts/$last"-*.svg "$OUT/weekly/charts/"
echo "wrote $OUT/evaluation/evaluation.html and $OUT/weekly/$last.html"
