#!/usr/bin/env bash
# The new-user path from a fresh clone, with an empty model cache and registry:
#   make demo (set-up, demo, push) -> registry ls/show -> a second run (all skipped, no new version)
#   -> serve_check.py (base + adapter through the openai client, two hot-loads) -> rebuild of v1.
# Usage: scripts/new_user_check.sh [REPO] [WORKDIR]     (defaults: this checkout, /tmp/lorapipe-new-user)
set -uo pipefail
REPO=${1:-$(git -C "$(dirname "$0")" rev-parse --show-toplevel)}
WORK=${2:-/tmp/lorapipe-new-user}
rm -rf "$WORK" && mkdir -p "$WORK"
git clone -q "$REPO" "$WORK/clone" && cd "$WORK/clone" || exit 1
export LORAPIPE_REGISTRY=$WORK/registry LORAPIPE_CACHE=$WORK/cache
echo "=== make demo"; /usr/bin/time -f "make demo wall %e s" make demo; echo "rc=$?"
echo "=== registry"; .venv/bin/lorapipe registry ls contact-extraction
.venv/bin/lorapipe registry show contact-extraction@v1 | head -60
echo "=== second run"
/usr/bin/time -f "second run wall %e s" .venv/bin/lorapipe run examples/contact-extraction/pipeline.yaml \
  --push contact-extraction; echo "rc=$?"
.venv/bin/lorapipe registry ls contact-extraction
echo "=== serve check"; /usr/bin/time -f "serve check wall %e s" .venv/bin/python examples/contact-extraction/serve_check.py
echo "rc=$?"
echo "=== rebuild"; /usr/bin/time -f "rebuild wall %e s" .venv/bin/lorapipe rebuild contact-extraction@v1 --no-evaluate
echo "rc=$?"
