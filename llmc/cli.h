// cli.h — the command-line parser of the programs: a table of flags (name, kind, destination, range,
// help text) from which both the parsing and the usage text come. Strict: a value that is malformed,
// has trailing characters, lies outside the flag's range (int overflow included) or is NaN/Inf is an
// error naming the flag and the value, as are an unknown flag, a missing value and a stray argument.
// -h / --help prints the usage on stdout and exits 0; errors go to stderr and exit 2
// (cli_parse_or_exit). cli_parse itself only reports, so tests can check every message.
//
// A program builds its table over its options struct, e.g.
//   CliFlag flags[] = {
//       cli_int("--steps", &o.steps, 1, INT_MAX, "N", "optimizer updates"),
//       cli_double("--lr", &o.lr, 0, HUGE_VAL, "X", "peak learning rate"),
//       cli_double_in("--beta1", &o.beta1, 0, 1, "[)", "X", "AdamW beta1"),
//       cli_enum("--procedure", &o.procedure, PROCEDURES, "which perplexity procedure"),
//       cli_switch("--resume", &o.resume, "continue from OUT/LATEST"),
//   };
// The destinations hold the defaults before parsing; the usage text shows each one that lies in
// the flag's range (an out-of-range default, like -1 for "keep the config's", is explained by the
// help text instead).
#pragma once
#include <errno.h>
#include <limits.h>
#include <ctype.h>
#include <math.h>
#include "common.h"

typedef enum { CLI_INT, CLI_INT64, CLI_UINT64, CLI_DOUBLE, CLI_STRING, CLI_ENUM, CLI_SWITCH, CLI_SECTION } CliKind;

typedef struct {
    const char* name;  // the value as typed; a table ends with {NULL, 0}
    int value;
} CliChoice;

typedef struct {
    const char* name;          // "--lr" (CLI_SECTION: NULL)
    CliKind kind;
    void* dest;                // int* (INT, ENUM, SWITCH), int64_t*, uint64_t*, double*, const char** (STRING)
    long long imin, imax;      // CLI_INT / CLI_INT64: inclusive range
    double dmin, dmax;         // CLI_DOUBLE: range (-HUGE_VAL / HUGE_VAL: none on that side)
    int dmin_open, dmax_open;  // CLI_DOUBLE: the bound itself is outside the range
    const CliChoice* choices;  // CLI_ENUM
    const char* meta;          // value placeholder in the usage text (N, X, FILE); CLI_ENUM: from the choices
    const char* help;          // CLI_SECTION: the heading; may hold '\n' (continued, indented, on the next line)
    int* given;                // optional: set to 1 when the flag is on the command line
} CliFlag;

typedef struct {
    const char* program;       // "train_coda"
    const char* usage;         // first line of the usage text, after "usage: "
    const char* intro;         // optional lines after it
    const CliFlag* flags;
    int n_flags;
} CliSpec;

#define CLI_HELP 1  // cli_parse: -h / --help was given

static inline CliFlag cli__flag(const char* name, CliKind kind, void* dest, const char* meta, const char* help) {
    CliFlag f;
    memset(&f, 0, sizeof(f));
    f.name = name; f.kind = kind; f.dest = dest; f.meta = meta; f.help = help;
    f.dmin = -HUGE_VAL; f.dmax = HUGE_VAL;
    return f;
}
static inline CliFlag cli_int(const char* name, int* dest, long long lo, long long hi, const char* meta, const char* help) {
    CliFlag f = cli__flag(name, CLI_INT, dest, meta, help);
    f.imin = lo < INT_MIN ? INT_MIN : lo;
    f.imax = hi > INT_MAX ? INT_MAX : hi;
    return f;
}
static inline CliFlag cli_int64(const char* name, int64_t* dest, long long lo, long long hi, const char* meta, const char* help) {
    CliFlag f = cli__flag(name, CLI_INT64, dest, meta, help);
    f.imin = lo; f.imax = hi;
    return f;
}
// Any value in [0, 2^64).
static inline CliFlag cli_uint64(const char* name, uint64_t* dest, const char* meta, const char* help) {
    return cli__flag(name, CLI_UINT64, dest, meta, help);
}
// A finite value between lo and hi (-HUGE_VAL / HUGE_VAL: no limit on that side); bounds is "[]",
// "(]", "[)" or "()": whether each bound is itself allowed, as in interval notation.
static inline CliFlag cli_double_in(const char* name, double* dest, double lo, double hi, const char* bounds, const char* meta,
                                    const char* help) {
    CliFlag f = cli__flag(name, CLI_DOUBLE, dest, meta, help);
    f.dmin = lo; f.dmax = hi;
    f.dmin_open = bounds[0] == '(';
    f.dmax_open = bounds[1] == ')';
    return f;
}
// A finite value in [lo, hi].
static inline CliFlag cli_double(const char* name, double* dest, double lo, double hi, const char* meta, const char* help) {
    return cli_double_in(name, dest, lo, hi, "[]", meta, help);
}
static inline CliFlag cli_string(const char* name, const char** dest, const char* meta, const char* help) {
    return cli__flag(name, CLI_STRING, dest, meta, help);
}
static inline CliFlag cli_enum(const char* name, int* dest, const CliChoice* choices, const char* help) {
    CliFlag f = cli__flag(name, CLI_ENUM, dest, NULL, help);
    f.choices = choices;
    return f;
}
// No value: sets *dest to 1.
static inline CliFlag cli_switch(const char* name, int* dest, const char* help) { return cli__flag(name, CLI_SWITCH, dest, NULL, help); }
// f, also telling *given whether the flag was on the command line.
static inline CliFlag cli_given(CliFlag f, int* given) {
    f.given = given;
    return f;
}
// A heading line in the usage text.
static inline CliFlag cli_section(const char* heading) { return cli__flag(NULL, CLI_SECTION, NULL, NULL, heading); }

