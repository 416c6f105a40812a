# Sourced, from the repo root, by the scripts a lent GPU machine runs for one
# experiment (W: their scratch folder, PY: the Python): installs the carried
# ml_collections wheel (.whl/, `make gpu-carry`) into $W/site and puts it and
# the repo on the path, as scripts/gpu_lease.sh does for gpu_check.sh.
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target "$W/site" .whl/*.whl || exit 1
fi
export PYTHONPATH=$W/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
