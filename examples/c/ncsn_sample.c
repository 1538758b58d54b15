/*
 * ncsn_sample: run an ncsn-export directory's fused sampler.onnx from C (onnxruntime C API, loaded with dlopen).
 *
 *   ncsn_sample EXPORT_DIR --seed S --num-samples N --output FILE.npy [--steps n] [--ort-lib PATH] [--threads K] [--json]
 *               [--inpaint KNOWN.npy --mask MASK.npy]
 *
 * Sample b uses seed S + b; the samples equal the Python runtime's (ncsn-sample / NCSNPipeline) for the same
 * seeds. The program builds every input of sampler.onnx itself, from manifest.json and
 * scheduler/scheduler_config.json:
 *   - the schedule: trained sigmas geometric from sigma_max to sigma_min (float64 -> float32), the n levels
 *     spread evenly over the trained range (round half to even), alpha_i = eps * (sigma_i / sigma_last)^2;
 *   - the initial sample: Philox4x32-10 counter noise (the spec in runtime/ncsn_runtime/noise.py), uniform in
 *     the manifest's init_range, counter 0 of stream 1.
 * With --inpaint / --mask (float32 .npy, [...sample_shape] or [H, W]; mask 1 = known, 0 = fill in, nothing else,
 * something of each) it runs inpaint.onnx instead: the same loop conditioned on the known image (Song & Ermon 2019,
 * Algorithm 2), N completions equal to the Python runtime's `pipe.inpaint` for the same seeds; its extra inputs
 * are the schedule's sigmas (trained sigmas at the chosen levels), known and mask (one sample repeated N times).
 * onnxruntime is loaded at run time (dlopen) from --ort-lib or $NCSN_ORT_LIB, e.g. the libonnxruntime.so.*
 * inside the onnxruntime Python wheel, so its version need not match the header's (API version 21+ needed).
 */
#define _XOPEN_SOURCE 700 /* realpath, O_NOFOLLOW */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "onnxruntime_c_api.h"
#include "verify.h"

#define MAX_RANK 8
#define MAX_SEED 9223372036854775807ULL
/* resource limits on an (untrusted) export directory, as ncsn_runtime.schedule / ncsn_runtime.manifest (SECURITY.md) */
#define MAX_TRAIN_TIMESTEPS 100000
#define MAX_ANNEALED_STEPS 10000
#define MAX_TOTAL_STEPS 1000000
#define MAX_SAMPLE_ELEMENTS (1LL << 24)
#define MAX_OUTPUT_BYTES (2LL << 30)
#define MAX_FILES 10000
#define MAX_FILE_BYTES (1LL << 40)
#define MAX_JSON_BYTES (16LL << 20)
#define MAX_THREADS 4096 /* ncsn_runtime.providers.MAX_THREADS */
#define TEMP_NAME_EXTRA 14 /* write_npy's temporary sibling: NAME.tmpPID (a pid has at most 10 digits) */

static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die(int code, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fputs("error: ", stderr);
  vfprintf(stderr, fmt, args);
  fputc('\n', stderr);
  va_end(args);
  exit(code);
}

/* ---- Philox4x32-10 and the uniform mapping (runtime/ncsn_runtime/noise.py) ---------------------------- */
static void philox4x32(uint32_t c[4], uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; round++) {
    if (round) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint64_t p0 = (uint64_t)c[0] * 0xD2511F53u;
    uint64_t p1 = (uint64_t)c[2] * 0xCD9E8D57u;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
    uint32_t n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
    uint32_t n3 = (uint32_t)p0;
    c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
  }
}

static double word_to_uniform(uint32_t word) { return ((double)(word >> 9) * 2.0 + 1.0) * 0x1p-24; }

/* initial_sample(seeds, shape, low, high): counter 0, stream 1; element e uses block e/4, word e%4 */
static void initial_sample(const int64_t *seeds, int64_t batch, int64_t numel, double low, double high, float *out) {
  for (int64_t b = 0; b < batch; b++) {
    uint64_t seed = (uint64_t)seeds[b];
    for (int64_t e = 0; e < numel; e += 4) {
      uint32_t c[4] = {(uint32_t)(e / 4), 0u, 0u, 1u};
      philox4x32(c, (uint32_t)seed, (uint32_t)(seed >> 32));
      for (int w = 0; w < 4 && e + w < numel; w++) out[b * numel + e + w] = (float)(low + (high - low) * word_to_uniform(c[w]));
    }
  }
}

/* ---- the export directory: the checks of ncsn_runtime.manifest (SECURITY.md), before any graph is opened ---- */
/* The rules of ncsn_runtime.verify.confined: relative, no '..' / '.' / empty component, no backslash, no scheme or
   drive prefix; dies naming `what` otherwise. */
static void check_relative(const char *relative, const char *what) {
  if (!relative || !*relative) die(1, "%s must be a non-empty relative path", what);
  if (strchr(relative, '\\')) die(1, "%s \"%s\" holds a backslash", what, relative);
  const char *colon = strchr(relative, ':'), *slash = strchr(relative, '/');
  if (colon && (!slash || colon < slash) && (relative[0] >= 'A' && relative[0] <= 'z'))
    die(1, "%s \"%s\" holds a scheme/drive prefix", what, relative);
  if (relative[0] == '/') die(1, "%s \"%s\" is absolute; paths in an export directory are relative to it", what, relative);
  for (const char *part = relative; part;) {
    const char *next = strchr(part, '/');
    size_t length = next ? (size_t)(next - part) : strlen(part);
    if (length == 0 || (length == 1 && part[0] == '.') || (length == 2 && part[0] == '.' && part[1] == '.'))
      die(1, "%s \"%s\" holds '..', '.' or an empty component", what, relative);
    part = next ? next + 1 : NULL;
  }
}

typedef struct {
  const char *root;
  char real_root[4096];
  const JValue *files;
} ExportDir;

/* The listed entry of `relative`: {sha256, bytes} (already checked by check_manifest). */
static const JValue *listed(const ExportDir *dir, const char *relative) {
  const JValue *entry = json_get(dir->files, relative);
  if (!entry) die(1, "%s is not listed in %s/manifest.json", relative, dir->root);
  return entry;
}

/* Open a listed file: inside the directory (realpath), a regular file, its size and sha256 as listed. The returned
   descriptor is positioned at 0; *size receives its size. */
