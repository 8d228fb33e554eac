// test_cli.h — the command-line parser (llmc/cli.h): every kind of flag takes its good values; each
// kind of bad value (malformed, trailing characters, out of range, int overflow, NaN / Inf), an
// unknown flag, a missing value and a stray argument are errors that name the flag and the value and
// leave the destination as it was; -h / --help stops the parse; the usage text comes from the table
// with the defaults; a program prints help on stdout with exit 0 and errors on stderr with exit 2
// (cli_parse_report); integer lists.
#pragma once
#include "../../llmc/cli.h"

typedef struct {
    int n, level, flag, given;
    int64_t big;
    uint64_t seed;
    double lr, p, beta;
    const char* path;
    int mode;
} CliTestOptions;

static const CliChoice CLI_TEST_MODES[] = {{"fast", 1}, {"exact", 2}, {"exact_alias", 2}, {NULL, 0}};

// The table every test here parses with: one flag of each kind.
#define CLI_TEST_FLAGS(o)                                                                         \
    cli_int("--n", &(o).n, 1, 1000, "N", "a count"),                                              \
    cli_int("--level", &(o).level, -1, INT_MAX, "L", "any int from -1"),                          \
    cli_given(cli_int64("--big", &(o).big, 0, INT64_MAX, "N", "a 64-bit count"), &(o).given),    \
    cli_uint64("--seed", &(o).seed, "S", "a seed"),                                               \
    cli_section("numbers:"),                                                                      \
    cli_double("--lr", &(o).lr, 0, HUGE_VAL, "X", "a rate"),                                      \
    cli_double_in("--p", &(o).p, 0, 1, "(]", "P", "a probability above 0"),                       \
    cli_double_in("--beta", &(o).beta, 0, 1, "[)", "B", "below 1\nsecond line of help"),          \
    cli_string("--path", &(o).path, "FILE", "a file"),                                            \
    cli_enum("--mode", &(o).mode, CLI_TEST_MODES, "how"),                                         \
    cli_switch("--flag", &(o).flag, "a switch")

static CliTestOptions cli_test_defaults(void) {
    CliTestOptions o;
    memset(&o, 0, sizeof(o));
    o.n = 5; o.level = -7; o.big = 3; o.seed = 42; o.lr = 0.5; o.p = 1.0; o.beta = 0.9; o.path = NULL; o.mode = 1;
    return o;
}

static int cli_test_same(const CliTestOptions* a, const CliTestOptions* b) {
    return a->n == b->n && a->level == b->level && a->flag == b->flag && a->given == b->given && a->big == b->big && a->seed == b->seed &&
           a->lr == b->lr && a->p == b->p && a->beta == b->beta && a->path == b->path && a->mode == b->mode;
}

// Parses the argument list (NULL-terminated, without the program name) into o.
static int cli_test_parse(CliTestOptions* o, const char* const* args, CodaError* err) {
    const CliFlag flags[] = {CLI_TEST_FLAGS(*o)};
    const CliSpec spec = {"prog", "prog [options]", "  intro line", flags, (int)(sizeof(flags) / sizeof(flags[0]))};
    const char* argv[32] = {"prog"};
    int argc = 1;
    while (args[argc - 1]) { argv[argc] = args[argc - 1]; argc++; }
    return cli_parse(&spec, argc, (char**)argv, err);
}

TEST(cli_parses_every_kind_of_flag) {
    CliTestOptions o = cli_test_defaults();
    CodaError err;
    const char* args[] = {"--n", "1000", "--level", "-1", "--big", "9223372036854775807", "--seed", "18446744073709551615",
                          "--lr", "3e-4", "--p", "1", "--beta", "0", "--path", "-x.bin", "--mode", "exact_alias", "--flag", "--n", "+7",
                          NULL};
    CHECK(cli_test_parse(&o, args, &err) == 0, "%s", err.msg);
    CHECK(o.n == 7, "the last --n wins: %d", o.n);
    CHECK(o.level == -1 && o.big == INT64_MAX && o.given, "level %d big %lld given %d", o.level, (long long)o.big, o.given);
    CHECK(o.seed == UINT64_MAX, "seed %llu", (unsigned long long)o.seed);
    CHECK(o.lr == 3e-4 && o.p == 1.0 && o.beta == 0.0, "lr %g p %g beta %g", o.lr, o.p, o.beta);
    CHECK(o.path && strcmp(o.path, "-x.bin") == 0 && o.mode == 2 && o.flag == 1, "path %s mode %d flag %d", o.path, o.mode, o.flag);
    // nothing given: the defaults stay, and `given` says so
    CliTestOptions d = cli_test_defaults();
    const char* none[] = {NULL};
    CHECK(cli_test_parse(&d, none, &err) == 0 && d.n == 5 && d.lr == 0.5 && !d.given && !d.flag && d.path == NULL, "defaults kept");
}

