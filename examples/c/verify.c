/* See verify.h. SHA-256 after FIPS 180-4. */
#define _XOPEN_SOURCE 700
#include "verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(uint32_t h[8], const unsigned char *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = k + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

int sha256_fd(int fd, char hex[65], uint64_t *size) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  static unsigned char buffer[1 << 16];
  unsigned char tail[128];
  size_t pending = 0;
  uint64_t total = 0;
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0) return 0;
    if (n == 0) break;
    total += (uint64_t)n;
    size_t pos = 0;
    if (pending) {
      while (pending < 64 && pos < (size_t)n) tail[pending++] = buffer[pos++];
      if (pending == 64) block(h, tail), pending = 0;
    }
    for (; pos + 64 <= (size_t)n; pos += 64) block(h, buffer + pos);
    while (pos < (size_t)n) tail[pending++] = buffer[pos++];
  }
  tail[pending++] = 0x80;
  if (pending > 56) {
    while (pending < 64) tail[pending++] = 0;
    block(h, tail), pending = 0;
  }
  while (pending < 56) tail[pending++] = 0;
  uint64_t bits = total * 8;
  for (int i = 7; i >= 0; i--) tail[pending++] = (unsigned char)(bits >> (8 * i));
  block(h, tail);
  for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", h[i]);
  *size = total;
  return 1;
}

/* ---- protobuf walk (field numbers from onnx.proto3, as external_data.py) -------------------------------- */
typedef struct {
  const unsigned char *data;
  char **locations;
  int *count;
  const char *error;
} Walk;

static int varint(Walk *w, size_t *pos, size_t end, uint64_t *out) {
  uint64_t value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= end) return w->error = "truncated varint", 0;
    unsigned char byte = w->data[(*pos)++];
    value |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return *out = value, 1;
  }
  return w->error = "overlong varint", 0;
}

/* the next field of [*pos, end): number, wire type, and for wire 2 the value's [start, stop); for wire 0 its value */
static int next_field(Walk *w, size_t *pos, size_t end, uint64_t *number, int *wire, size_t *start, size_t *stop, uint64_t *value) {
  uint64_t key;
  if (!varint(w, pos, end, &key)) return 0;
  *number = key >> 3, *wire = (int)(key & 7);
  if (*wire == 0) return varint(w, pos, end, value);
  if (*wire == 1 || *wire == 5) {
    size_t skip = *wire == 1 ? 8 : 4;
    if (end - *pos < skip) return w->error = "a fixed-size field runs past the end of its message", 0;
    *pos += skip;
    return 1;
  }
  if (*wire == 2) {
    uint64_t length;
    if (!varint(w, pos, end, &length)) return 0;
    if (length > end - *pos) return w->error = "a length-delimited field runs past the end of its message", 0;
    *start = *pos, *stop = *pos + (size_t)length, *pos = *stop;
    return 1;
  }
  return w->error = "unsupported protobuf wire type", 0;
}

static int add_location(Walk *w, const unsigned char *text, size_t length) {
  if (length > 4096) return w->error = "an external_data location longer than 4096 bytes", 0;
  for (int i = 0; i < *w->count; i++)
    if (strlen(w->locations[i]) == length && !memcmp(w->locations[i], text, length)) return 1;
  if (*w->count == MAX_LOCATIONS) return w->error = "more external-data files than this program reads", 0;
  char *copy = malloc(length + 1);
  if (!copy) return w->error = "out of memory", 0;
  memcpy(copy, text, length);
  copy[length] = '\0';
  if (strlen(copy) != length) return free(copy), w->error = "a NUL byte in an external_data location", 0;
  w->locations[(*w->count)++] = copy;
  return 1;
}