static int open_listed(const ExportDir *dir, const char *relative, uint64_t *size) {
  const JValue *entry = listed(dir, relative);
  char path[4096], real[4096];
  if (snprintf(path, sizeof path, "%s/%s", dir->root, relative) >= (int)sizeof path) die(1, "%s/%s: path too long", dir->root, relative);
  if (!realpath(path, real)) die(1, "%s is listed in manifest.json but missing (%s)", path, strerror(errno));
  size_t n = strlen(dir->real_root);
  if (strncmp(real, dir->real_root, n) != 0 || real[n] != '/') die(1, "%s leads outside %s (through a symlink)", relative, dir->real_root);
  int fd = open(real, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) die(1, "cannot open %s: %s", path, strerror(errno));
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) die(1, "%s is not a regular file (a FIFO, device, socket or directory is never read)", path);
  long long want = json_get(entry, "bytes")->integer;
  if ((long long)info.st_size != want) die(1, "%s is %lld bytes, manifest.json says %lld (truncated or replaced?)", path, (long long)info.st_size, want);
  char hex[65];
  uint64_t read_bytes;
  if (!sha256_fd(fd, hex, &read_bytes)) die(1, "cannot read %s: %s", path, strerror(errno));
  if ((long long)read_bytes != want || strcmp(hex, json_get(entry, "sha256")->string) != 0)
    die(1, "%s sha256 %.12s... does not match manifest.json (%.12s...)", path, hex, json_get(entry, "sha256")->string);
  if (lseek(fd, 0, SEEK_SET) != 0) die(1, "cannot read %s: %s", path, strerror(errno));
  *size = read_bytes;
  return fd;
}

/* A listed JSON file (scheduler config), verified and parsed (strict JSON, at most 16 MiB). */
static JValue *read_listed_json(const ExportDir *dir, const char *relative) {
  uint64_t size;
  int fd = open_listed(dir, relative, &size);
  if ((long long)size > MAX_JSON_BYTES) die(1, "%s/%s is %llu bytes; at most %lld are read", dir->root, relative, (unsigned long long)size, MAX_JSON_BYTES);
  char *text = malloc((size_t)size + 1);
  if (!text || read(fd, text, (size_t)size) != (ssize_t)size) die(1, "cannot read %s/%s", dir->root, relative);
  close(fd);
  char error[256];
  JValue *value = json_parse(text, (size_t)size, error, sizeof error);
  free(text);
  if (!value || value->type != J_OBJECT) die(1, "%s/%s is not a JSON object (%s)", dir->root, relative, value ? "another value" : error);
  return value;
}

/* manifest.json: not a symlink, a regular file of at most 16 MiB, strict JSON, an object */
static JValue *read_manifest_json(const char *root) {
  char path[4096];
  snprintf(path, sizeof path, "%s/manifest.json", root);
  struct stat link;
  if (lstat(path, &link) != 0) die(1, "%s is missing: %s is not an ncsn-export directory (%s)", path, root, strerror(errno));
  if (S_ISLNK(link.st_mode)) die(1, "%s is a symlink; it is never followed (%s is not an ncsn-export directory)", path, root);
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
  struct stat info;
  if (fd < 0 || fstat(fd, &info) != 0) die(1, "cannot open %s: %s", path, strerror(errno));
  if (!S_ISREG(info.st_mode)) die(1, "%s is not a regular file (a FIFO, device, socket or directory is never read)", path);
  if (info.st_size > MAX_JSON_BYTES) die(1, "%s is %lld bytes; at most %lld are read", path, (long long)info.st_size, MAX_JSON_BYTES);
  char *text = malloc((size_t)info.st_size + 1);
  if (!text || read(fd, text, (size_t)info.st_size) != (ssize_t)info.st_size) die(1, "cannot read %s", path);
  close(fd);
  char error[256];
  JValue *value = json_parse(text, (size_t)info.st_size, error, sizeof error);
  free(text);
  if (!value) die(1, "%s is not valid JSON: %s", path, error);
  if (value->type != J_OBJECT) die(1, "%s must hold a JSON object", path);
  return value;
}

static int is_int(const JValue *value, long long low, long long high) {
  return value && value->type == J_NUMBER && value->is_integer && value->integer_exact && value->integer >= low && value->integer <= high;
}

static int is_finite_number(const JValue *value) { return value && value->type == J_NUMBER && isfinite(value->number); }

/* The graph I/O contract (runtime/ncsn_runtime/contract.py GRAPHS; tests/test_contract.py compares): "..." stands for
   model.sample_shape, other strings are dynamic axes. */
typedef struct { const char *name, *dtype, *shape[2]; } TensorSpec;
typedef struct { const char *key; TensorSpec inputs[8]; int num_inputs; TensorSpec output; } GraphSpec;
static const GraphSpec CONTRACT[] = {
    {"score", {{"sample", "float32", {"batch", "..."}}, {"timestep", "int64", {"batch", NULL}}}, 2, {"score", "float32", {"batch", "..."}}},
    {"step", {{"sample", "float32", {"batch", "..."}}, {"seed", "int64", {"batch", NULL}}, {"timestep", "int64", {NULL, NULL}},
              {"step_size", "float32", {NULL, NULL}}, {"counter", "int64", {NULL, NULL}}}, 5, {"next_sample", "float32", {"batch", "..."}}},
    {"sampler", {{"sample", "float32", {"batch", "..."}}, {"seed", "int64", {"batch", NULL}}, {"timesteps", "int64", {"num_levels", NULL}},
                 {"step_sizes", "float32", {"num_levels", NULL}}, {"num_annealed_steps", "int64", {NULL, NULL}}}, 5,
     {"final_sample", "float32", {"batch", "..."}}},
    {"gpu_step", {{"sample", "float32", {"batch", "..."}}, {"noise", "float32", {"batch", "..."}}, {"timestep", "int64", {NULL, NULL}},
                  {"step_size", "float32", {NULL, NULL}}}, 4, {"next_sample", "float32", {"batch", "..."}}},
    {"gpu_sampler", {{"sample", "float32", {"batch", "..."}}, {"seed", "int64", {"batch", NULL}}, {"timesteps", "int64", {"num_levels", NULL}},
                     {"step_sizes", "float32", {"num_levels", NULL}}, {"num_annealed_steps", "int64", {NULL, NULL}}}, 5,
     {"final_sample", "float32", {"batch", "..."}}},
    {"inpaint", {{"sample", "float32", {"batch", "..."}}, {"seed", "int64", {"batch", NULL}}, {"timesteps", "int64", {"num_levels", NULL}},
                 {"step_sizes", "float32", {"num_levels", NULL}}, {"num_annealed_steps", "int64", {NULL, NULL}},
                 {"sigmas", "float32", {"num_levels", NULL}}, {"known", "float32", {"batch", "..."}}, {"mask", "float32", {"batch", "..."}}}, 8,
     {"final_sample", "float32", {"batch", "..."}}},
};

