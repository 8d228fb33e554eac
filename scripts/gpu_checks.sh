#!/usr/bin/env bash
# GPU verification in stages, for an H100/H200 machine with torch + transformers (for the HF parity
# and baseline stages). Logs go to ${OUT:-gpu_logs}/. Usage: scripts/gpu_checks.sh STAGE...
#   build          test_coda (FP32 -> test_coda_fp32, BF16) and train_coda
#   tests          every test of test_coda in both precisions
#   parity-tiny    HF transformers reference models (tiny, fp32 + bf16), then the parity test
#   smoke          phase 0 (tiny, Brown) then phase 1 from its checkpoint; needs data/shards
#   bench-smollm2  phase 1 at the SmolLM2-135M shape (random base) vs HF training the plain model, same card
#   parity-7b      HF reference at the Mistral-7B shape (bf16, 32 layers) + the parity test
#   parity-7b-sweep  Mistral-7B shape, 1x128: bf16 at 2, 8, 32 layers and fp32 at 4 layers (SWEEP="bf16:2 fp32:4"
#                  picks a subset): coda.c vs transformers and, for bf16, both vs the fp32 truth; a table
#   parity-acts    Mistral-7B shape, 2 layers, 1x128, bf16 with --dump-acts: per-activation rel L2 errors of
#                  coda.c and transformers bf16 vs the fp32 truth (which op loses accuracy); ACTS_LAYERS=2
#   bench-attention dev/cuda/coda_attention (BF16, every tensor-core version, 7B and SmolLM2 head shapes) and
#                  PyTorch SDPA (dev/cuda/sdpa_baseline.py) in the same call, then issue 15's target table
#                  (dev/cuda/attention_targets.py: coda.c's fastest forward + backward over cuDNN's and FA2's)
#   profile-attention  Nsight Compute (--set full) on one launch each of the one-pass backward and the
#                  warp-specialized forward at CoDA's 7B head shape, T=8192 (dev/cuda/ncu_profile.py picks the
#                  launch, then ranks the SASS instructions by warp-stall samples): details + stall tables
#   bench-7b       phase 1 at the Mistral-7B shape from a random base (T=2048, 8192; recompute off/on) vs HF
#                  (attention-only trainable; at T=2048 eager and torch.compile), with the --timing breakdown of one update (BENCH_CFGS="T:recompute ...",
#                  T8192=0, HF2048=0 select parts)
#   smoke-phase2   phase 0 (tiny) -> phase 1 -> phase 2 (bounded medium, T=1024) on Brown, validation loss per
#                  phase; then phase 2 resumed from its middle checkpoint, whose log must equal the uninterrupted one
#   bench-phase2   phase 2 (bounded medium) next to phase 1 from the same random base, same card, same call:
#                  SmolLM2-135M shape (B=8, T=2048) and Mistral-7B (B=1, T=2048 and 8192; PHASE2_7B=0 skips 7B),
#                  tok/s, peak memory and the --timing split of one update
#   ppl-hf-tiny    the tiny random HF model (fp32 and bf16): transformers' sliding-window perplexity (scripts/hf_ppl.py)
#                  next to infer_coda's on the GPU model, same windows, on a random-token shard of its vocabulary
#   ppl-hf-7b      a random Mistral-7B (bf16, save_pretrained) on Brown's validation shard: transformers'
#                  sliding-window perplexity (2048 / 512) next to infer_coda's on the GPU, values and tokens/s
#                  (PPL_TOKENS=16384 tokens)
#   adapters-torch the torch-side checks of llmc/torch_pt.h and llmc/adapters.h with this machine's torch: torch.load
#                  (weights_only=True) of coda.c's files bitwise, load_state_dict(strict=True), torch.save's files imported
#   bench-decode   Mistral-7B decode at B=1 (dev/cuda/decode: bounded medium state vs KV cache at 2K..128K, the HBM bound,
#                  gemv vs cuBLASLt) next to transformers' generate() (scripts/bench_hf_generate.py), same card, same call
#                  (DECODE_CTX="2048,8192,32768,131072" picks the lengths)
# TRAIN_BIN overrides ./train_coda, INFER_BIN / INFER_BIN_FP32 ./infer_coda / ./infer_coda_fp32 (binaries built
# elsewhere and carried).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
OUT=${OUT:-gpu_logs}
mkdir -p "$OUT"
TRAIN=data/shards/brown_train.bin VAL=data/shards/brown_val.bin
TRAIN_BIN=${TRAIN_BIN:-./train_coda}
INFER_BIN=${INFER_BIN:-./infer_coda} INFER_BIN_FP32=${INFER_BIN_FP32:-./infer_coda_fp32}
run() { echo "+ $*"; "$@"; }
for stage in "$@"; do
  echo "=== $stage ($(date -u +%H:%M:%S))"
  case $stage in
    build)
      nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/card.txt"
      make -B test_coda PRECISION=FP32 > "$OUT/build_fp32.log" 2>&1 && cp test_coda test_coda_fp32 || { tail -20 "$OUT/build_fp32.log"; exit 1; }
      make -B test_coda train_coda > "$OUT/build_bf16.log" 2>&1 || { tail -20 "$OUT/build_bf16.log"; exit 1; } ;;
    tests)
      for p in fp32 bf16; do
        bin=./test_coda; [ $p = fp32 ] && bin=./test_coda_fp32
        timeout 900 $bin > "$OUT/tests_$p.log" 2>&1  # every test: gpu_*, kattn_*, kce_*, bank_*, decode_*, hf_*
        grep -E "^(FAIL|SKIP)|FAILED| passed" "$OUT/tests_$p.log" | sed "s/^/[$p] /"
      done ;;
    parity-tiny)
      run python3 scripts/hf_parity.py --shape tiny --dtype float32 --out data/hf_parity/tiny_fp32 2>&1 | tail -1
      run python3 scripts/hf_parity.py --shape tiny --dtype bfloat16 --out data/hf_parity/tiny_bf16 2>&1 | tail -1
      ./test_coda_fp32 gpu_hf_parity 2>&1 | tail -4; ./test_coda gpu_hf_parity 2>&1 | tail -4 ;;
    smoke)
      rm -rf out_smoke0 out_smoke1
      run ./train_coda --phase 0 --model tiny --train $TRAIN --val $VAL --batch 8 --seq 256 --accum 1 --steps 150 --lr 1e-3 \
          --weight-decay 0.1 --warmup 10 --eval-every 50 --eval-batches 4 --save-every 75 --log-every 25 --out out_smoke0 2>&1 | tee "$OUT/smoke_phase0.log" | tail -12
      run ./train_coda --phase 1 --init out_smoke0/step_00000150 --train $TRAIN --val $VAL --batch 8 --seq 256 --accum 2 --steps 30 \
          --warmup 5 --eval-every 15 --eval-batches 4 --save-every 15 --log-every 10 --out out_smoke1 2>&1 | tee "$OUT/smoke_phase1.log" | tail -8
      # resume: remove the final checkpoint, resume from step 15 and compare the final losses
      cp out_smoke1/log.txt "$OUT/smoke_phase1_log.txt"
      echo step_00000015 > out_smoke1/LATEST; rm -rf out_smoke1/step_00000030
      run ./train_coda --phase 1 --resume --train $TRAIN --val $VAL --batch 8 --seq 256 --accum 2 --steps 30 --warmup 5 \
          --eval-every 15 --eval-batches 4 --save-every 15 --log-every 10 --out out_smoke1 2>&1 | tail -4
      cp out_smoke1/log.txt "$OUT/smoke_phase1_resumed_log.txt" ;;
    bench-smollm2)
      rm -rf out_smol
      run ./train_coda --phase 1 --init random --model smollm2-135m --train $TRAIN --batch 8 --seq 2048 --accum 1 --steps 8 --warmup 2 \
          --eval-every 0 --save-every 0 --log-every 1 --timing 6 --out out_smol 2>&1 | tee "$OUT/bench_smollm2.log" | tail -24
      run python3 scripts/bench_hf_train.py --shape smollm2-135m --seq 2048 --batch 8 --trainable attention 2>&1 | tail -1 | tee -a "$OUT/bench_smollm2.log"
      run python3 scripts/bench_hf_train.py --shape smollm2-135m --seq 2048 --batch 8 --trainable all 2>&1 | tail -1 | tee -a "$OUT/bench_smollm2.log" ;;
    parity-7b)
      run python3 scripts/hf_parity.py --shape mistral-7b --dtype bfloat16 --batch 1 --seq 128 --out data/hf_parity/mistral7b_bf16 2>&1 | tail -1
      ./test_coda gpu_hf_parity 2>&1 | tail -4 ;;
    parity-7b-sweep)
      # each directory (up to 15 GB) is deleted after its test: the disk is 64 GB
      [ -x ./test_coda ] && [ -x ./test_coda_fp32 ] || { echo "build first (stage build)"; exit 1; }
      rows=()
      for item in ${SWEEP:-bf16:2 bf16:8 bf16:32 fp32:4}; do
        p=${item%%:*} L=${item#*:}
        dir=data/hf_parity/sweep7b_${p}_L$L log="$OUT/parity_sweep_${p}_L$L.log"
        dt=bfloat16 bin=./test_coda; [ "$p" = fp32 ] && dt=float32 bin=./test_coda_fp32
        rm -rf "$dir"
        run python3 scripts/hf_parity.py --shape mistral-7b --dtype $dt --layers "$L" --batch 1 --seq 128 --out "$dir" > "$log" 2>&1
        tail -1 "$log"
        CODA_HF_PARITY_DIRS="$dir" $bin gpu_hf_parity >> "$log" 2>&1
        grep -E "^    $dir: |FAILED" "$log"
        row=$(grep "^parity-row " "$log" | sed 's/^parity-row //')
        rows+=("${row:-| $dir | $p | $L | no result, see $log |}")
        rm -rf "$dir"
      done
      { echo "| dir | build | layers | loss rel diff | rel L2 coda~HF | max coda~HF | rel L2 coda~truth | rel L2 HF~truth | ratio (bar 1.25) | max coda~truth | max HF~truth | result |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
        printf '%s\n' "${rows[@]}"; } | tee "$OUT/parity_sweep_table.md" ;;
    parity-acts)
      [ -x ./test_coda ] || { echo "build first (stage build)"; exit 1; }
      L=${ACTS_LAYERS:-2} dir=data/hf_parity/acts7b_L${ACTS_LAYERS:-2} log="$OUT/parity_acts.log"
      rm -rf "$dir"
      run python3 scripts/hf_parity.py --shape mistral-7b --dtype bfloat16 --layers "$L" --batch 1 --seq 128 --dump-acts \
          --out "$dir" > "$log" 2>&1
      tail -2 "$log"
      CODA_HF_PARITY_DIRS="$dir" ./test_coda gpu_hf_parity >> "$log" 2>&1
      grep -E "^    $dir: |^acts \| |FAIL" "$log" | sed "s#^acts | $dir | #| #" | tee "$OUT/parity_acts_table.md"
      rm -rf "$dir" ;;
    bench-attention)
      make -C dev/cuda coda_attention PRECISION=BF16 > "$OUT/build_bench_attention.log" 2>&1 || { tail -20 "$OUT/build_bench_attention.log"; exit 1; }
      (cd dev/cuda && ./coda_attention 10 0) > "$OUT/bench_attention.log" 2>&1 || { tail -20 "$OUT/bench_attention.log"; exit 1; }
      run python3 dev/cuda/sdpa_baseline.py > "$OUT/sdpa_baseline.log" 2>&1 || { tail -20 "$OUT/sdpa_baseline.log"; exit 1; }
      run python3 dev/cuda/attention_targets.py "$OUT/bench_attention.log" "$OUT/sdpa_baseline.log" | tee "$OUT/attention_targets.md" ;;
    profile-attention)
      make -C dev/cuda coda_attention PRECISION=BF16 > "$OUT/build_bench_attention.log" 2>&1 || { tail -20 "$OUT/build_bench_attention.log"; exit 1; }
      outabs=$(cd "$OUT" && pwd)
      # kernel regex : demangled template arguments : grid at T 8192, H 32 (key blocks of 128; query tiles of 64)
      for item in "ca_fb_backward_kernel:<2>:2048" "ca_ws_forward_kernel:<128, 2, 0>:4096"; do
        IFS=: read -r k targs grid <<< "$item"
        (cd dev/cuda && ncu --csv --metrics launch__grid_size -k regex:$k ./coda_attention 1 0) > "$OUT/ncu_list_$k.csv" 2>/dev/null
        n=$(python3 dev/cuda/ncu_profile.py pick "$OUT/ncu_list_$k.csv" "$targs" "$grid") || continue
        echo "$k$targs grid $grid: launch $n"
        (cd dev/cuda && timeout 300 ncu --set full --import-source yes -k regex:$k --launch-skip "$n" --launch-count 1 -f -o "$outabs/ncu_$k" \
           ./coda_attention 1 0) > "$OUT/ncu_$k.log" 2>&1 || { tail -5 "$OUT/ncu_$k.log"; continue; }
        ncu -i "$OUT/ncu_$k.ncu-rep" --page details > "$OUT/ncu_${k}_details.txt" 2>&1
        ncu -i "$OUT/ncu_$k.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu_${k}_sass.csv" 2>&1
        grep -E "^ +(Duration|Compute \(SM\) Throughput|Issue Slots Busy|Registers Per Thread)" "$OUT/ncu_${k}_details.txt"
        python3 dev/cuda/ncu_profile.py stalls "$OUT/ncu_${k}_sass.csv" 15 | tee "$OUT/ncu_${k}_stalls.md" | head -40
      done ;;
    bench-7b)
      # phase 1 from a random base (the issue's benchmark), T=2048 with recompute off/on, then T=8192
      # (recompute on; off where memory allows), each next to HF on the same card; T8192=0 skips 8192
      cfgs="2048:0 2048:1"; [ "${T8192:-1}" = 0 ] || cfgs="$cfgs 8192:1 8192:0"
      cfgs=${BENCH_CFGS:-$cfgs}  # e.g. BENCH_CFGS="8192:1" (T:recompute pairs)
      for cfg in $cfgs; do
        T=${cfg%%:*} R=${cfg#*:}
        rm -rf out_7b
        run ./train_coda --phase 1 --init random --model mistral-7b --train $TRAIN --batch 1 --seq $T --recompute $R --accum 1 --steps 6 \
            --warmup 2 --eval-every 0 --save-every 0 --log-every 1 --timing 5 --out out_7b > "$OUT/bench_7b_T${T}_r$R.log" 2>&1
        grep -vE "^step +[1-4] " "$OUT/bench_7b_T${T}_r$R.log" | tail -26
      done
      [ "${HF2048:-1}" = 0 ] || run python3 scripts/bench_hf_train.py --shape mistral-7b --seq 2048 --batch 1 --trainable attention --steps 5 2>&1 | tail -1 | tee -a "$OUT/bench_7b.log"
      [ "${HF2048:-1}" = 0 ] || run python3 scripts/bench_hf_train.py --shape mistral-7b --seq 2048 --batch 1 --trainable attention --steps 5 --compile 2>&1 | tail -1 | tee -a "$OUT/bench_7b.log"
      [ "${T8192:-1}" = 0 ] || run python3 scripts/bench_hf_train.py --shape mistral-7b --seq 8192 --batch 1 --trainable attention --steps 4 2>&1 | tail -1 | tee -a "$OUT/bench_7b.log"
      [ "${T8192:-1}" = 0 ] || run python3 scripts/bench_hf_train.py --shape mistral-7b --seq 8192 --batch 1 --trainable attention --grad-ckpt --steps 4 2>&1 | tail -1 | tee -a "$OUT/bench_7b.log" ;;
    smoke-phase2)
      # the three phases at tiny scale; phase 2 with the paper's medium state at T = 1024 (4 blocks, so
      # the banks fill), at raised learning rates (--lr-scale 1, lr 1e-3) so that 40 updates show an effect
      rm -rf out_p0 out_p1 out_p2
      run $TRAIN_BIN --phase 0 --model tiny --train $TRAIN --val $VAL --batch 8 --seq 256 --accum 1 --steps 150 --lr 1e-3 \
          --weight-decay 0.1 --warmup 10 --eval-every 150 --eval-batches 8 --save-every 150 --log-every 50 --out out_p0 2>&1 | tee "$OUT/p2smoke_phase0.log" | grep -E "val|done"
      run $TRAIN_BIN --phase 1 --init out_p0/step_00000150 --train $TRAIN --val $VAL --batch 8 --seq 256 --accum 2 --steps 30 --lr 1e-3 \
          --warmup 5 --eval-every 30 --eval-batches 8 --save-every 30 --log-every 10 --out out_p1 2>&1 | tee "$OUT/p2smoke_phase1.log" | grep -E "val|done"
      p2="--phase 2 --train $TRAIN --val $VAL --batch 4 --seq 1024 --accum 2 --steps 40 --lr 1e-3 --lr-coda 1e-3 --lr-scale 1 --warmup 5 \
          --eval-every 10 --eval-batches 4 --save-every 20 --log-every 10 --out out_p2"
      run $TRAIN_BIN $p2 --init out_p1/step_00000030 2>&1 | tee "$OUT/p2smoke_phase2.log" | grep -E "bounded|val|done|step +(1|10|40)/"
      cp out_p2/log.txt "$OUT/p2smoke_phase2_log.txt"
      echo step_00000020 > out_p2/LATEST; rm -rf out_p2/step_00000040
      run $TRAIN_BIN $p2 --resume 2>&1 | tail -3
      a=$(grep -E "^step (2[1-9]|3[0-9]|40) (loss|val)" "$OUT/p2smoke_phase2_log.txt" | sed 's/ ms .*//')
      b=$(grep -E "^step (2[1-9]|3[0-9]|40) (loss|val)" out_p2/log.txt | tail -n "$(echo "$a" | wc -l)" | sed 's/ ms .*//')
      if [ "$a" = "$b" ]; then echo "phase 2 resume: updates 21-40 identical to the uninterrupted run (loss, lr, norm, val loss)"
      else echo "phase 2 resume DIFFERS:"; diff <(echo "$a") <(echo "$b") | head; fi ;;
    bench-phase2)
      shapes="smollm2-135m:8:2048"; [ "${PHASE2_7B:-1}" = 0 ] || shapes="$shapes mistral-7b:1:2048 mistral-7b:1:8192"
      for shp in $shapes; do
        IFS=: read -r model B T <<< "$shp"
        for ph in 1 2; do
          log="$OUT/bench_phase${ph}_${model}_T$T.log"
          rm -rf out_bench
          run $TRAIN_BIN --phase $ph --init random --model $model --train $TRAIN --batch $B --seq $T --accum 1 --steps 6 --warmup 2 \
              --eval-every 0 --save-every 0 --log-every 1 --timing 5 --out out_bench > "$log" 2>&1
          grep -E "bounded state|^step +6/|done|attention kernels|^ *(bank|attention_fwd|attention_bwd|matmul_fwd|update wall)" "$log"
        done
      done ;;
    ppl-hf-tiny)
      mkdir -p data/hf_parity
      shard=data/hf_parity/random_v1031.bin
      python3 scripts/hf_ppl.py --write-random-shard $shard --vocab 1031 --n 4096 --seed 3
      for p in fp32 bf16; do
        dir=data/hf_parity/tiny_$p dt=float32 bin=$INFER_BIN_FP32; [ $p = bf16 ] && dt=bfloat16 bin=$INFER_BIN
        [ -f $dir/config.json ] || python3 scripts/hf_parity.py --shape tiny --dtype $dt --out $dir > /dev/null 2>&1
        hf=$(python3 scripts/hf_ppl.py --model $dir --shard $shard --ctx 256 --stride 64 2>/dev/null | tail -1)
        cc=$($bin --model $dir --ppl $shard --procedure sliding --ctx 256 --stride 64 --device gpu --json 2>&1 | tail -1)
        echo "[$p] HF:     $hf"; echo "[$p] coda.c: $cc"
        python3 -c "import json,sys; h=json.loads(sys.argv[1]); c=json.loads(sys.argv[2]); \
print('[%s] scored %d vs %d, mean NLL HF %.7f coda.c %.7f, rel diff %.2e' % (sys.argv[3], h['scored'], c['tokens_scored'], \
h['mean_nll'], c['mean_nll'], abs(h['mean_nll'] - c['mean_nll']) / h['mean_nll']))" "$hf" "$cc" $p
      done ;;
    adapters-torch)
      make test_cpu coda_adapters > "$OUT/build_cpu.log" 2>&1 || { tail -20 "$OUT/build_cpu.log"; exit 1; }
      CODA_TORCH_PYTHON="$(command -v python3)" ./test_cpu torch_pt 2>&1 | tail -4 | tee "$OUT/torch_pt.log"
      CODA_TORCH_PYTHON="$(command -v python3)" ./test_cpu adapters 2>&1 | tail -6 | tee "$OUT/adapters.log" ;;
    bench-decode)
      make -C dev/cuda decode > "$OUT/build_decode.log" 2>&1 || { tail -20 "$OUT/build_decode.log"; exit 1; }
      run ./dev/cuda/decode "${DECODE_CTX:-2048,8192,32768,131072}" 64 2>&1 | tee "$OUT/bench_decode.log" | tail -28
      run python3 scripts/bench_hf_generate.py --shape mistral-7b --contexts "${DECODE_CTX:-2048,8192,32768,131072}" --new 64 --repeats 2 \
          2>&1 | tee "$OUT/bench_hf_generate.log" | grep "^HF"
      run python3 scripts/bench_hf_generate.py --shape mistral-7b --contexts 2048 --new 64 --repeats 2 --static-cache --compile \
          2>&1 | tee "$OUT/bench_hf_generate_compile.log" | grep "^HF" ;;
    ppl-hf-7b)
      dir=data/hf_parity/ppl7b n=${PPL_TOKENS:-16384}
      [ -f $dir/config.json ] || { t=$(date +%s); python3 scripts/hf_ppl.py --write-random-model $dir --shape mistral-7b > "$OUT/ppl7b_write.log" 2>&1;
                                   echo "random 7B written in $(( $(date +%s) - t )) s"; }
      hf=$(python3 scripts/hf_ppl.py --model $dir --shard $VAL --ctx 2048 --stride 512 --max-tokens $n 2> "$OUT/ppl7b_hf.log" | tail -1)
      t=$(date +%s)
      cc=$($INFER_BIN --model $dir --ppl $VAL --procedure sliding --ctx 2048 --stride 512 --max-tokens $n --device gpu --json 2> "$OUT/ppl7b_coda.log" | tail -1)
      echo "coda.c run (load + eval) $(( $(date +%s) - t )) s"
      echo "HF:     $hf"; echo "coda.c: $cc"
      python3 -c "import json,sys; h=json.loads(sys.argv[1]); c=json.loads(sys.argv[2]); \
print('scored %d vs %d, mean NLL HF %.6f coda.c %.6f, rel diff %.2e; scored tok/s HF %.0f coda.c %.0f (%.2fx)' % (h['scored'], \
c['tokens_scored'], h['mean_nll'], c['mean_nll'], abs(h['mean_nll'] - c['mean_nll']) / h['mean_nll'], h['scored_tok_s'], \
c['scored_tok_s'], c['scored_tok_s'] / h['scored_tok_s']))" "$hf" "$cc" ;;
    *) echo "unknown stage $stage"; exit 1 ;;
  esac
done
