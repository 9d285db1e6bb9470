#!/usr/bin/env bash
# Makes .venv for `make`: the project itself (editable) in .venv, every pinned dependency in a
# shared virtualenv in the user cache, keyed by requirements/dev.lock and the Python version.
# The shared one is made once per lock (minutes of pip); a fresh clone then costs seconds.
#
#   $CACHE_ROOT/venv/deps-<hash>/   pip install --no-deps -r requirements/dev.lock (a full freeze)
#   .venv/                          a plain venv whose site-packages adds the shared one (a .pth
#                                   calling site.addsitedir, so that one's own .pth files work),
#                                   the shared one's console tools linked into .venv/bin
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
CACHE_ROOT=${AIAGENT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aiagent-operator}
key=$({ cat requirements/dev.lock hack/venv.sh; "$PYTHON" -c 'import sys; print(sys.version)'; } |
    sha256sum | cut -c1-12)
deps=$CACHE_ROOT/venv/deps-$key
purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'

mkdir -p "$CACHE_ROOT/venv"
(
    flock 9  # two checkouts making the same one: the second waits, then finds it done
    if [ ! -e "$deps/.complete" ]; then
        echo "[venv] installing the pinned dependencies into $deps (once per lock)" >&2
        rm -rf "$deps"
        "$PYTHON" -m venv "$deps"
        "$deps/bin/pip" install --quiet --upgrade pip
        "$deps/bin/pip" install --quiet --no-deps -r requirements/dev.lock
        "$deps/bin/pip" check >&2 || { echo "[venv] the lock is inconsistent" >&2; exit 1; }
        touch "$deps/.complete"
    fi
) 9>"$CACHE_ROOT/venv/.lock"

rm -rf .venv
"$PYTHON" -m venv .venv
site=$(.venv/bin/python -c "$purelib")
deps_site=$("$deps/bin/python" -c "$purelib")
echo "import site; site.addsitedir('$deps_site')" >"$site/aiagent_deps.pth"
for tool in "$deps"/bin/*; do
    name=$(basename "$tool")
    case $name in python* | pip* | activate* | Activate*) continue ;; esac
    ln -sf "$tool" ".venv/bin/$name"
done
# The project, editable, without its dependencies (they are all in the shared venv).
.venv/bin/pip install --quiet --no-deps -e .