/* One `inputs` / `outputs` table: exactly the contract's names (any order), dtypes, ranks and fixed dims. */
static void check_table(const JValue *table, const TensorSpec *specs, int count, const double *dims, int rank, const char *what) {
  if (!table || table->type == J_NULL) return; /* an older manifest without the table: the contract's */
  if (table->type != J_ARRAY || (int)table->count != count) die(1, "%s must list the %d tensors of the graph contract", what, count);
  for (int i = 0; i < count; i++) {
    const JValue *item = NULL;
    for (size_t j = 0; j < table->count; j++) {
      const JValue *name = json_get(table->items[j], "name");
      if (!name || name->type != J_STRING) die(1, "%s must be a list of {name, dtype, shape} objects", what);
      if (!strcmp(name->string, specs[i].name)) item = table->items[j];
    }
    if (!item) die(1, "%s does not list `%s`; the graph contract has it", what, specs[i].name);
    const JValue *dtype = json_get(item, "dtype"), *shape = json_get(item, "shape");
    if (!dtype || dtype->type != J_STRING || strcmp(dtype->string, specs[i].dtype)) die(1, "%s: `%s` has another dtype than the contract's %s", what, specs[i].name, specs[i].dtype);
    int want = 0;
    for (int k = 0; k < 2 && specs[i].shape[k]; k++) want += strcmp(specs[i].shape[k], "...") ? 1 : rank;
    if (!shape || shape->type != J_ARRAY || (int)shape->count != want) die(1, "%s: `%s` has a shape of another rank than the contract's", what, specs[i].name);
    int at = 0;
    for (int k = 0; k < 2 && specs[i].shape[k]; k++) {
      int sample = !strcmp(specs[i].shape[k], "...");
      for (int d = 0; d < (sample ? rank : 1); d++, at++) {
        const JValue *got = shape->items[at];
        if (!(got->type == J_STRING || is_int(got, 0, 1LL << 62)) || (sample && !(is_int(got, 0, 1LL << 62) && (double)got->integer == dims[d])))
          die(1, "%s: `%s` has a shape that disagrees with the contract and model.sample_shape", what, specs[i].name);
      }
    }
  }
}

typedef struct {
  double dims[MAX_RANK];
  int rank;
  double range[2];
  const char *sampler_file, *inpaint_file, *scheduler_file;
} ModelFacts;

