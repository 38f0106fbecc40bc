#!/usr/bin/env bash
# Retrain the shipped weights (src/aucgan/pretrained/synthetic.safetensors) on the CPU from this repository
# alone: the synthetic data, the AU net in two stages (docs/RESULTS.md), the detail stage on the shipped coarse
# stage, then pack and measure. Run it from the repository root, in the virtual environment:
#
#     bash scripts/retrain_shipped.sh            # DRY=1 prints the commands without running them
#
# Stop it at any time (Ctrl-C: the training under way saves its step) and run it again: finished steps are
# skipped (each training's last periodic checkpoint says it finished) and an interrupted training resumes
# exactly from its last.ckpt. Settings, from the environment:
#   RUNS (runs/shipped)   run folders          DATA (data/synthetic)   the synthetic dataset
#   PRECISION (32-true)   bf16-mixed where the CPU has AVX-512 BF16 (about 3x faster for the AU net)
#   NO_PACK               set: stop before writing the shipped file
# Time on 2 cores, 32-true, no AVX-512 BF16: AU stage 1 about 1.05 s per step (6000 steps), stage 2 at 192 px
# about 1.4 s per step (10000 steps; its first 100 steps), the detail stage about 5 s per step (1000 steps).
set -euo pipefail

RUNS=${RUNS:-runs/shipped}
DATA=${DATA:-data/synthetic}
PRECISION=${PRECISION:-32-true}
SHIPPED=src/aucgan/pretrained/synthetic.safetensors
PREVIOUS=$RUNS/previous.safetensors # the weights this retrain starts from (the AU net, the coarse stage)

run() {
    echo "+ $*" >&2
    if [ -z "${DRY:-}" ]; then "$@"; fi
}

# train STAGE FOLDER FINAL_STEP SETTINGS...: skipped once FOLDER holds step-FINAL_STEP.ckpt, resumed where
# FOLDER holds a last.ckpt, else started.
train() {
    local stage=$1 out=$2 final=$3
    shift 3
    local done_file
    done_file=$(printf '%s/checkpoints/step-%07d.ckpt' "$out" "$final")
    if [ -f "$done_file" ]; then
        echo "= $stage: $done_file exists, skipped" >&2
    elif [ -f "$out/checkpoints/last.ckpt" ]; then
        run aucgan train "$stage" synthetic "$@" trainer.precision="$PRECISION" trainer.out_dir="$out" resume=true
    else
        run aucgan train "$stage" synthetic "$@" trainer.precision="$PRECISION" trainer.out_dir="$out"
    fi
}

mkdir -p "$RUNS"
[ -f "$PREVIOUS" ] || run cp "$SHIPPED" "$PREVIOUS"
[ -f "$DATA/manifest.json" ] || run aucgan synth --config synthetic --n 12000 --out "$DATA"

# The AU net: stage 1 at the images' own size, the first 6000 steps of an 18000-step schedule from the
# previous AU net; stage 2 at the preset's 192 px from there.
train au "$RUNS/au-stage1" 6000 data.source="$DATA" model.au_input_size=0 trainer.steps=18000 \
    trainer.stop_after=6000 trainer.val_every=2000 trainer.checkpoint_every=500 trainer.image_every=0 \
    trainer.log_every=50 trainer.progress=false trainer.start_from="$PREVIOUS"
train au "$RUNS/au-stage2" 10000 data.source="$DATA" trainer.steps=10000 trainer.val_every=2000 \
    trainer.checkpoint_every=500 trainer.image_every=0 trainer.log_every=50 trainer.progress=false \
    trainer.start_from="$RUNS/au-stage1/checkpoints/step-0006000.ckpt"
[ -f "$RUNS/au_net_f1.png" ] || run python scripts/evaluate_au_net.py "$RUNS/au-stage2/checkpoints/last.ckpt" \
    "$DATA" --split test --calibrate val --out "$RUNS/au_net_f1.png"

# The coarse stage: the previous weights' (trained for this world), as a checkpoint of `aucgan train coarse`.
[ -f "$RUNS/coarse.ckpt" ] || run python -c "
import sys, torch
from aucgan.reconstruct import Reconstructor
coarse = Reconstructor.load(sys.argv[1]).coarse
state = {'stage.' + k: v.float() if v.is_floating_point() else v for k, v in coarse.state_dict().items()}
torch.save({'aucgan': {}, 'state_dict': state}, sys.argv[2])" "$PREVIOUS" "$RUNS/coarse.ckpt"

# The detail stage (the preset's uv-unet without a detail encoder, the uv-projection discriminator, the AU
# net reading at 192 px), 1000 steps of 8 faces with the world's truth beside DECA's losses.
train detail "$RUNS/detail" 1000 data.source="$DATA" assets.coarse="$RUNS/coarse.ckpt" \
    assets.au_net="$RUNS/au-stage2/checkpoints/last.ckpt" data.identities_per_batch=2 data.n_val=256 \
    optim.lr=0.001 optim.warmup_steps=50 loss.displacement_truth=1 loss.displacement_gradient=0.25 \
    loss.edit_truth=1 loss.detail_consistency=0 trainer.steps=1000 trainer.val_every=500 \
    trainer.checkpoint_every=250 trainer.image_every=500 trainer.log_every=25 trainer.progress=false

# pack copies src/aucgan/pretrained/README.md into the file as its provenance: NO_PACK=1 stops here, to
# write what the new weights are first.
if [ -n "${NO_PACK:-}" ]; then
    echo "= stopped before pack (NO_PACK)" >&2
    exit 0
fi
run aucgan pack synthetic --checkpoint "$RUNS/detail/checkpoints/last.ckpt" --out "$SHIPPED" \
    --provenance "$(cat src/aucgan/pretrained/README.md)"
run python scripts/measure_shipped_weights.py
