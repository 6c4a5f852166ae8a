#!/usr/bin/env bash
# test_sd_cli.sh - Stable Diffusion end to end on the command line: a tiny
# diffusers folder (the golden sd1_unet / vae_kl configs, a 32-wide CLIP text
# encoder config, generated weights, the tiny CLIP tokenizer of
# tests/data/sd_tiny_clip) is compiled by bmc at 16x16 with the tokenizer
# embedded; bmrun txt2img / img2img / inpaint write PNGs with the parameters
# chunk, deterministically for a seed; --help lists the samplers and
# schedules; bad arguments exit 2, runtime errors (corrupt or wrong-size
# images) exit 1.
# usage: test_sd_cli.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
B=$1
S=$2
GOLD=$(cd "$S/../shared/golden" && pwd)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # $T, ok, bad, expect

same() { if cmp -s "$1" "$2"; then ok "$3"; else bad "$3"; fi; }
differ() { if cmp -s "$1" "$2"; then bad "$3"; else ok "$3"; fi; }

# ---- the folder: configs only (bmc --random-weights generates the weights)
M=$T/tinysd
mkdir -p "$M/unet" "$M/vae" "$M/text_encoder" "$M/scheduler"
echo '{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.39.0"}' > "$M/model_index.json"
cp "$GOLD/diffusers/sd1_unet/config.json" "$M/unet/"
cp "$GOLD/diffusers/vae_kl/config.json" "$M/vae/"
cat > "$M/text_encoder/config.json" <<'EOF'
{"architectures": ["CLIPTextModel"], "bos_token_id": 998, "eos_token_id": 999, "hidden_act": "quick_gelu",
 "hidden_size": 32, "intermediate_size": 64, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
 "model_type": "clip_text_model", "num_attention_heads": 4, "num_hidden_layers": 2, "pad_token_id": 1,
 "vocab_size": 1000}
EOF
cat > "$M/scheduler/scheduler_config.json" <<'EOF'
{"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
 "num_train_timesteps": 1000, "steps_offset": 1, "prediction_type": "epsilon", "skip_prk_steps": true}
EOF
cp -r "$S/tests/data/sd_tiny_clip" "$M/tokenizer"

P=$T/sd.bmpk
expect 0 "wrote" "bmc compiles the SD folder (16x16, random weights)" -- \
  "$B/bmc" compile --model "$M" --random-weights --width 16 --height 16 -O 1 -o "$P"
expect 0 "tokenizer/vocab.json.*tokenizer/merges.txt" "the tokenizer is embedded" -- "$B/bmc" inspect "$P"
expect 0 '"pad":[[:space:]]*"<\|endoftext\|>"' "extra.tokenizer keeps the SD fields" -- "$B/bmc" inspect --json "$P"
expect 2 "multiple of 8" "bmc --width 20 is a usage error" -- "$B/bmc" compile --model "$M" --width 20 -o "$T/x.bmpk"

R="$B/bmrun"
run() { "$R" "$P" "$@" --quiet; }
expect 0 "wrote $T/a.png" "txt2img writes a PNG" -- \
  "$R" "$P" txt2img -p "a photo of a cat" -n "blurry" --steps 4 --cfg 7.5 --sampler euler_a --schedule karras --seed 42 -o "$T/a.png"
expect 0 "" "txt2img again with the same seed" -- run txt2img -p "a photo of a cat" -n "blurry" --steps 4 --sampler euler_a --schedule karras --seed 42 -o "$T/b.png"
same "$T/a.png" "$T/b.png" "txt2img is deterministic for a seed"
expect 0 "" "txt2img with another seed" -- run txt2img -p "a photo of a cat" -n "blurry" --steps 4 --sampler euler_a --schedule karras --seed 43 -o "$T/c.png"
differ "$T/a.png" "$T/c.png" "another seed gives another image"
if grep -qa "Steps: 4, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 16x16" "$T/a.png" &&
   grep -qa "Negative prompt: blurry" "$T/a.png"; then ok "the PNG has the parameters chunk"; else bad "the PNG has the parameters chunk"; fi
expect 0 "" "--batch-count 2" -- run txt2img -p "a photo of a cat" -n "blurry" --steps 4 --sampler euler_a --schedule karras --seed 42 --batch-count 2 -o "$T/batch.png"
same "$T/a.png" "$T/batch-0.png" "batch image 0 is the seed's image"
same "$T/c.png" "$T/batch-1.png" "batch image 1 has seed + 1"
expect 0 "4 model evals.*4 UNet runs" "progress and summary count model evaluations" -- \
  "$R" "$P" txt2img -p "x" --steps 4 --sampler "DPM++ 2M Karras" --seed 1 -o "$T/d.png"