/* Every check of ncsn_runtime.manifest.parse_manifest on the parsed manifest (the same table of limits). */
static ModelFacts check_manifest(const JValue *manifest, const char *root, ExportDir *dir) {
  const char *where = "manifest.json";
  const JValue *format = json_get(manifest, "format");
  if (!format || format->type != J_STRING || strcmp(format->string, "ncsn-export")) die(1, "%s/%s is not an ncsn-export manifest", root, where);
  if (!is_int(json_get(manifest, "format_version"), 1, 1)) die(1, "%s/%s has another format_version than 1, the one this program reads", root, where);
  const JValue *model = json_get(manifest, "model"), *graphs = json_get(manifest, "graphs"), *files = json_get(manifest, "files");
  if (!model || model->type != J_OBJECT || !graphs || graphs->type != J_OBJECT || !files || files->type != J_OBJECT)
    die(1, "%s/%s lacks the model, graphs or files section (an object)", root, where);
  if (files->count > MAX_FILES) die(1, "%s: `files` lists %zu entries; at most %d", where, files->count, MAX_FILES);
  for (size_t i = 0; i < files->count; i++) {
    check_relative(files->keys[i], "manifest.json: files entry");
    const JValue *entry = files->items[i], *sha = json_get(entry, "sha256");
    int hex_ok = sha && sha->type == J_STRING && strlen(sha->string) == 64 && strspn(sha->string, "0123456789abcdef") == 64;
    if (!hex_ok || !is_int(json_get(entry, "bytes"), 0, MAX_FILE_BYTES))
      die(1, "%s: files[\"%s\"] must be {sha256: 64 lowercase hex digits, bytes: an int in [0, 2**40]}", where, files->keys[i]);
  }
  dir->root = root, dir->files = files;
  if (!realpath(root, dir->real_root)) die(1, "%s: %s", root, strerror(errno));

  ModelFacts facts = {.range = {0.0, 1.0}};
  const JValue *shape = json_get(model, "sample_shape");
  long long elements = 1;
  if (!shape || shape->type != J_ARRAY || shape->count < 1 || shape->count > MAX_RANK) die(1, "%s: model.sample_shape must be 1 to %d positive ints", where, MAX_RANK);
  for (size_t i = 0; i < shape->count; i++) {
    if (!is_int(shape->items[i], 1, MAX_SAMPLE_ELEMENTS)) die(1, "%s: model.sample_shape must hold positive ints", where);
    facts.dims[i] = (double)shape->items[i]->integer;
    elements *= shape->items[i]->integer;
    if (elements > MAX_SAMPLE_ELEMENTS) die(1, "manifest sample_shape has more than %lld elements per sample (SECURITY.md)", MAX_SAMPLE_ELEMENTS);
  }
  facts.rank = (int)shape->count;
  if (facts.rank > MAX_RANK - 1) die(1, "%s: model.sample_shape has %d dims; this program reads at most %d", where, facts.rank, MAX_RANK - 1);
  const JValue *dtype = json_get(model, "dtype"), *compute = json_get(model, "compute_dtype");
  if (dtype && (dtype->type != J_STRING || strcmp(dtype->string, "float32"))) die(1, "%s: model.dtype is not supported (float32 only)", where);
  if (compute && (compute->type != J_STRING || (strcmp(compute->string, "float32") && strcmp(compute->string, "float16"))))
    die(1, "%s: model.compute_dtype must be float32 or float16", where);
  const JValue *levels = json_get(model, "num_train_timesteps");
  if (levels && levels->type != J_NULL && !is_int(levels, 1, MAX_TRAIN_TIMESTEPS)) die(1, "%s: model.num_train_timesteps must be an int in [1, %d]", where, MAX_TRAIN_TIMESTEPS);
  const char *strings[] = {"name", "description"}, *booleans[] = {"is_image", "final_denoise"}, *ranges[] = {"init_range", "data_range"};
  for (int i = 0; i < 2; i++) {
    const JValue *text = json_get(model, strings[i]), *flag = json_get(model, booleans[i]), *range = json_get(model, ranges[i]);
    if (text && text->type != J_STRING) die(1, "%s: model.name and model.description must be strings", where);
    if (flag && flag->type != J_BOOL) die(1, "%s: model.%s must be true or false", where, booleans[i]);
    if (range && !(range->type == J_ARRAY && range->count == 2 && is_finite_number(range->items[0]) && is_finite_number(range->items[1]) &&
                   range->items[0]->number < range->items[1]->number))
      die(1, "%s: model.%s must be [low, high], finite, low < high", where, ranges[i]);
    if (range && i == 0) facts.range[0] = range->items[0]->number, facts.range[1] = range->items[1]->number;
  }
  for (size_t i = 0; i < graphs->count; i++) {
    const GraphSpec *spec = NULL;
    for (size_t k = 0; k < sizeof CONTRACT / sizeof CONTRACT[0]; k++)
      if (!strcmp(graphs->keys[i], CONTRACT[k].key)) spec = &CONTRACT[k];
    if (!spec) continue; /* a graph key this program does not know is ignored (as Python) */
    const JValue *graph = graphs->items[i], *file = json_get(graph, "file");
    char what[128];
    snprintf(what, sizeof what, "%s: graphs.%s", where, spec->key);
    if (graph->type != J_OBJECT || !file || file->type != J_STRING) die(1, "%s must be an object with a file", what);
    check_relative(file->string, what);
    char table[160];
    snprintf(table, sizeof table, "%s.inputs", what);
    check_table(json_get(graph, "inputs"), spec->inputs, spec->num_inputs, facts.dims, facts.rank, table);
    snprintf(table, sizeof table, "%s.outputs", what);
    check_table(json_get(graph, "outputs"), &spec->output, 1, facts.dims, facts.rank, table);
    if (!strcmp(spec->key, "sampler")) facts.sampler_file = file->string;
    if (!strcmp(spec->key, "inpaint")) facts.inpaint_file = file->string;
  }
  const JValue *scheduler = json_get(manifest, "scheduler_config");
  if (scheduler && scheduler->type != J_STRING) die(1, "%s: scheduler_config must be a relative path", where);
  facts.scheduler_file = scheduler ? scheduler->string : "scheduler/scheduler_config.json";
  check_relative(facts.scheduler_file, "manifest.json: scheduler_config");
  const JValue *opset = json_get(manifest, "opset");
  if (opset && opset->type != J_NULL && !is_int(opset, 1, 1000)) die(1, "%s: opset must be an int in [1, 1000]", where);
  return facts;
}

/* The sampler graph and every external-data file it names, verified (listed, confined, regular, size + sha256);
   returns the graph's real path for onnxruntime. */
static void verify_graph(const ExportDir *dir, const char *relative, char *out, size_t out_size) {
  uint64_t size;
  int fd = open_listed(dir, relative, &size);
  char *locations[MAX_LOCATIONS];
  int count = 0;
  if (size) {
    void *bytes = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (bytes == MAP_FAILED) die(1, "cannot read %s/%s: %s", dir->root, relative, strerror(errno));
    const char *error = onnx_external_locations(bytes, (size_t)size, locations, &count);
    munmap(bytes, (size_t)size);
    if (error) die(1, "%s/%s is not a readable ONNX model: %s", dir->root, relative, error);
  }
  close(fd);
  const char *slash = strrchr(relative, '/');
  size_t folder = slash ? (size_t)(slash - relative) + 1 : 0;
  for (int i = 0; i < count; i++) {
    char what[4200], file[8192];
    snprintf(what, sizeof what, "external-data location of %s", relative);
    check_relative(locations[i], what);
    snprintf(file, sizeof file, "%.*s%s", (int)folder, relative, locations[i]);
    if (!json_get(dir->files, file)) die(1, "%s reads external data from \"%s\", which manifest.json does not list", relative, file);
    uint64_t data_size;
    close(open_listed(dir, file, &data_size));
    free(locations[i]);
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir->root, relative);
  if (!realpath(path, out) || strlen(out) >= out_size) die(1, "%s: %s", path, strerror(errno));
}

/* ---- the schedule (runtime/ncsn_runtime/schedule.py) ---------------------------------------------------- */
typedef struct {
  int64_t num_train_timesteps, num_annealed_steps;
  double sigma_min, sigma_max, sampling_eps;
} SchedulerConfig;

/* numpy.linspace(start, stop, num)[i]: start + i * step, last entry exactly stop */
static double linspace_at(double start, double stop, int64_t num, int64_t i) {
  if (num > 1 && i == num - 1) return stop;
  double step = num > 1 ? (stop - start) / (double)(num - 1) : 0.0;
  return (double)i * step + start;
}

static void build_schedule(const SchedulerConfig *config, int64_t count, int64_t *timesteps, float *step_sizes, float *sigmas) {
  int64_t levels = config->num_train_timesteps;
  float *train = malloc(sizeof(float) * (size_t)levels);
  for (int64_t i = 0; i < levels; i++) train[i] = (float)exp(linspace_at(log(config->sigma_max), log(config->sigma_min), levels, i));
  for (int64_t i = 0; i < count; i++) timesteps[i] = (int64_t)nearbyint(linspace_at(0.0, (double)(levels - 1), count, i)); /* half to even */
  double last = train[timesteps[count - 1]];
  for (int64_t i = 0; i < count; i++) {
    double ratio = (double)train[timesteps[i]] / last;
    step_sizes[i] = (float)(config->sampling_eps * (ratio * ratio));
    sigmas[i] = train[timesteps[i]];
  }
  free(train);
}

