#!/bin/sh
# `make lab`: JupyterLab with the extension, listening on 127.0.0.1 only; it prints the URL to open.
# Also as root (a container, a CI box), where Jupyter refuses to start without --allow-root: passed, and said.
# Extra arguments go to `jupyter lab` (make lab LAB_ARGS="--port=9999").
set -eu
set -- --ServerApp.ip=127.0.0.1 "$@"
if [ "$(id -u)" = 0 ]; then
  echo "make lab: running as root (a container or CI box?): starting JupyterLab with --allow-root --no-browser" >&2
  set -- --allow-root --no-browser "$@"
fi
# Once the server is up, say which URL to open (from its runtime file, jpserver-<pid>.json: exec keeps this pid).
python - "$$" <<'PY' &
import json, os, sys, time
from jupyter_core.paths import jupyter_runtime_dir

pid = sys.argv[1]
info = os.path.join(jupyter_runtime_dir(), f"jpserver-{pid}.json")
deadline = time.monotonic() + 600
while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
    try:
        with open(info) as f:
            server = json.load(f)
    except (OSError, ValueError):
        time.sleep(0.2)
        continue
    token = f"?token={server['token']}" if server.get("token") else ""
    print(f"\nmake lab: JupyterLab is up; open {server['url']}lab{token}\n", file=sys.stderr, flush=True)
    break
PY
exec jupyter lab "$@"