// ---- values ----

// "[lo, hi]" of an int flag.
static inline void cli__int_range(const CliFlag* f, char* buf, size_t n) { snprintf(buf, n, "[%lld, %lld]", f->imin, f->imax); }
// ">= 0", "> 0", "in (0, 1]", ... of a double flag.
static inline void cli__double_range(const CliFlag* f, char* buf, size_t n) {
    int has_lo = f->dmin > -HUGE_VAL, has_hi = f->dmax < HUGE_VAL;
    if (has_lo && has_hi) snprintf(buf, n, "in %s%g, %g%s", f->dmin_open ? "(" : "[", f->dmin, f->dmax, f->dmax_open ? ")" : "]");
    else if (has_lo) snprintf(buf, n, "%s %g", f->dmin_open ? ">" : ">=", f->dmin);
    else if (has_hi) snprintf(buf, n, "%s %g", f->dmax_open ? "<" : "<=", f->dmax);
    else snprintf(buf, n, "finite");
}
static inline int cli__double_ok(const CliFlag* f, double x) {
    return isfinite(x) && x >= f->dmin && x <= f->dmax && !(f->dmin_open && x == f->dmin) && !(f->dmax_open && x == f->dmax);
}
static inline void cli__choice_list(const CliChoice* c, char* buf, size_t n) {
    buf[0] = 0;
    for (int i = 0; c[i].name; i++) snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", i ? "|" : "", c[i].name);
}

// Decimal digits with an optional sign, nothing else (strtoll alone takes leading blanks, "0x" in
// base 0, and stops quietly at "1e3"'s 'e').
static inline int cli__is_integer(const char* v) {
    const char* p = v + (v[0] == '-' || v[0] == '+');
    if (!*p) return 0;
    for (; *p; p++) if (*p < '0' || *p > '9') return 0;
    return 1;
}

// Parses v as the value of flag f into f->dest. The message names the flag and the value.
static inline int cli_parse_value(const CliFlag* f, const char* v, CodaError* err) {
    char range[96];
    switch (f->kind) {
        case CLI_INT:
        case CLI_INT64: {
            if (!cli__is_integer(v)) return coda_errorf(err, "%s: '%s' is not an integer", f->name, v);
            errno = 0;
            long long x = strtoll(v, NULL, 10);
            if (errno == ERANGE || x < f->imin || x > f->imax) {
                cli__int_range(f, range, sizeof(range));
                return coda_errorf(err, "%s: %s is out of range %s", f->name, v, range);
            }
            if (f->kind == CLI_INT) *(int*)f->dest = (int)x;
            else *(int64_t*)f->dest = (int64_t)x;
            return 0;
        }
        case CLI_UINT64: {
            if (!cli__is_integer(v) || v[0] == '-' || v[0] == '+')
                return coda_errorf(err, "%s: '%s' is not a non-negative integer", f->name, v);
            errno = 0;
            unsigned long long x = strtoull(v, NULL, 10);
            if (errno == ERANGE) return coda_errorf(err, "%s: %s is out of range [0, 18446744073709551615]", f->name, v);
            *(uint64_t*)f->dest = (uint64_t)x;
            return 0;
        }
        case CLI_DOUBLE: {
            char* end;
            errno = 0;
            double x = strtod(v, &end);
            if (end == v || *end || isspace((unsigned char)v[0])) return coda_errorf(err, "%s: '%s' is not a number", f->name, v);
            if (!isfinite(x)) return coda_errorf(err, "%s: '%s' is not a finite number", f->name, v);
            cli__double_range(f, range, sizeof(range));
            if (errno == ERANGE) return coda_errorf(err, "%s: %s is beyond what a double holds (must be %s)", f->name, v, range);
            if (!cli__double_ok(f, x))
                return coda_errorf(err, "%s: %s is out of range (must be %s)", f->name, v, range);
            *(double*)f->dest = x;
            return 0;
        }
        case CLI_STRING:
            *(const char**)f->dest = v;
            return 0;
        case CLI_ENUM:
            for (int i = 0; f->choices[i].name; i++)
                if (strcmp(v, f->choices[i].name) == 0) { *(int*)f->dest = f->choices[i].value; return 0; }
            cli__choice_list(f->choices, range, sizeof(range));
            return coda_errorf(err, "%s: '%s' is not one of %s", f->name, v, range);
        case CLI_SWITCH:
        case CLI_SECTION: break;
    }
    return coda_errorf(err, "%s: takes no value", f->name);
}