/* ---- .npy writer (float32, C order), atomic via rename -------------------------------------------------- */
static void write_npy(const char *path, const float *data, const int64_t *shape, int rank) {
  char header[256], dims[160] = "";
  size_t count = 1;
  for (int i = 0; i < rank; i++) {
    char dim[32];
    snprintf(dim, sizeof dim, i ? ", %lld" : "%lld", (long long)shape[i]);
    strncat(dims, dim, sizeof dims - strlen(dims) - 1);
    count *= (size_t)shape[i];
  }
  if (rank == 1) strncat(dims, ",", sizeof dims - strlen(dims) - 1);
  int length = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", dims);
  int padded = ((10 + length + 1 + 63) / 64) * 64 - 10;
  memset(header + length, ' ', (size_t)(padded - length - 1));
  header[padded - 1] = '\n';
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
  FILE *file = fopen(tmp, "wb");
  if (!file) die(1, "cannot write %s: %s", path, strerror(errno));
  unsigned char magic[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(padded & 0xff), (unsigned char)(padded >> 8)};
  int ok = fwrite(magic, 1, 10, file) == 10 && fwrite(header, 1, (size_t)padded, file) == (size_t)padded &&
           fwrite(data, sizeof(float), count, file) == count;
  if (fclose(file) != 0 || !ok || rename(tmp, path) != 0) {
    remove(tmp);
    die(1, "cannot write %s: %s", path, strerror(errno));
  }
}

/* ---- a user's input file (.npy): the whole of a regular file ------------------------------------------------ */
/* the whole file, or NULL when it is missing; only a regular file is read (opened with O_NONBLOCK and checked with
   fstat on the open descriptor, so a FIFO swapped in after a check cannot block) */
static char *read_file(const char *path, size_t *size) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    close(fd);
    die(1, "%s is not a regular file (a FIFO, device, socket or directory is never read)", path);
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  FILE *file = fdopen(fd, "rb");
  if (!file) die(1, "cannot read %s", path);
  fseek(file, 0, SEEK_END);
  long length = ftell(file);
  fseek(file, 0, SEEK_SET);
  char *data = malloc((size_t)length + 1);
  if (!data || fread(data, 1, (size_t)length, file) != (size_t)length) die(1, "cannot read %s", path);
  data[length] = '\0';
  fclose(file);
  if (size) *size = (size_t)length;
  return data;
}

/* ---- .npy reader (float32 '<f4', C order) and the inpainting mask rules (runtime/ncsn_runtime/inpaint.py) ------ */
/* one sample of `numel` floats from `path`: shape [...sample_shape] (rank dims), or [H, W] when the first dim is 1 */
static float *read_sample_npy(const char *flag, const char *path, const int64_t *dims, int rank, int64_t numel) {
  size_t size;
  char *data = read_file(path, &size);
  if (!data) die(2, "%s %s cannot be read (%s)", flag, path, strerror(errno));
  const unsigned char *bytes = (const unsigned char *)data;
  if (size < 10 || memcmp(bytes, "\x93NUMPY", 6) != 0) die(2, "%s %s is not a .npy file", flag, path);
  size_t header_length = bytes[6] == 1 ? (size_t)(bytes[8] | (bytes[9] << 8)) : (size_t)(bytes[8] | (bytes[9] << 8) | (bytes[10] << 16) | ((size_t)bytes[11] << 24));
  size_t start = bytes[6] == 1 ? 10 : 12;
  if (start + header_length > size || header_length > 4096) die(2, "%s %s has a broken .npy header", flag, path);
  char header[4097];
  memcpy(header, data + start, header_length);
  header[header_length] = '\0';
  if (!strstr(header, "'descr': '<f4'")) die(2, "%s %s must hold float32 values (descr '<f4'; save it with numpy as float32)", flag, path);
  if (strstr(header, "'fortran_order': True")) die(2, "%s %s is Fortran-ordered; save it C-ordered", flag, path);
  const char *open_paren = strstr(header, "'shape': (");
  if (!open_paren) die(2, "%s %s has no shape in its .npy header", flag, path);
  int64_t shape[MAX_RANK + 1];
  int found = 0;
  for (const char *p = open_paren + 10; *p && *p != ')';) {
    if (*p == ',' || *p == ' ') { p++; continue; }
    char *end;
    long long value = strtoll(p, &end, 10);
    if (end == p || found == MAX_RANK) die(2, "%s %s has a broken .npy shape", flag, path);
    shape[found++] = value, p = end;
  }
  int fits = found == rank;
  for (int i = 0; fits && i < rank; i++) fits = shape[i] == dims[i];
  if (!fits && rank == 3 && dims[0] == 1 && found == 2) fits = shape[0] == dims[1] && shape[1] == dims[2];
  if (!fits) {
    char want[160] = "", got[160] = "";
    for (int i = 0; i < rank; i++) snprintf(want + strlen(want), sizeof want - strlen(want), i ? ", %lld" : "%lld", (long long)dims[i]);
    for (int i = 0; i < found; i++) snprintf(got + strlen(got), sizeof got - strlen(got), i ? ", %lld" : "%lld", (long long)shape[i]);
    die(2, "%s %s has shape [%s]; this export's samples are [%s]", flag, path, got, want);
  }
  if (size - start - header_length != (size_t)numel * sizeof(float)) die(2, "%s %s holds %zu data bytes, its shape needs %lld", flag, path, size - start - header_length, (long long)(numel * 4));
  float *values = malloc(sizeof(float) * (size_t)numel);
  memcpy(values, data + start + header_length, sizeof(float) * (size_t)numel);
  free(data);
  for (int64_t i = 0; i < numel; i++)
    if (!isfinite(values[i])) die(2, "%s %s holds NaN or inf", flag, path);
  return values;
}

