#!/usr/bin/env bash
# The training-step benchmark on a GPU: XLA, 16-bit products as compute_dtype=auto picks them
# (bfloat16 from compute capability 8.0, float16 with loss scaling on 7.x), the paper's largest case
# (8,192 tokens x 72,748 codes), then the largest batch that fits there. Under 8 minutes on one
# H100. Needs the package installed with a GPU build of TensorFlow 2.21 (tensorflow[and-cuda]).
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import tensorflow as tf; assert tf.config.list_physical_devices('GPU'), 'TensorFlow sees no GPU'"

run() {  # run BATCH EXTRA_FLAGS...: one configuration, JSON on the last line
  local batch=$1; shift
  timeout 300 python benchmarks/train_step.py --json --num_labels=72748 --seq_len=8192 \
    --batch_size="$batch" --label_attention=chunked --compute_dtype=auto --steps=3 "$@" \
    2>/dev/null | tail -n 1
}

echo "batch 1, XLA:        $(run 1 --xla)"
echo "batch 1, no XLA:     $(run 1)"
largest=0
batch=1
while [ "$batch" -le 256 ]; do
  if result=$(run "$batch" --xla) && [ -n "$result" ]; then
    largest=$batch
    echo "batch $batch fits: $result"
    batch=$((batch * 2))
  else
    echo "batch $batch does not fit"
    break
  fi
done
echo "largest batch that fits at 8,192 tokens x 72,748 codes: $largest (powers of two tried)"