expect 0 "9 model evals" "heun: 2 evals per step but the last" -- run txt2img -p "x" --steps 5 --sampler heun --seed 1 -o "$T/h.png"
expect 0 "wrote" "img2img" -- run img2img -p "a dog" --init-img "$T/a.png" --strength 0.5 --steps 6 --seed 7 -o "$T/i.png"
expect 0 "" "img2img again" -- run img2img -p "a dog" --init-img "$T/a.png" --strength 0.5 --steps 6 --seed 7 -o "$T/i2.png"
same "$T/i.png" "$T/i2.png" "img2img is deterministic"
expect 0 "3 steps" "img2img runs int(steps * strength) steps" -- run img2img -p "a dog" --init-img "$T/a.png" --strength 0.5 --steps 6 --seed 7 -o "$T/i3.png"
expect 0 "wrote" "inpaint (the mask: another image, gray = mean of RGB)" -- \
  run inpaint -p "a dog" --init-img "$T/a.png" --mask "$T/c.png" --steps 4 --seed 7 -o "$T/m.png"
expect 0 "wrote" "a stochastic SDE sampler" -- run txt2img -p "x" --steps 3 --sampler dpmpp_2m_sde --seed 3 -o "$T/s.png"
expect 0 "wrote" "a CFG++ sampler" -- run txt2img -p "x" --steps 3 --sampler euler_cfg_pp --cfg 1.5 --seed 3 -o "$T/p.png"

# ---- help lists the registries
expect 0 "dpmpp_2m_sde_heun.*" "bmrun --help lists the samplers" -- "$R" --help
expect 0 "align_your_steps" "bmrun --help lists the schedules" -- "$R" --help
expect 0 "res_multistep_ancestral_cfg_pp" "txt2img --help lists every sampler" -- "$R" "$P" txt2img --help

# ---- bad arguments: exit 2
expect 2 "unknown sampler 'foo'.*euler_ancestral" "unknown sampler" -- "$R" "$P" txt2img -p x --sampler foo
expect 2 "unknown schedule 'bar'.*karras" "unknown schedule" -- "$R" "$P" txt2img -p x --schedule bar
expect 2 "steps" "--steps 0" -- "$R" "$P" txt2img -p x --steps 0
expect 2 "at least 3 steps" "unipc with 2 steps" -- "$R" "$P" txt2img -p x --sampler unipc --steps 2
expect 2 "strength" "strength too small for the steps" -- "$R" "$P" img2img -p x --init-img "$T/a.png" --strength 0.05 --steps 10
expect 2 "prompt" "no prompt" -- "$R" "$P" txt2img --steps 2
expect 2 "init-img" "img2img without --init-img" -- "$R" "$P" img2img -p x
expect 2 "mask" "inpaint without --mask" -- "$R" "$P" inpaint -p x --init-img "$T/a.png"
expect 2 "img2img or inpaint" "txt2img with --mask" -- "$R" "$P" txt2img -p x --mask "$T/a.png"
expect 2 "strength" "--strength 2" -- "$R" "$P" img2img -p x --init-img "$T/a.png" --strength 2
expect 2 "unknown option" "unknown option" -- "$R" "$P" txt2img -p x --bogus 1

# ---- runtime errors: exit 1
head -c 100 "$T/a.png" > "$T/bad.png"
expect 1 "bad.png.*(not a valid PNG|truncated)" "a corrupt PNG" -- "$R" "$P" img2img -p x --init-img "$T/bad.png"
echo "not a png" > "$T/junk.png"
expect 1 "junk.png.*not a PNG" "not a PNG at all" -- "$R" "$P" inpaint -p x --init-img "$T/a.png" --mask "$T/junk.png"
base64 -d > "$T/small.png" <<<'iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR4nGM4kWKEFTEMLQkAVkZXgTy9n4kAAAAASUVORK5CYII='
expect 1 "--init-img is 8x8 but the model was compiled for 16x16" "a wrong image size" -- "$R" "$P" img2img -p x --init-img "$T/small.png"
expect 1 "--mask is 8x8" "a wrong mask size" -- "$R" "$P" inpaint -p x --init-img "$T/a.png" --mask "$T/small.png"
"$B/bmc" compile --model tiny -O 1 -o "$T/tiny.bmpk" >/dev/null 2>&1
expect 1 "not a Stable Diffusion" "a package that is not SD" -- "$R" "$T/tiny.bmpk" txt2img -p x

# ---- compute dtype: the same folder in f16 runs through the unchanged pipeline
P16=$T/sd16.bmpk
expect 0 "wrote" "bmc compiles the SD folder with --dtype f16" -- \
  "$B/bmc" compile --model "$M" --random-weights --width 16 --height 16 -O 1 --dtype f16 -o "$P16"
expect 0 '"dtype":[[:space:]]*"f16"' "the SD extra records the compute dtype" -- "$B/bmc" inspect --json "$P16"
expect 0 "wrote $T/f16.png" "txt2img with an f16 package" -- \
  "$R" "$P16" txt2img -p "a photo of a cat" --steps 3 --sampler euler --seed 42 -o "$T/f16.png"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