/* the mask holds only 0 and 1 (1 = known) and some of each; messages as ncsn_runtime.inpaint.check_mask */
static void check_mask(const char *path, const float *mask, int64_t numel) {
  int64_t other = 0, known = 0;
  float low = INFINITY, high = -INFINITY, min = INFINITY, max = -INFINITY;
  for (int64_t i = 0; i < numel; i++) {
    float value = mask[i];
    min = value < min ? value : min, max = value > max ? value : max;
    if (value == 1.0f) known++;
    else if (value != 0.0f) other++, low = value < low ? value : low, high = value > high ? value : high;
  }
  if (other) die(2, "--mask %s: `mask` must hold only 0 and 1 (1 = known, 0 = fill in), got %lld other values in [%g, %g] (mask values span [%g, %g])",
                 path, (long long)other, low, high, min, max);
  if (known == numel) die(2, "--mask %s: the mask is all 1 (everything known): nothing to fill in", path);
  if (known == 0) die(2, "--mask %s: the mask is all 0 (nothing known): that is plain sampling, drop --inpaint and --mask", path);
}

/* ---- onnxruntime ---------------------------------------------------------------------------------------- */
static const OrtApi *ort;

static void check(OrtStatus *status, const char *what) {
  if (status) {
    char message[2048];
    snprintf(message, sizeof message, "%s", ort->GetErrorMessage(status));
    ort->ReleaseStatus(status);
    die(1, "onnxruntime: %s: %s", what, message);
  }
}

static const OrtApi *load_onnxruntime(const char *library) {
  void *handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (!handle) die(1, "cannot load onnxruntime from %s: %s", library, dlerror());
  const OrtApiBase *(*get_api_base)(void) = (const OrtApiBase *(*)(void))dlsym(handle, "OrtGetApiBase");
  if (!get_api_base) die(1, "%s has no OrtGetApiBase: not an onnxruntime library", library);
  const OrtApiBase *base = get_api_base();
  const OrtApi *api = base->GetApi(ORT_API_VERSION);
  if (!api) die(1, "%s (onnxruntime %s) does not provide C API version %d of this program's header", library, base->GetVersionString(), ORT_API_VERSION);
  return api;
}

static const char *SAMPLER_INPUTS[] = {"sample", "seed", "timesteps", "step_sizes", "num_annealed_steps"};
static const char *SAMPLER_OUTPUT = "final_sample";
static const char *INPAINT_INPUTS[] = {"sample", "seed", "timesteps", "step_sizes", "num_annealed_steps", "sigmas", "known", "mask"};

static void check_io_names(OrtSession *session, const char *path, const char *key, const char **inputs, size_t expected) {
  OrtAllocator *allocator;
  check(ort->GetAllocatorWithDefaultOptions(&allocator), "allocator");
  size_t count;
  check(ort->SessionGetInputCount(session, &count), "input count");
  if (count != expected) {
    char names[512] = "";
    for (size_t i = 0; i < expected; i++) snprintf(names + strlen(names), sizeof names - strlen(names), i ? ", %s" : "%s", inputs[i]);
    die(1, "%s has %zu inputs, the %s contract has %zu (%s): mismatched export", path, count, key, expected, names);
  }
  for (size_t i = 0; i < count; i++) {
    char *name;
    check(ort->SessionGetInputName(session, i, allocator, &name), "input name");
    int same = strcmp(name, inputs[i]) == 0;
    if (!same) die(1, "%s input %zu is \"%s\", the %s contract expects \"%s\": mismatched export", path, i, name, key, inputs[i]);
    check(ort->AllocatorFree(allocator, name), "free");
  }
  char *output;
  check(ort->SessionGetOutputName(session, 0, allocator, &output), "output name");
  if (strcmp(output, SAMPLER_OUTPUT) != 0) die(1, "%s output is \"%s\", expected \"%s\": mismatched export", path, output, SAMPLER_OUTPUT);
  check(ort->AllocatorFree(allocator, output), "free");
}

static void usage(void) {
  fputs("usage: ncsn_sample EXPORT_DIR --seed S --num-samples N --output FILE.npy [--steps n] [--ort-lib PATH] [--threads K] [--json]\n"
        "  --seed S         decimal integer in [0, 2^63 - 1 - N]; sample b uses seed S + b (default 0)\n"
        "  --num-samples N  batch size (default 16)\n"
        "  --output FILE    .npy: raw float32 samples [N, ...sample_shape]\n"
        "  --steps n        noise levels to anneal through (default: all trained levels)\n"
        "  --ort-lib PATH   libonnxruntime.so to dlopen (default: $NCSN_ORT_LIB)\n"
        "  --threads K      onnxruntime intra-op threads (default: its choice)\n"
        "  --json           print a JSON summary line\n"
        "  --inpaint KNOWN.npy --mask MASK.npy\n"
        "                   inpaint KNOWN (float32, [...sample_shape] or [H, W]) where MASK is 0 (MASK: float32, 1 = known,\n"
        "                   0 = fill in, nothing else) through inpaint.onnx: N completions\n",
        stderr);
}

static uint64_t parse_u64(const char *flag, const char *text, uint64_t max) {
  if (!text || !*text) die(2, "%s needs a value", flag);
  for (const char *p = text; *p; p++)
    if (*p < '0' || *p > '9') die(2, "%s must be a decimal integer in [0, %llu], got \"%s\"", flag, (unsigned long long)max, text);
  errno = 0;
  unsigned long long value = strtoull(text, NULL, 10);
  if (errno == ERANGE || value > max) die(2, "%s must be in [0, %llu], got %s", flag, (unsigned long long)max, text);
  return value;
}

