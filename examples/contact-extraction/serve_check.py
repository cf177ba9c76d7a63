"""After the demo: serve the base and the demo adapter side by side, then hot-load a second adapter.

    python examples/contact-extraction/serve_check.py            (after `lorapipe run` on the example)

Starts `lorapipe serve` as a user would (a child process on a loopback port), talks to it with the
official `openai` client, and prints what each model answers:

1. the base (`smollm2-135m-instruct`) and the demo adapter (`contacts`) answer the same message;
2. a second adapter is hot-loaded twice without a restart: dropped into the watched directory
   (`contacts-copy`), and loaded through the admin API (`POST /admin/adapters`, `contacts-admin`);
3. /metrics shows the swaps and the server's process never changed.

Exit code 0 when the adapter answers valid JSON with the three keys, the base does not, and both
hot-loaded adapters answer like the first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
ADAPTER = HERE / "runs" / "contact-extraction" / "train" / "adapter"
SYSTEM = ("Extract the contact in the message as JSON with keys name, email, phone. Copy each value exactly "
          "as written; use null when a value is missing. Reply with the JSON only.")
MESSAGE = ("Thanks for the quick turnaround!\n\nBest,\n--\nDr. Inès Okonkwo-Hart\nHead of Procurement | Fjord Labs\n"
           "Direct: +47 912 34 567\ninès.hart@fjordlabs.no")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    import httpx
    import openai

    if not (ADAPTER / "adapter_config.json").is_file():
        print(f"no demo adapter at {ADAPTER}: run `lorapipe run {HERE / 'pipeline.yaml'}` first", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lorapipe-serve-check-"))
    adapters = work / "adapters"
    adapters.mkdir()
    shutil.copytree(ADAPTER, adapters / "contacts")
    port = free_port()
    cmd = [sys.executable, "-m", "lorapipe", "serve", "--config", str(HERE / "pipeline.yaml"), "--adapters",
           str(adapters), "--port", str(port), "--watch", "0.5"]
    print("$", " ".join(cmd))
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    ok = True
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                print((work / "server.log").read_text()[-3000:], file=sys.stderr)
                return 1
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                print("the server did not come up in 300 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0)
        print("models:", [m.id for m in client.models.list()])

        def ask(model: str) -> str:
            t0 = time.perf_counter()
            r = client.chat.completions.create(model=model, temperature=0, max_tokens=64, messages=[
                {"role": "system", "content": SYSTEM}, {"role": "user", "content": MESSAGE}])
            text = r.choices[0].message.content or ""
            print(f"\n[{model}] ({time.perf_counter() - t0:.1f} s, {r.system_fingerprint})\n{text}")
            return text

        def is_contact_json(text: str) -> bool:
            try:
                obj = json.loads(text)
            except json.JSONDecodeError:
                return False
            return isinstance(obj, dict) and set(obj) == {"name", "email", "phone"}

        base_answer = ask(client.models.list().data[0].id)
        tuned = ask("contacts")
        ok &= is_contact_json(tuned) and not is_contact_json(base_answer)

        # hot-load 1: drop an adapter folder into the watched directory (written aside, then renamed)
        shutil.copytree(ADAPTER, adapters / ".contacts-copy.tmp")
        os.rename(adapters / ".contacts-copy.tmp", adapters / "contacts-copy")
        deadline = time.monotonic() + 30
        while "contacts-copy" not in {m.id for m in client.models.list()}:
            if time.monotonic() > deadline:
                print("the watched directory's new adapter never appeared", file=sys.stderr)
                return 1
            time.sleep(0.3)
        ok &= ask("contacts-copy") == tuned
        # hot-load 2: the admin API, from any directory on the server's disk
        r = httpx.post(f"{url}/admin/adapters", json={"name": "contacts-admin", "path": str(ADAPTER)}, timeout=60)
        print("\nPOST /admin/adapters ->", r.status_code, r.json())
        ok &= r.status_code == 200 and ask("contacts-admin") == tuned
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        print("\n" + "\n".join(line for line in metrics.splitlines()
                               if line.startswith(("lorapipe_adapter_swaps_total", "lorapipe_adapters_resident"))))
        ok &= proc.poll() is None
        print(f"\nserver pid {proc.pid} served every request without a restart: {proc.poll() is None}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