/* Each helper walks one message [s, e); returns 0 with w->error set on a malformed one. */
static int tensor(Walk *w, size_t s, size_t e) {
  size_t pos = s, a, b;
  uint64_t number, value;
  int wire, external = 0, found = 0;
  while (pos < e) {
    if (!next_field(w, &pos, e, &number, &wire, &a, &b, &value)) return 0;
    if (number == 14 && wire == 0) external = value == 1; /* data_location EXTERNAL */
    else if (number == 13 && wire == 2) {               /* external_data: {key = 1, value = 2} */
      size_t p = a, c, d, ks = 0, ke = 0, vs = 0, ve = 0;
      uint64_t n, v;
      int wt, has_key = 0, has_value = 0;
      while (p < b) {
        if (!next_field(w, &p, b, &n, &wt, &c, &d, &v)) return 0;
        if (wt == 2 && n == 1) ks = c, ke = d, has_key = 1;
        if (wt == 2 && n == 2) vs = c, ve = d, has_value = 1;
      }
      if (has_key && ke - ks == 8 && !memcmp(w->data + ks, "location", 8)) {
        if (!add_location(w, has_value ? w->data + vs : (const unsigned char *)"", has_value ? ve - vs : 0)) return 0;
        found = 1;
      }
    }
  }
  if (external && !found) return w->error = "a tensor has data_location EXTERNAL but no location", 0;
  return 1;
}

static int sparse(Walk *w, size_t s, size_t e) {
  size_t pos = s, a, b;
  uint64_t number, value;
  int wire;
  while (pos < e) {
    if (!next_field(w, &pos, e, &number, &wire, &a, &b, &value)) return 0;
    if ((number == 1 || number == 2) && wire == 2 && !tensor(w, a, b)) return 0;
  }
  return 1;
}

static int graph(Walk *w, size_t s, size_t e, int depth);

static int node(Walk *w, size_t s, size_t e, int depth) {
  size_t pos = s, a, b;
  uint64_t number, value;
  int wire;
  while (pos < e) {
    if (!next_field(w, &pos, e, &number, &wire, &a, &b, &value)) return 0;
    if (number != 5 || wire != 2) continue; /* NodeProto.attribute */
    size_t p = a, c, d;
    uint64_t n, v;
    int wt;
    while (p < b) {
      if (!next_field(w, &p, b, &n, &wt, &c, &d, &v)) return 0;
      if (wt != 2) continue;
      if ((n == 5 || n == 10) && !tensor(w, c, d)) return 0;       /* t, tensors */
      if ((n == 22 || n == 23) && !sparse(w, c, d)) return 0;      /* sparse_tensor(s) */
      if ((n == 6 || n == 11) && !graph(w, c, d, depth + 1)) return 0; /* g, graphs */
    }
  }
  return 1;
}

static int graph(Walk *w, size_t s, size_t e, int depth) {
  if (depth > ONNX_MAX_DEPTH) return w->error = "subgraphs nest deeper than 64 levels", 0;
  size_t pos = s, a, b;
  uint64_t number, value;
  int wire;
  while (pos < e) {
    if (!next_field(w, &pos, e, &number, &wire, &a, &b, &value)) return 0;
    if (wire != 2) continue;
    if (number == 5 && !tensor(w, a, b)) return 0;       /* initializer */
    if (number == 15 && !sparse(w, a, b)) return 0;      /* sparse_initializer */
    if (number == 1 && !node(w, a, b, depth)) return 0;  /* node */
  }
  return 1;
}

const char *onnx_external_locations(const unsigned char *model, size_t length, char *locations[MAX_LOCATIONS], int *count) {
  Walk w = {model, locations, count, NULL};
  *count = 0;
  size_t pos = 0, a, b;
  uint64_t number, value;
  int wire;
  while (pos < length) {
    if (!next_field(&w, &pos, length, &number, &wire, &a, &b, &value)) return w.error;
    if (wire != 2) continue;
    if (number == 7 && !graph(&w, a, b, 1)) return w.error; /* ModelProto.graph */
    if (number == 25) {                                      /* ModelProto.functions: FunctionProto.node = 7 */
      size_t p = a, c, d;
      uint64_t n, v;
      int wt;
      while (p < b) {
        if (!next_field(&w, &p, b, &n, &wt, &c, &d, &v)) return w.error;
        if (n == 7 && wt == 2 && !node(&w, c, d, 1)) return w.error;
      }
    }
  }
  return NULL;
}