// The flag whose name is the first len characters of name (len < 0: all of it).
static inline const CliFlag* cli__find(const CliSpec* s, const char* name, int len) {
    size_t n = len < 0 ? strlen(name) : (size_t)len;
    for (int i = 0; i < s->n_flags; i++)
        if (s->flags[i].name && strlen(s->flags[i].name) == n && strncmp(s->flags[i].name, name, n) == 0) return &s->flags[i];
    return NULL;
}

// Parses argv[1..argc) into the flags' destinations. Returns 0, CLI_HELP for -h / --help (nothing
// after it is parsed), or -1 with a message. A flag given twice keeps its last value.
static inline int cli_parse(const CliSpec* s, int argc, char** argv, CodaError* err) {
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return CLI_HELP;
        const CliFlag* f = a[0] == '-' ? cli__find(s, a, -1) : NULL;
        if (!f) {
            if (a[0] != '-') return coda_errorf(err, "unexpected argument '%s' (every value follows its flag)", a);
            const char* eq = strchr(a, '=');
            if (eq && cli__find(s, a, (int)(eq - a)))
                return coda_errorf(err, "unknown flag '%s': give the value as the next argument (%.*s %s)", a, (int)(eq - a), a, eq + 1);
            return coda_errorf(err, "unknown flag '%s'", a);
        }
        if (f->kind == CLI_SWITCH) {
            *(int*)f->dest = 1;
            if (f->given) *f->given = 1;
            continue;
        }
        char choices[96];
        const char* meta = f->meta ? f->meta : "a value";
        if (f->kind == CLI_ENUM) { cli__choice_list(f->choices, choices, sizeof(choices)); meta = choices; }
        if (i + 1 >= argc) return coda_errorf(err, "%s needs a value (%s)", a, meta);
        const char* v = argv[++i];
        if (v[0] == '-' && v[1] == '-' && cli__find(s, v, -1)) return coda_errorf(err, "%s needs a value (%s), got the flag %s", a, meta, v);
        if (cli_parse_value(f, v, err) != 0) return -1;
        if (f->given) *f->given = 1;
    }
    return 0;
}

// ---- usage text ----

// The current value of f if it is a valid one (then it is the default shown), else 0.
static inline int cli__default(const CliFlag* f, char* buf, size_t n) {
    switch (f->kind) {
        case CLI_INT: {
            int x = *(const int*)f->dest;
            if (x < f->imin || x > f->imax) return 0;
            snprintf(buf, n, "%d", x);
            return 1;
        }
        case CLI_INT64: {
            int64_t x = *(const int64_t*)f->dest;
            if (x < f->imin || x > f->imax) return 0;
            snprintf(buf, n, "%lld", (long long)x);
            return 1;
        }
        case CLI_UINT64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t*)f->dest); return 1;
        case CLI_DOUBLE: {
            double x = *(const double*)f->dest;
            if (!cli__double_ok(f, x)) return 0;
            snprintf(buf, n, "%g", x);
            return 1;
        }
        case CLI_STRING: {
            const char* v = *(const char* const*)f->dest;
            if (!v) return 0;
            snprintf(buf, n, "%s", v);
            return 1;
        }
        case CLI_ENUM:
            for (int i = 0; f->choices[i].name; i++)
                if (*(const int*)f->dest == f->choices[i].value) { snprintf(buf, n, "%s", f->choices[i].name); return 1; }
            return 0;
        case CLI_SWITCH:
        case CLI_SECTION: break;
    }
    return 0;
}

