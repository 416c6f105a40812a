# Sourced, from the repo root, by the scripts that run on an offline GPU
# host (W: their scratch folder, PY: the Python): installs the wheels that
# `make offline-bundle` put in .whl/ into $W/site and puts that folder and
# the repo on the path. Without .whl/ it only sets the path.
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$W/site" .whl/*.whl || exit 1
fi
export PYTHONPATH=$W/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
