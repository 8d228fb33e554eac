// make_corpus.c — writes the seed corpora dev/fuzz/corpus/<target>/seed-* (committed; tiny valid
// inputs each target starts from). Rerun after changing a format:
//   cc -O1 -I. -o build/make_corpus dev/fuzz/make_corpus.c -lm && build/make_corpus dev/fuzz/corpus
// Every seed must be accepted by its target (the test suite checks that the committed ones are).
#include "dev/fuzz/fuzz_targets.h"

static const char* corpus_root;

static void emit(const char* target, const char* name, const void* data, size_t size) {
    char dir[1024], path[1100];
    snprintf(dir, sizeof(dir), "%s/%s", corpus_root, target);
    mkdir(corpus_root, 0755);
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/seed-%s", dir, name);
    CodaError err;
    err.msg[0] = 0;
    int rc = fuzz_target_find(target)->fn((const uint8_t*)data, size, &err);
    if (rc != FUZZ_ACCEPTED) { fprintf(stderr, "seed %s/%s is not accepted: %s\n", target, name, err.msg); exit(1); }
    fz_write_file(path, data, size);
    printf("%s (%zu bytes)\n", path, size);
}
static void emit_text(const char* target, const char* name, const char* text) { emit(target, name, text, strlen(text)); }

static void emit_file(const char* target, const char* name, const char* path) {
    FILE* f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    emit(target, name, buf, n);
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: make_corpus DIR   (writes DIR/<target>/seed-*)\n"); return 2; }
    corpus_root = argv[1];
    CodaError err;

    emit_text("json", "values", "{\"a\": [1, -0, 2.5, 1e400, -1.5e-7, 123456789012345678901, \"x\\u00e9\\ud83d\\ude00\\n\", null, true, false],"
                                " \"b\": {\"nested\": {\"deep\": []}}, \"c\": NaN, \"d\": -Infinity}");
    emit_text("json", "scalars", "[\"\", 0, 9007199254740993, -9223372036854775808, \"\\\\\\/\\b\\f\\r\\t\\u0000\"]");

    // config: a tiny bounded CoDA config as coda.c writes it, and Mistral-7B-v0.3 as transformers does
    JsonBuf b;
    jbuf_init(&b);
    ModelConfig c = fz_tiny_config();
    c.differential = 1; c.bounded = 1; c.head_norm = HEAD_NORM_FULL; c.window = 16; c.n_exact = 4; c.n_summary = 4; c.block_size = 8;
    if (config_to_json(&b, "config.json", &c, DT_BF16, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
    emit("config", "coda-tiny", b.data, b.len);
    emit_text("config", "mistral-7b",
              "{\"architectures\": [\"MistralForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": [2, 3], \"head_dim\": null,"
              " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02, \"intermediate_size\": 14336,"
              " \"max_position_embeddings\": 32768, \"model_type\": \"mistral\", \"num_attention_heads\": 32,"
              " \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05,"
              " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0}, \"sliding_window\": null,"
              " \"tie_word_embeddings\": false, \"vocab_size\": 32768}");
    jbuf_free(&b);

    // safetensors: two tensors and metadata; an empty file; a misaligned header (length not a multiple of 8)
    {
        const int64_t s1[2] = {2, 3}, s2[1] = {4};
        const StWriteTensor wt[2] = {{"w", DT_BF16, 2, s1, NULL}, {"b", DT_F32, 1, s2, NULL}};
        const StMeta meta[1] = {{"format", "pt"}};
        jbuf_init(&b);
        size_t data_bytes;
        if (st__build_header(&b, "seed", wt, 2, meta, 1, &data_bytes, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
        for (size_t i = 0; i < data_bytes; i++) { char x = (char)(i * 7); jbuf_append(&b, &x, 1); }
        emit("safetensors", "two-tensors", b.data, b.len);
        jbuf_free(&b);
        jbuf_init(&b);
        if (st__build_header(&b, "seed", NULL, 0, NULL, 0, &data_bytes, &err) != 0) return 1;
        emit("safetensors", "empty", b.data, b.len);
        jbuf_free(&b);
        static const char odd[] = "\x35\0\0\0\0\0\0\0{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}Z";
        emit("safetensors", "unpadded", odd, sizeof(odd) - 1);
    }

    // safetensors_struct: descriptions (tensor count, then per tensor dtype, ndim, dims, name suffix)
    {
        static const uint8_t a[] = {2, 2, 2, 3, 4, 0, 0, 1, 5, 1, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        static const uint8_t z[] = {0, 0, 0};
        static const uint8_t m[] = {4, 9, 1, 4, 2, 1, 3, 3, 2, 2, 2, 1, 0, 3, 1, 2, 2, 0, 1, 7, 8, 9, 3, 0, 1, 2, 2, 1, 0, 0, 5, 6};
        emit("safetensors_struct", "two", a, sizeof(a));
        emit("safetensors_struct", "nothing", z, sizeof(z));
        emit("safetensors_struct", "mixed", m, sizeof(m));
    }

    // index: the one hf_save_params wrote for the tiny model
    {
        FzModelDir* md = fz_model_dir();
        char path[700];
        snprintf(path, sizeof(path), "%s/%s", md->dir, HF_INDEX_NAME);
        emit_file("index", "saved", path);
    }

    // shard: uint16 (vocab 100) and uint32 (vocab 70000) shards, both packings
    {
        const char* specs[2] = {"u16", "u32"};
        for (int k = 0; k < 2; k++) {
            int32_t ids[24];
            int V = k ? 70000 : 100;
            for (int i = 0; i < 24; i++) ids[i] = (int32_t)((i * 37 + k * 65000) % V);
            char path[600];
            fz_scratch_path("seed.bin", path, sizeof(path));
            if (shard_write(path, ids, 24, V, 1, 2, k ? SHARD_PACK_BOS_PER_DOC : SHARD_PACK_JOINED, 3, &err) != 0) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            emit_file("shard", specs[k], path);
        }
    }

    // tokenizer: the two toy tokenizers, and a Metaspace (Llama-2 style pre-tokenizer) variant
    for (int k = 0; k < 2; k++) {
        jbuf_init(&b);
        fz__toy_tokenizer_json(&b, k);
        emit("tokenizer", k ? "toy-cross-word" : "toy", b.data, b.len);
        jbuf_free(&b);
    }
    emit_text("tokenizer", "metaspace",
              "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true}],"
              "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\","
              "\"split\":false},\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\"},"
              "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":false,\"vocab\":{\"<unk>\":0,\"<s>\":1,"
              "\"\xE2\x96\x81\":2,\"a\":3,\"b\":4,\"ab\":5,\"\xE2\x96\x81" "ab\":6},\"merges\":[\"a b\",[\"\xE2\x96\x81\",\"ab\"]]}}");

    // train_state: version 2 (sealed with its checksum) and version 1 files for FZ_TRAIN_RUN
    for (int version = 1; version <= TRAIN_STATE_VERSION; version += TRAIN_STATE_VERSION - 1) {
        uint8_t buf[sizeof(TrainStateHeader) + 3 * FZ_TRAIN_N * sizeof(float)];
        TrainStateHeader h;
        memset(&h, 0, sizeof(h));
        h.magic = TRAIN_STATE_MAGIC; h.version = version; h.n_train = FZ_TRAIN_N; h.step = 150; h.adam_step = 150;
        h.data_epoch = 1; h.data_index = 16; h.seed = FZ_TRAIN_RUN.seed; h.B = FZ_TRAIN_RUN.B; h.T = FZ_TRAIN_RUN.T;
        h.accum = FZ_TRAIN_RUN.accum;
        memcpy(buf, &h, sizeof(h));
        for (int i = 0; i < 3 * FZ_TRAIN_N; i++) { float v = 0.5f * (float)i - 1.0f; memcpy(buf + sizeof(h) + 4 * i, &v, 4); }
        if (version >= 2) train_state_seal(buf, sizeof(buf));
        emit("train_state", version >= 2 ? "v2-step150" : "v1-step150", buf, sizeof(buf));
    }

    // bounded_state: a fresh session's state, and one after a prompt (banks filled, logits pending)
    for (int k = 0; k < 2; k++) {
        Session s;
        session_init(&s, fz_bounded_model(), 11);
        int prompt[9] = {1, 5, 9, 2, 7, 7, 3, 15, 4};
        if (k && session_prefill(&s, prompt, 9, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
        void* bytes;
        size_t n;
        if (state_file_encode(&s, &bytes, &n, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
        emit("bounded_state", k ? "after-prompt" : "fresh", bytes, n);
        free(bytes);
        session_free(&s);
    }

    // torch_pt: files pt_write makes (two groups; the same with every zip64 field; an empty dict). The
    // seed seed-torch-1.13 is torch's own file: `dev/test/torch_pt_check.py write coda_adapters.pt`
    // with torch 1.13, renamed (this program does not rewrite it; test_torch_pt.h checks its values).
    {
        const int64_t s1[2] = {2, 3}, s2[1] = {3};
        uint16_t w[6] = {0x3f80, 0xbf80, 0x7fc1, 0x0001, 0x8000, 0x4049};
        float th[3] = {0.5f, -2.0f, 1e-30f};
        PtTensor t[3];
        memset(t, 0, sizeof(t));
        snprintf(t[0].group, 64, "layer_0"); snprintf(t[0].name, 128, "coda.q_proj.weight");
        t[0].dtype = DT_BF16; t[0].ndim = 2; t[0].shape[0] = s1[0]; t[0].shape[1] = s1[1]; t[0].data = w; t[0].nbytes = sizeof(w);
        snprintf(t[1].group, 64, "layer_1"); snprintf(t[1].name, 128, "coda.theta");
        t[1].dtype = DT_F32; t[1].ndim = 1; t[1].shape[0] = s2[0]; t[1].data = th; t[1].nbytes = sizeof(th);
        t[2] = t[1];
        snprintf(t[2].group, 64, "layer_0");
        for (int k = 0; k < 3; k++) {
            char* buf = NULL;
            size_t len = 0;
            FILE* f = open_memstream(&buf, &len);
            PtWriteOpts o;
            memset(&o, 0, sizeof(o));
            o.force_zip64 = k == 1;
            if (pt__write_stream(f, "seed", t, k == 2 ? 0 : 3, &o, &err) != 0) { fprintf(stderr, "%s\n", err.msg); return 1; }
            fclose(f);
            emit("torch_pt", k == 0 ? "coda" : k == 1 ? "zip64" : "empty", buf, len);
            free(buf);
        }
    }

    // tokenizer_roundtrip: texts
    emit_text("tokenizer_roundtrip", "english", "The thing in the well, then another one.\n\nhello  world");
    emit_text("tokenizer_roundtrip", "unicode", " \xC3\xA9\xC3\xA9\xC3\xA9 \xE6\x97\xA5\xF0\x9F\x98\x80   tabs\there");
    static const char bad_utf8[] = "a\xff\xfe\xC3(\xE2\x82 z\xF4\x90\x80\x80";
    emit("tokenizer_roundtrip", "invalid-utf8", bad_utf8, sizeof(bad_utf8) - 1);
    return 0;
}
