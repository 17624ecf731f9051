#!/usr/bin/env bash
# Install the peer libraries benchmarks/peers.py compares against, into the
# current Python environment (run it inside your venv). They are benchmark-only:
# never runtime dependencies of metarun.
#
#   higher 0.2.1      installs plainly (pure Python wheel).
#   learn2learn 0.2.0 ships only an sdist whose pre-generated C does not build
#                     on Python >= 3.11; we regenerate its .pyx files with
#                     Cython 3 and install with --no-deps --no-build-isolation
#                     (its pinned deps would pull another torch). Its `vision`
#                     subpackage imports torchvision lazily: we do not install
#                     torchvision; peers.py only uses `learn2learn.algorithms.MAML`.
set -euo pipefail
PY=${PYTHON:-python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$PY" -m pip install -q "higher==0.2.1" "cython>=3" setuptools wheel
"$PY" -m pip download -q --no-deps --no-binary :all: -d "$WORK" "learn2learn==0.2.0"
tar -xzf "$WORK"/learn2learn-0.2.0.tar.gz -C "$WORK"
cd "$WORK"/learn2learn-0.2.0
# Drop the stale generated C so setup.py compiles fresh C from the .pyx sources.
find learn2learn -name '*.pyx' | while read -r pyx; do
  rm -f "${pyx%.pyx}.c"
  "$PY" -m cython -3 "$pyx"
done
"$PY" -m pip install -q --no-deps --no-build-isolation .
# Its runtime deps other than torch, torchvision and qpth (none of which the
# MAML wrapper uses); gym is needed because `import learn2learn` imports it.
"$PY" -m pip install -q requests tqdm scipy gym
# peers.py stubs `learn2learn.vision` when torchvision is absent; so does this check.
cd / && "$PY" -c "import sys, types; sys.modules.setdefault('learn2learn.vision', types.ModuleType('learn2learn.vision')); import learn2learn, higher; print('learn2learn', learn2learn.__version__, '| higher 0.2.1 ok')"