#define CLI_HELP_COLUMN 28
// The usage text: "usage: ...", the intro, then one entry per flag ("  --name META", the help at
// column CLI_HELP_COLUMN, its default) and the section headings, in table order.
static inline void cli_usage(const CliSpec* s, FILE* out) {
    fprintf(out, "usage: %s\n", s->usage);
    if (s->intro) fprintf(out, "%s\n", s->intro);
    for (int i = 0; i < s->n_flags; i++) {
        const CliFlag* f = &s->flags[i];
        if (f->kind == CLI_SECTION) { fprintf(out, "%s\n", f->help); continue; }
        char left[160], choices[96], def[256];
        const char* meta = f->meta;
        if (f->kind == CLI_ENUM) { cli__choice_list(f->choices, choices, sizeof(choices)); meta = choices; }
        int n = snprintf(left, sizeof(left), "  %s%s%s", f->name, meta ? " " : "", meta ? meta : "");
        fputs(left, out);
        if (n + 2 > CLI_HELP_COLUMN) fprintf(out, "\n%*s", CLI_HELP_COLUMN, "");
        else fprintf(out, "%*s", CLI_HELP_COLUMN - n, "");
        for (const char* h = f->help; *h; h++) {
            fputc(*h, out);
            if (*h == '\n') fprintf(out, "%*s", CLI_HELP_COLUMN, "");
        }
        if (cli__default(f, def, sizeof(def))) fprintf(out, " (default %s)", def);
        fputc('\n', out);
    }
}

// Parses argv and reports as a program does: -h / --help prints the usage on `out` and returns 0;
// an error prints "error: ..." and a pointer to --help on `errs` and returns 2; a good command line
// prints nothing and returns -1. (cli_parse_or_exit turns the first two into the exit status.)
static inline int cli_parse_report(const CliSpec* s, int argc, char** argv, FILE* out, FILE* errs) {
    CodaError err;
    int rc = cli_parse(s, argc, argv, &err);
    if (rc == CLI_HELP) {
        cli_usage(s, out);
        return 0;
    }
    if (rc != 0) {
        fprintf(errs, "error: %s\n(%s --help lists the flags)\n", err.msg, s->program);
        return 2;
    }
    return -1;
}

// For a program's main: -h / --help prints the usage on stdout and exits 0; an error goes to stderr
// and exits 2; otherwise it returns with the flags parsed.
static inline void cli_parse_or_exit(const CliSpec* s, int argc, char** argv) {
    int status = cli_parse_report(s, argc, argv, stdout, stderr);
    if (status >= 0) exit(status);
}

// A command-line error found after parsing (a missing required flag, two that exclude each
// other): the same report and exit status 2 as a parse error.
static inline void cli_fail(const CliSpec* s, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(%s --help lists the flags)\n", s->program);
    va_end(ap);
    exit(2);
}

// A list of integers >= lo separated by commas and/or spaces ("1, 2,3") into *out (malloc'd, *n
// entries, at least one). `flag` names the list in messages.
static inline int cli_parse_int_list(const char* flag, const char* s, int lo, int** out, int* n, CodaError* err) {
    int cap = 16, k = 0;
    int* v = (int*)coda_malloc_or_die(sizeof(int) * cap, "integer list");
    const char* p = s;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        size_t len = strcspn(p, " ,");
        char item[32];
        if (len >= sizeof(item)) { free(v); return coda_errorf(err, "%s: '%.*s' is not an integer", flag, (int)len, p); }
        memcpy(item, p, len);
        item[len] = 0;
        errno = 0;
        long long x = cli__is_integer(item) ? strtoll(item, NULL, 10) : 0;
        if (!cli__is_integer(item)) { free(v); return coda_errorf(err, "%s: '%s' is not an integer", flag, item); }
        if (errno == ERANGE || x < lo || x > INT_MAX) { free(v); return coda_errorf(err, "%s: %s is out of range [%d, 2147483647]", flag, item, lo); }
        if (k == cap) {
            cap *= 2;
            v = (int*)realloc(v, sizeof(int) * cap);
            if (!v) coda_fatal("out of memory");
        }
        v[k++] = (int)x;
        p += len;
    }
    if (k == 0) { free(v); return coda_errorf(err, "%s: no integers in '%s'", flag, s); }
    *out = v;
    *n = k;
    return 0;
}
