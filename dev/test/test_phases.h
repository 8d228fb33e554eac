// test_phases.h — what each training phase does to a config (llmc/presets.h): the model presets and
// phase 2's surgery (the bounded presets, their overrides, and the refusal of a checkpoint that did
// not go through phase 1).
#pragma once
#include "../../llmc/presets.h"
#include "harness.h"

static BoundedOptions phases_default_bounded(void) {
    BoundedOptions b = {1, -1, -1, -1, -1, 1, 1, 1, CAND_ORDER_BY_GATE};  // medium, the paper's switches
    return b;
}

TEST(phase2_config_presets_overrides_and_switches) {
    CodaError err;
    ModelConfig base;
    CHECK(model_config_from("tiny", &base, &err) == 0, "%s", err.msg);
    base.differential = 1;  // a phase-1 (CoDA) config
    const int want[N_BOUNDED_PRESETS][3] = {{128, 32, 32}, {256, 64, 64}, {512, 128, 128}, {256, 0, 0}};
    for (int p = 0; p < N_BOUNDED_PRESETS; p++) {
        ModelConfig c = base;
        BoundedOptions b = phases_default_bounded();
        b.preset = p;
        CHECK(phase2_config(&c, &b, "x", &err) == 0, "preset %s: %s", BOUNDED_PRESETS[p].name, err.msg);
        CHECK(c.bounded && c.window == want[p][0] && c.n_exact == want[p][1] && c.n_summary == want[p][2] && c.block_size == 256,
              "preset %s: W %d Me %d Ms %d block %d", BOUNDED_PRESETS[p].name, c.window, c.n_exact, c.n_summary, c.block_size);
        CHECK(c.detach_evicted && c.cross_block_grad && c.mask_unused_memory && c.mem_init == MEM_INIT_ZEROS, "switches");
        CHECK(c.write_gate_init_bias == -2.0f && c.eta_init_logit == -3.0f, "write gate / eta init (docs/spec.md §5)");
    }
    ModelConfig c = base;
    BoundedOptions b = phases_default_bounded();
    b.window = 100; b.n_summary = 0; b.block = 128; b.detach_evicted = 0; b.cross_block_grad = 0; b.candidate_order = CAND_ORDER_REFERENCE;
    CHECK(phase2_config(&c, &b, "x", &err) == 0, "%s", err.msg);
    CHECK(c.window == 100 && c.n_exact == 64 && c.n_summary == 0 && c.block_size == 128 && !c.detach_evicted && !c.cross_block_grad &&
              c.candidate_order == CAND_ORDER_REFERENCE, "overrides: W %d Me %d Ms %d block %d", c.window, c.n_exact, c.n_summary, c.block_size);
    // a base / phase-0 config (standard GQA attention) is refused, naming where it came from
    c = base;
    c.differential = 0;
    b = phases_default_bounded();
    CHECK(phase2_config(&c, &b, "out0/step_00000150/config.json", &err) != 0 && strstr(err.msg, "out0/step_00000150/config.json") &&
              strstr(err.msg, "phase 1"), "%s", err.msg);
    CHECK(!c.bounded, "a refused config is left as it was");
    // sizes past the documented limits are refused by config_validate
    c = base;
    b.window = 1 << 30;
    CHECK(phase2_config(&c, &b, "x", &err) != 0 && strstr(err.msg, "window"), "%s", err.msg);
}