int main(int argc, char **argv) {
  const char *export_dir = NULL, *output = NULL, *seed_text = "0", *library = getenv("NCSN_ORT_LIB");
  const char *known_path = NULL, *mask_path = NULL;
  uint64_t num_samples = 16, steps = 0, threads = 0;
  int json = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) { usage(); return 0; }
    else if (!strcmp(arg, "--seed")) seed_text = next, i++;
    else if (!strcmp(arg, "--num-samples")) num_samples = parse_u64(arg, next, 1u << 20), i++;
    else if (!strcmp(arg, "--output")) output = next, i++;
    else if (!strcmp(arg, "--steps")) steps = parse_u64(arg, next, 1u << 20), i++;
    else if (!strcmp(arg, "--threads")) threads = parse_u64(arg, next, MAX_THREADS), i++;
    else if (!strcmp(arg, "--ort-lib")) library = next, i++;
    else if (!strcmp(arg, "--json")) json = 1;
    else if (!strcmp(arg, "--inpaint")) known_path = next, i++;
    else if (!strcmp(arg, "--mask")) mask_path = next, i++;
    else if (arg[0] == '-' && arg[1]) { usage(); die(2, "unknown option %s", arg); }
    else if (!export_dir) export_dir = arg;
    else { usage(); die(2, "expected one EXPORT_DIR, got another: %s", arg); }
  }
  if (!export_dir) { usage(); die(2, "EXPORT_DIR is required"); }
  if (!output) die(2, "--output FILE.npy is required");
  size_t output_length = strlen(output);
  if (output_length < 4 || strcmp(output + output_length - 4, ".npy") != 0) die(2, "--output must end in .npy (the C example writes raw samples only), got \"%s\"", output);
  if (num_samples < 1) die(2, "--num-samples must be in [1, %u], got 0", 1u << 20);
  /* the output is checked before any work (as ncsn-sample): its name leaves room for the temporary sibling's, and
     its folder exists and is writable */
  const char *base = strrchr(output, '/') ? strrchr(output, '/') + 1 : output;
  if (strlen(base) + TEMP_NAME_EXTRA > 255)
    die(2, "--output: the name is too long (%zu bytes; with the %d bytes of our temporary name it exceeds the 255-byte limit)", strlen(base), TEMP_NAME_EXTRA);
  char folder[4096];
  snprintf(folder, sizeof folder, "%.*s", base == output ? 1 : (int)(base - output), base == output ? "." : output);
  struct stat folder_info;
  if (stat(folder, &folder_info) != 0 || !S_ISDIR(folder_info.st_mode)) die(2, "--output %s: the folder %s does not exist", output, folder);
  if (access(folder, W_OK) != 0) die(2, "--output %s: the folder %s is not writable", output, folder);
  if (!known_path != !mask_path) die(2, "--inpaint KNOWN.npy and --mask MASK.npy go together: give both");
  int inpainting = known_path != NULL;
  uint64_t seed = parse_u64("--seed", seed_text, MAX_SEED - (num_samples - 1)); /* the last seed S + N - 1 <= 2^63 - 1 */
  if (!library) die(2, "no onnxruntime library: pass --ort-lib PATH or set NCSN_ORT_LIB (e.g. the libonnxruntime.so.* inside the onnxruntime wheel's onnxruntime/capi/)");

  /* manifest.json and the scheduler config: every check of the Python runtime's reader, before any graph is opened */
  char path[4096];
  JValue *manifest = read_manifest_json(export_dir);
  ExportDir dir;
  ModelFacts facts = check_manifest(manifest, export_dir, &dir);
  double *dims = facts.dims, *range = facts.range;
  int rank = facts.rank;
  const char *graph_key = inpainting ? "inpaint" : "sampler";
  const char *sampler_file = inpainting ? facts.inpaint_file : facts.sampler_file;
  if (!sampler_file) die(1, "%s/manifest.json lists no %s graph (%s.onnx): export it with ncsn-export (a default artifact)", export_dir, graph_key, graph_key);
  JValue *scheduler_json = read_listed_json(&dir, facts.scheduler_file);
  const char *int_keys[] = {"num_train_timesteps", "num_annealed_steps"}, *float_keys[] = {"sigma_min", "sigma_max", "sampling_eps"};
  for (int i = 0; i < 2; i++)
    if (!is_int(json_get(scheduler_json, int_keys[i]), 1, 1LL << 53)) die(1, "%s/%s: %s must be an int >= 1", export_dir, facts.scheduler_file, int_keys[i]);
  for (int i = 0; i < 3; i++)
    if (!is_finite_number(json_get(scheduler_json, float_keys[i]))) die(1, "%s/%s: %s must be a finite number", export_dir, facts.scheduler_file, float_keys[i]);
  SchedulerConfig config = {
      json_get(scheduler_json, "num_train_timesteps")->integer, json_get(scheduler_json, "num_annealed_steps")->integer,
      json_get(scheduler_json, "sigma_min")->number, json_get(scheduler_json, "sigma_max")->number,
      json_get(scheduler_json, "sampling_eps")->number};
  snprintf(path, sizeof path, "%s/%s", export_dir, facts.scheduler_file);
  if (config.num_train_timesteps < 1 || config.num_annealed_steps < 1 || !(config.sigma_min > 0) || !(config.sigma_max > config.sigma_min) || !(config.sampling_eps > 0))
    die(1, "%s holds invalid values (need L >= 1, T >= 1, 0 < sigma_min < sigma_max, sampling_eps > 0)", path);
  if (config.num_train_timesteps > MAX_TRAIN_TIMESTEPS || config.num_annealed_steps > MAX_ANNEALED_STEPS ||
      config.num_train_timesteps * config.num_annealed_steps > MAX_TOTAL_STEPS || !(config.sigma_max < 1e300) || !(config.sampling_eps < 1e300))
    die(1, "%s exceeds the limits (L <= %d, T <= %d, L x T <= %d, finite sigmas and sampling_eps; SECURITY.md)", path,
        MAX_TRAIN_TIMESTEPS, MAX_ANNEALED_STEPS, MAX_TOTAL_STEPS);
  const JValue *levels = json_get(json_get(manifest, "model"), "num_train_timesteps");
  if (levels && levels->type != J_NULL && levels->integer != config.num_train_timesteps)
    die(1, "%s has num_train_timesteps=%lld but the graphs were exported for %lld noise levels", path, (long long)config.num_train_timesteps, levels->integer);
  int64_t count = steps ? (int64_t)steps : config.num_train_timesteps;
  if (count > config.num_train_timesteps) die(2, "--steps must be in [1, %lld] (the export's trained levels), got %lld", (long long)config.num_train_timesteps, (long long)count);

  /* inputs */
  int64_t batch = (int64_t)num_samples, numel = 1, shape[MAX_RANK];
  shape[0] = batch;
  for (int i = 0; i < rank; i++) {
    if (!(dims[i] >= 1 && dims[i] <= (double)MAX_SAMPLE_ELEMENTS) || dims[i] != (double)(int64_t)dims[i]) die(1, "manifest sample_shape must hold positive integers");
    shape[i + 1] = (int64_t)dims[i], numel *= (int64_t)dims[i];
    if (numel > MAX_SAMPLE_ELEMENTS) die(1, "manifest sample_shape has more than %lld elements per sample (SECURITY.md)", MAX_SAMPLE_ELEMENTS);
  }
  if (rank < 1) die(1, "manifest sample_shape must not be empty");
  if (batch * numel * 4 > MAX_OUTPUT_BYTES) die(2, "--num-samples %lld x %lld bytes per sample exceeds the 2 GiB limit", (long long)batch, (long long)(numel * 4));
  int64_t *seeds = malloc(sizeof(int64_t) * (size_t)batch);
  for (int64_t b = 0; b < batch; b++) seeds[b] = (int64_t)(seed + (uint64_t)b);
  float *x0 = malloc(sizeof(float) * (size_t)(batch * numel));
  initial_sample(seeds, batch, numel, range[0], range[1], x0);
  int64_t *timesteps = malloc(sizeof(int64_t) * (size_t)count);
  float *step_sizes = malloc(sizeof(float) * (size_t)count);
  float *sigmas = malloc(sizeof(float) * (size_t)count);
  build_schedule(&config, count, timesteps, step_sizes, sigmas);
  float *known = NULL, *mask = NULL;
  if (inpainting) { /* one sample each, checked, then repeated for every sample of the batch */
    float *known_one = read_sample_npy("--inpaint", known_path, shape + 1, rank, numel);
    float *mask_one = read_sample_npy("--mask", mask_path, shape + 1, rank, numel);
    check_mask(mask_path, mask_one, numel);
    known = malloc(sizeof(float) * (size_t)(batch * numel));
    mask = malloc(sizeof(float) * (size_t)(batch * numel));
    for (int64_t b = 0; b < batch; b++) {
      memcpy(known + b * numel, known_one, sizeof(float) * (size_t)numel);
      memcpy(mask + b * numel, mask_one, sizeof(float) * (size_t)numel);
    }
    free(known_one), free(mask_one);
  }

  /* session */
  ort = load_onnxruntime(library);
  OrtEnv *env;
  OrtSessionOptions *options;
  OrtSession *session;
  OrtMemoryInfo *memory;
  check(ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "ncsn_sample", &env), "CreateEnv");
  check(ort->CreateSessionOptions(&options), "CreateSessionOptions");
  if (threads) check(ort->SetIntraOpNumThreads(options, (int)threads), "SetIntraOpNumThreads");
  verify_graph(&dir, sampler_file, path, sizeof path); /* listed, confined, regular, sha256; its external data too */
  check(ort->CreateSession(env, path, options, &session), path);
  const char **input_names = inpainting ? INPAINT_INPUTS : SAMPLER_INPUTS;
  size_t num_inputs = inpainting ? 8 : 5;
  check_io_names(session, path, graph_key, input_names, num_inputs);
  check(ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memory), "CreateCpuMemoryInfo");

  int64_t seed_shape[1] = {batch}, level_shape[1] = {count}, annealed = config.num_annealed_steps;
  OrtValue *inputs[8] = {NULL};
  check(ort->CreateTensorWithDataAsOrtValue(memory, x0, sizeof(float) * (size_t)(batch * numel), shape, (size_t)rank + 1,
                                            ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &inputs[0]), "sample");
  check(ort->CreateTensorWithDataAsOrtValue(memory, seeds, sizeof(int64_t) * (size_t)batch, seed_shape, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, &inputs[1]), "seed");
  check(ort->CreateTensorWithDataAsOrtValue(memory, timesteps, sizeof(int64_t) * (size_t)count, level_shape, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, &inputs[2]), "timesteps");
  check(ort->CreateTensorWithDataAsOrtValue(memory, step_sizes, sizeof(float) * (size_t)count, level_shape, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &inputs[3]), "step_sizes");
  check(ort->CreateTensorWithDataAsOrtValue(memory, &annealed, sizeof annealed, NULL, 0, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, &inputs[4]), "num_annealed_steps");
  if (inpainting) {
    check(ort->CreateTensorWithDataAsOrtValue(memory, sigmas, sizeof(float) * (size_t)count, level_shape, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &inputs[5]), "sigmas");
    check(ort->CreateTensorWithDataAsOrtValue(memory, known, sizeof(float) * (size_t)(batch * numel), shape, (size_t)rank + 1,
                                              ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &inputs[6]), "known");
    check(ort->CreateTensorWithDataAsOrtValue(memory, mask, sizeof(float) * (size_t)(batch * numel), shape, (size_t)rank + 1,
                                              ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &inputs[7]), "mask");
  }

  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  OrtValue *result = NULL;
  check(ort->Run(session, NULL, input_names, (const OrtValue *const *)inputs, num_inputs, &SAMPLER_OUTPUT, 1, &result), sampler_file);
  clock_gettime(CLOCK_MONOTONIC, &end);
  double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) * 1e-9;

  float *samples;
  check(ort->GetTensorMutableData(result, (void **)&samples), "GetTensorMutableData");
  for (int64_t i = 0; i < batch * numel; i++)
    if (!isfinite(samples[i]))
      die(1, "%s produced NaN/inf samples (sample %lld); nothing was written to %s (an extreme init_range, "
          "sigmas or step size, or a broken graph)", sampler_file, (long long)(i / numel), output);
  write_npy(output, samples, shape, rank + 1);
  if (json) {
    printf("{\"output\": \"%s\", \"shape\": [", output);
    for (int i = 0; i <= rank; i++) printf(i ? ", %lld" : "%lld", (long long)shape[i]);
    printf("], \"levels\": %lld, \"graph\": \"%s\", \"seconds\": %.6f}\n", (long long)count, graph_key, seconds);
  } else {
    printf("wrote %s: [%lld", output, (long long)batch);
    for (int i = 1; i <= rank; i++) printf(", %lld", (long long)shape[i]);
    printf("] float32, %lld levels, %s, %.3f s\n", (long long)count, sampler_file, seconds);
  }

  ort->ReleaseValue(result);
  for (size_t i = 0; i < num_inputs; i++) ort->ReleaseValue(inputs[i]);
  ort->ReleaseMemoryInfo(memory);
  ort->ReleaseSession(session);
  ort->ReleaseSessionOptions(options);
  ort->ReleaseEnv(env);
  free(seeds), free(x0), free(timesteps), free(step_sizes), free(sigmas), free(known), free(mask);
  json_free(manifest), json_free(scheduler_json);
  return 0;
}