TEST(cli_refuses_each_kind_of_bad_value_naming_flag_and_value) {
    struct { const char* flag; const char* value; const char* expect; } cases[] = {
        {"--n", "x", "'x' is not an integer"},
        {"--n", "", "'' is not an integer"},
        {"--n", "1e3", "'1e3' is not an integer"},           // atoi would have read 1
        {"--n", "12abc", "'12abc' is not an integer"},       // trailing garbage
        {"--n", " 5", "' 5' is not an integer"},
        {"--n", "0x10", "'0x10' is not an integer"},
        {"--n", "0", "0 is out of range [1, 1000]"},
        {"--n", "1001", "1001 is out of range [1, 1000]"},
        {"--level", "2147483648", "2147483648 is out of range [-1, 2147483647]"},  // one past INT_MAX
        {"--level", "-2", "-2 is out of range"},
        {"--big", "9223372036854775808", "9223372036854775808 is out of range"},    // int64 overflow
        {"--big", "-99999999999999999999", "is out of range"},
        {"--seed", "-1", "'-1' is not a non-negative integer"},
        {"--seed", "18446744073709551616", "18446744073709551616 is out of range"},  // one past UINT64_MAX
        {"--lr", "x", "'x' is not a number"},                 // atof would have read 0
        {"--lr", "1.5x", "'1.5x' is not a number"},
        {"--lr", "", "'' is not a number"},
        {"--lr", "nan", "'nan' is not a finite number"},
        {"--lr", "inf", "'inf' is not a finite number"},
        {"--lr", "-Infinity", "'-Infinity' is not a finite number"},
        {"--lr", "1e999", "'1e999' is not a finite number"},
        {"--lr", "-1e-3", "-1e-3 is out of range (must be >= 0)"},
        {"--p", "0", "0 is out of range (must be in (0, 1])"},
        {"--p", "1.0000001", "is out of range (must be in (0, 1])"},
        {"--beta", "1", "1 is out of range (must be in [0, 1))"},
        {"--mode", "slow", "'slow' is not one of fast|exact|exact_alias"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CliTestOptions o = cli_test_defaults(), before = o;
        CodaError err;
        err.msg[0] = 0;
        const char* args[] = {cases[i].flag, cases[i].value, NULL};
        CHECK(cli_test_parse(&o, args, &err) == -1, "%s '%s' accepted", cases[i].flag, cases[i].value);
        CHECK(strncmp(err.msg, cases[i].flag, strlen(cases[i].flag)) == 0 && strstr(err.msg, cases[i].expect), "%s '%s': message '%s'",
              cases[i].flag, cases[i].value, err.msg);
        CHECK(cli_test_same(&o, &before), "%s '%s': a refused value changed the options", cases[i].flag, cases[i].value);
    }
}

TEST(cli_refuses_unknown_flags_missing_values_and_stray_arguments) {
    struct { const char* args[4]; const char* expect; } cases[] = {
        {{"--frobnicate", NULL}, "unknown flag '--frobnicate'"},
        {{"-n", "5", NULL}, "unknown flag '-n'"},
        {{"--n=5", NULL}, "unknown flag '--n=5': give the value as the next argument (--n 5)"},
        {{"--n", NULL}, "--n needs a value (N)"},
        {{"--mode", NULL}, "--mode needs a value (fast|exact|exact_alias)"},
        {{"--path", "--flag", NULL}, "--path needs a value (FILE), got the flag --flag"},
        {{"--n", "5", "extra", NULL}, "unexpected argument 'extra'"},
        {{"--flag", "1", NULL}, "unexpected argument '1'"},  // a switch takes no value
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CliTestOptions o = cli_test_defaults();
        CodaError err;
        err.msg[0] = 0;
        CHECK(cli_test_parse(&o, cases[i].args, &err) == -1 && strstr(err.msg, cases[i].expect), "case %zu: '%s'", i, err.msg);
    }
}

TEST(cli_help_and_the_usage_text_come_from_the_table) {
    CliTestOptions o = cli_test_defaults();
    CodaError err;
    const char* help1[] = {"--n", "9", "-h", "--bogus", NULL};
    CHECK(cli_test_parse(&o, help1, &err) == CLI_HELP, "-h stops the parse before the bad flag");
    const char* help2[] = {"--help", NULL};
    CHECK(cli_test_parse(&o, help2, &err) == CLI_HELP, "--help");
    o = cli_test_defaults();
    const CliFlag flags[] = {CLI_TEST_FLAGS(o)};
    const CliSpec spec = {"prog", "prog [options]", "  intro line", flags, (int)(sizeof(flags) / sizeof(flags[0]))};
    char path[64];
    test_mkdtemp(path, sizeof(path), "cli");
    char file[96];
    snprintf(file, sizeof(file), "%s/usage.txt", path);
    FILE* f = fopen(file, "w+");
    cli_usage(&spec, f);
    fseek(f, 0, SEEK_SET);
    char text[8192];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = 0;
    fclose(f);
    const char* expect[] = {
        "usage: prog [options]\n  intro line\n",
        "  --n N                     a count (default 5)\n",
        "  --level L                 any int from -1\n",  // -7 is outside its range: no default shown
        "  --seed S                  a seed (default 42)\n",
        "numbers:\n",
        "  --lr X                    a rate (default 0.5)\n",
        "  --beta B                  below 1\n                            second line of help (default 0.9)\n",
        "  --path FILE               a file\n",                 // no default
        "  --mode fast|exact|exact_alias\n                            how (default fast)\n",
        "  --flag                    a switch\n",
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) CHECK(strstr(text, expect[i]), "usage lacks '%s':\n%s", expect[i], text);
    for (int i = 0; i < spec.n_flags; i++)
        CHECK(!flags[i].name || strstr(text, flags[i].name), "usage lacks %s", flags[i].name);
    test_rmtree(path);
}

// Runs cli_parse_report on args (NULL-terminated) as a program's main would; returns the status it
// would exit with (-1: it would go on) and what it wrote to stdout and stderr.
static int cli_test_report(const char* const* args, char* out, char* errtext, size_t cap) {
    CliTestOptions o = cli_test_defaults();
    const CliFlag flags[] = {CLI_TEST_FLAGS(o)};
    const CliSpec spec = {"prog", "prog [options]", NULL, flags, (int)(sizeof(flags) / sizeof(flags[0]))};
    const char* argv[16] = {"prog"};
    int argc = 1;
    while (args[argc - 1]) { argv[argc] = args[argc - 1]; argc++; }
    FILE* fo = tmpfile();
    FILE* fe = tmpfile();
    if (!fo || !fe) { perror("tmpfile"); exit(2); }
    int status = cli_parse_report(&spec, argc, (char**)argv, fo, fe);
    FILE* files[2] = {fo, fe};
    char* bufs[2] = {out, errtext};
    for (int i = 0; i < 2; i++) {
        rewind(files[i]);
        size_t n = fread(bufs[i], 1, cap - 1, files[i]);
        bufs[i][n] = 0;
        fclose(files[i]);
    }
    return status;
}

TEST(cli_help_on_stdout_exit_0_errors_on_stderr_exit_2) {
    char out[8192], errtext[8192];
    const char* help[] = {"--help", NULL};
    CHECK(cli_test_report(help, out, errtext, sizeof(out)) == 0, "--help exits 0");
    CHECK(strncmp(out, "usage: prog", 11) == 0 && errtext[0] == 0, "usage on stdout only: out '%.40s' err '%.40s'", out, errtext);
    const char* bad[] = {"--lr", "x", NULL};
    CHECK(cli_test_report(bad, out, errtext, sizeof(out)) == 2, "a bad value exits 2");
    CHECK(out[0] == 0 && strstr(errtext, "error: --lr: 'x' is not a number") && strstr(errtext, "prog --help"), "stderr: '%s'", errtext);
    const char* good[] = {"--n", "3", NULL};
    CHECK(cli_test_report(good, out, errtext, sizeof(out)) == -1 && out[0] == 0 && errtext[0] == 0, "a good command line goes on, silently");
}

TEST(cli_integer_lists) {
    CodaError err;
    int* v;
    int n;
    CHECK(cli_parse_int_list("--ids", "1, 2,3", 0, &v, &n, &err) == 0 && n == 3 && v[0] == 1 && v[1] == 2 && v[2] == 3, "%s", err.msg);
    free(v);
    CHECK(cli_parse_int_list("--ids", " 7 ", 0, &v, &n, &err) == 0 && n == 1 && v[0] == 7, "%s", err.msg);
    free(v);
    struct { const char* s; const char* expect; } bad[] = {
        {"1,x", "--ids: 'x' is not an integer"}, {"1,2e3", "'2e3' is not an integer"}, {"4294967296", "out of range"},
        {"-1", "-1 is out of range [0, 2147483647]"}, {", ,", "no integers"}, {"", "no integers"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = 0;
        CHECK(cli_parse_int_list("--ids", bad[i].s, 0, &v, &n, &err) != 0 && strstr(err.msg, bad[i].expect), "'%s': '%s'", bad[i].s, err.msg);
    }
}
