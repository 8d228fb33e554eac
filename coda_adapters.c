// coda_adapters.c — CoDA attention adapters between coda.c and the PyTorch reference (docs/spec.md §5.2),
// the command line over llmc/adapters.h:
//   coda_adapters export --model DIR --out coda_adapters.pt|FILE.safetensors [--dtype bf16|fp32]
//       the adapters of a coda.c CoDA checkpoint (phase 1 or 2) under the reference's names, one group
//       "layer_{i}" per layer: a torch zip file that torch.load(path, weights_only=True) reads (the
//       reference's Quick Start: adapter.load_state_dict(state[f"layer_{i}"])), or safetensors with the
//       flattened keys layer_{i}.coda.<name> and the attention config in its metadata;
//   coda_adapters import --base DIR --adapters FILE --out DIR [attention config flags]
//       a coda.c checkpoint from a base Mistral model and adapters trained by the reference (or exported
//       above): evaluate it with infer_coda, train it further with train_coda --init.
// CPU only; the whole model passes through host memory once (Mistral-7B in bf16: 14.5 GB).
#include "llmc/adapters.h"
#include "llmc/cli.h"

static const CliChoice DTYPE_CHOICES[] = {{"bf16", DT_BF16}, {"fp32", DT_F32}, {NULL, 0}};

static int export_main(int argc, char** argv) {
    const char *model = NULL, *out = NULL;
    int dtype = DT_BF16;
    const CliFlag flags[] = {
        cli_string("--model", &model, "DIR", "a coda.c CoDA checkpoint (config.json + model.safetensors[.index.json])"),
        cli_string("--out", &out, "FILE", "coda_adapters.pt (torch zip) or NAME.safetensors (flattened keys + config)"),
        cli_enum("--dtype", &dtype, DTYPE_CHOICES, "tensor dtype in the file (the reference trains in bf16)"),
    };
    const CliSpec cli = {"coda_adapters export", "coda_adapters export --model DIR --out FILE [--dtype bf16|fp32]", NULL, flags,
                         (int)(sizeof(flags) / sizeof(flags[0]))};
    cli_parse_or_exit(&cli, argc, argv);
    if (!model || !out) cli_fail(&cli, "--model and --out are required");
    CodaError err;
    if (adapters_export(model, out, (DType)dtype, &err) != 0) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    printf("wrote the adapters of %s to %s (%s)\n", model, out, dtype_name((DType)dtype));
    return 0;
}

static const CliChoice MEM_INIT_CHOICES[] = {{"zeros", MEM_INIT_ZEROS}, {"random_normal", MEM_INIT_RANDOM_NORMAL}, {NULL, 0}};

static int import_main(int argc, char** argv) {
    const char *base = NULL, *adapters = NULL, *out = NULL;
    int dtype = DT_BF16;
    ConfigOverrides ov = overrides_none();
    const CliFlag flags[] = {
        cli_string("--base", &base, "DIR", "the base model (HF Mistral directory, or a coda.c checkpoint)"),
        cli_string("--adapters", &adapters, "FILE", "coda_adapters.pt (the reference's, or coda_adapters export's) or .safetensors"),
        cli_string("--out", &out, "DIR", "the coda.c checkpoint to write (config.json + model.safetensors)"),
        cli_enum("--dtype", &dtype, DTYPE_CHOICES, "parameter dtype of the checkpoint"),
        cli_section("attention config (default: the .safetensors file's own; for a .pt: bounded iff it has write_proj,\n"
                    "head norm full iff it has head_norm, the rest coda.c's defaults, docs/spec.md §5.1):"),
        cli_int("--bounded", &ov.bounded, 0, 1, "0|1", "unbounded or bounded attention"),
        cli_int("--window", &ov.window, 1, INT_MAX, "W", "recent ring slots"),
        cli_int("--exact", &ov.n_exact, 0, INT_MAX, "Me", "exact bank slots"),
        cli_int("--summary", &ov.n_summary, 0, INT_MAX, "Ms", "summary bank slots"),
        cli_int("--block", &ov.block_size, 1, INT_MAX, "S", "prefill block (the reference adapter's default is 1024)"),
        cli_double_in("--rope-theta", &ov.rope_theta, 0, HUGE_VAL, "(]", "X",
                      "RoPE base of the attention (the reference's bounded layers used 10000 whatever the base)"),
        cli_enum("--mem-init", &ov.mem_init, MEM_INIT_CHOICES, "initial bank contents of an empty state"),
    };
    const CliSpec cli = {"coda_adapters import", "coda_adapters import --base DIR --adapters FILE --out DIR [options]", NULL, flags,
                         (int)(sizeof(flags) / sizeof(flags[0]))};
    cli_parse_or_exit(&cli, argc, argv);
    if (!base || !adapters || !out) cli_fail(&cli, "--base, --adapters and --out are required");
    CodaError err;
    AdapterImportReport rep;
    if (adapters_import(base, adapters, &ov, out, (DType)dtype, 1234, &rep, &err) != 0) { fprintf(stderr, "error: %s\n", err.msg); return 1; }
    const ModelConfig* c = &rep.cfg;
    printf("wrote %s: %d layers, CoDA %s", out, c->n_layers, c->bounded ? "bounded" : "unbounded");
    if (c->bounded) printf(" (W=%d Me=%d Ms=%d block %d)", c->window, c->n_exact, c->n_summary, c->block_size);
    printf(", head norm %s; %d adapter tensors from %s, %d base tensors from %s\n", c->head_norm == HEAD_NORM_FULL ? "full" : "identity",
           rep.apply.n_applied, adapters, rep.base.n_loaded, base);
    if (rep.apply.n_kept)
        printf("note: %d adapter tensor(s) are not in %s and keep their initial values (e.g. %s)\n", rep.apply.n_kept, adapters,
               rep.apply.kept[0]);
    return 0;
}

int main(int argc, char** argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char* usage =
        "usage: coda_adapters export --model DIR --out FILE.pt|FILE.safetensors [--dtype bf16|fp32]\n"
        "       coda_adapters import --base DIR --adapters FILE --out DIR [attention config flags]\n"
        "  (coda_adapters export --help, coda_adapters import --help: the options)\n";
    if (argc >= 2 && strcmp(argv[1], "export") == 0) return export_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "import") == 0) return import_main(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) { fputs(usage, stdout); return 0; }
    fprintf(stderr, "coda_adapters: %s\n%s", argc < 2 ? "give a command" : "unknown command", usage);
    return 2;
}
