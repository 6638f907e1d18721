#!/usr/bin/env bash
# `make demo`: the whole humanfix chain, offline, on the built-in tiny model and a sample set built from
# scikit-image's photos. Each stage says what it did; the last line says where the report is.
# The tiny model has random weights: its images are noise by design. The point is the chain, not the pictures.
set -euo pipefail
cd "$(dirname "$0")/.."
HF=${HUMANFIX:-.venv/bin/humanfix}
PY=${PYTHON:-.venv/bin/python}
OUT=${DEMO_OUT:-demo-output}
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac  # DEMO_OUT may be absolute or relative to the repository
export HUMANFIX_HOME=${HUMANFIX_HOME:-$OUT/home}
rm -rf "$OUT/coco" "$OUT/data" "$OUT/run" "$OUT/run-lora" "$OUT/generate" "$OUT/evaluate"
mkdir -p "$OUT"
start=$(date +%s)
stage() { printf '\n\033[1m== %s\033[0m (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

stage "1/6 sample set: 6 COCO-format images of 2 real people from scikit-image"
"$PY" -m humanfix.data.sample "$OUT/coco"

stage "2/6 prepare-data: filter, resize to 128², person masks, face boxes (keypoints + MTCNN), hand boxes, crops"
"$HF" prepare-data --coco-root "$OUT/coco" --split val --resolution 128 --min-face-size 8 --min-hand-size 8 \
  --workers 2 --output "$OUT/data"

losses() {
  "$PY" - "$1/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
first, last = rows[0], rows[-1]
f = lambda v: "-" if v is None else f"{v:.4f}"  # a term is null in an update where no sample had it
hands = [r["loss_hand"] for r in rows if r.get("loss_hand") is not None]
print(f"   step {first['step']}: loss {first['loss']:.4f} (LDM {first['loss_ldm']:.4f}, LPIPS {f(first['loss_lpips'])}, "
      f"face {f(first['loss_face'])}, hand {f(first.get('loss_hand'))})")
print(f"   step {last['step']}: loss {last['loss']:.4f} (LDM {last['loss_ldm']:.4f}, LPIPS {f(last['loss_lpips'])}, "
      f"face {f(last['loss_face'])}, hand {f(last.get('loss_hand'))}); {last['images_per_s']:.1f} images/s; "
      f"L_hand in {len(hands)} of {len(rows)} updates")
PY
}

stage "3/6 train: 30 steps of a ControlNet branch on the tiny model, default objective (T=1000: every sample gated in)"
"$HF" train --model tiny --data "$OUT/data" --split val --batch-size 2 --max-steps 30 --learning-rate 1e-4 \
  --lambda-hand 0.1 --timestep-threshold 1000 --checkpoint-every 15 --output "$OUT/run"
losses "$OUT/run"

stage "4/6 train: the same objective on a rank-8 LoRA on the UNet instead (diffusers and A1111/ComfyUI files)"
"$HF" train --model tiny --adapter lora --lora-rank 8 --data "$OUT/data" --split val --batch-size 2 --max-steps 30 \
  --learning-rate 1e-3 --lambda-hand 0.1 --timestep-threshold 1000 --checkpoint-every 15 \
  --output "$OUT/run-lora"
losses "$OUT/run-lora"

stage "5/6 generate: the same prompts and seeds through plain SD, SD + the branch and SD with the LoRA: comparison grids"
"$HF" generate "an astronaut smiling for a portrait" "a man filming with a camera on a tripod" --model tiny \
  --compare "base,$OUT/run/controlnet,$OUT/run-lora/lora" --num-images 2 --steps 10 --height 128 --width 128 \
  --output "$OUT/generate"

stage "6/6 evaluate: faces, poses (random stand-in detector and estimator), hands (MediaPipe) and the blind A/B page"
hands=--hands  # MediaPipe Hands comes with the [hands] extra (in [test]); without it the demo says so and goes on
"$PY" -c "import mediapipe.python.solutions.hands" 2>/dev/null || { hands=; echo "no MediaPipe: pip install 'humanfix[hands]' for --hands"; }
"$HF" evaluate --faces --pose --pose-weights random $hands --report --generated "$OUT/generate" \
  --real "$OUT/data/val" --output "$OUT/evaluate"

stage "done"
echo "branch:  $OUT/run/controlnet (diffusers layout)"
echo "LoRA:    $OUT/run-lora/lora (pytorch_lora_weights.safetensors: diffusers; humanfix_lora.safetensors: A1111, ComfyUI)"
echo "grids:   $OUT/generate/grids/"
echo "report:  $OUT/evaluate/report.html"
