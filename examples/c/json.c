/* Strict JSON reader: see json.h. */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *p, *end;
  char *error;
  size_t error_size;
  int failed;
} Parser;

static void fail(Parser *ps, const char *fmt, ...) {
  if (ps->failed) return;
  ps->failed = 1;
  va_list args;
  va_start(args, fmt);
  vsnprintf(ps->error, ps->error_size, fmt, args);
  va_end(args);
}

static void skip_space(Parser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static JValue *make(JType type) {
  JValue *value = calloc(1, sizeof *value);
  if (value) value->type = type;
  return value;
}

static int hex4(Parser *ps, unsigned *out) {
  if (ps->end - ps->p < 4) return 0;
  unsigned value = 0;
  for (int i = 0; i < 4; i++) {
    char c = *ps->p++;
    value <<= 4;
    if (c >= '0' && c <= '9') value |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') value |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') value |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  *out = value;
  return 1;
}

static char *parse_string(Parser *ps) {
  /* at the opening quote */
  ps->p++;
  size_t capacity = 16, length = 0;
  char *out = malloc(capacity);
  if (!out) return NULL;
  for (;;) {
    if (ps->p >= ps->end) { fail(ps, "unterminated string"); break; }
    unsigned char c = (unsigned char)*ps->p++;
    unsigned code = c;
    if (c == '"') {
      out[length] = '\0';
      return out;
    }
    if (c < 0x20) { fail(ps, "control character in a string"); break; }
    char buffer[4];
    size_t n = 1;
    buffer[0] = (char)c;
    if (c == '\\') {
      if (ps->p >= ps->end) { fail(ps, "unterminated escape"); break; }
      char e = *ps->p++;
      const char *simple = strchr("\"\\/bfnrt", e);
      if (e && simple) {
        buffer[0] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
      } else if (e == 'u') {
        if (!hex4(ps, &code)) { fail(ps, "bad \\u escape"); break; }
        if (code >= 0xD800 && code <= 0xDBFF) {
          unsigned low;
          if (ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
            ps->p += 2;
            if (!hex4(ps, &low) || low < 0xDC00 || low > 0xDFFF) { fail(ps, "bad surrogate pair"); break; }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else {
            code = 0xFFFD; /* a lone surrogate (Python keeps it; it never matches a key we read) */
          }
        } else if (code >= 0xDC00 && code <= 0xDFFF) {
          code = 0xFFFD;
        }
        if (code == 0) { fail(ps, "\\u0000 in a string"); break; }
        if (code < 0x80) buffer[0] = (char)code;
        else if (code < 0x800) buffer[0] = (char)(0xC0 | (code >> 6)), buffer[1] = (char)(0x80 | (code & 0x3F)), n = 2;
        else if (code < 0x10000) buffer[0] = (char)(0xE0 | (code >> 12)), buffer[1] = (char)(0x80 | ((code >> 6) & 0x3F)), buffer[2] = (char)(0x80 | (code & 0x3F)), n = 3;
        else buffer[0] = (char)(0xF0 | (code >> 18)), buffer[1] = (char)(0x80 | ((code >> 12) & 0x3F)), buffer[2] = (char)(0x80 | ((code >> 6) & 0x3F)), buffer[3] = (char)(0x80 | (code & 0x3F)), n = 4;
      } else {
        fail(ps, "bad escape \\%c", e);
        break;
      }
    }
    if (length + n + 1 > capacity) {
      capacity = (length + n + 1) * 2;
      char *grown = realloc(out, capacity);
      if (!grown) { fail(ps, "out of memory"); break; }
      out = grown;
    }
    memcpy(out + length, buffer, n);
    length += n;
  }
  free(out);
  return NULL;
}

static JValue *parse_value(Parser *ps, int depth);

static JValue *parse_number(Parser *ps) {
  const char *start = ps->p;
  int integer = 1;
  if (ps->p < ps->end && *ps->p == '-') ps->p++;
  if (ps->p < ps->end && *ps->p == '0') ps->p++;
  else if (ps->p < ps->end && *ps->p >= '1' && *ps->p <= '9') while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
  else { fail(ps, "bad number"); return NULL; }
  if (ps->p < ps->end && *ps->p == '.') {
    integer = 0;
    ps->p++;
    if (!(ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')) { fail(ps, "bad number"); return NULL; }
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
  }
  if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
    integer = 0;
    ps->p++;
    if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
    if (!(ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')) { fail(ps, "bad number"); return NULL; }
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
  }
  size_t length = (size_t)(ps->p - start);
  char *text = malloc(length + 1);
  JValue *value = make(J_NUMBER);
  if (!text || !value) { free(text); free(value); fail(ps, "out of memory"); return NULL; }
  memcpy(text, start, length);
  text[length] = '\0';
  value->number = strtod(text, NULL);
  value->is_integer = integer;
  if (integer) {
    /* exact when at most 18 digits, or 19 digits within long long's range */
    size_t digits = length - (text[0] == '-');
    if (digits <= 18 || (digits == 19 && strcmp(text + (text[0] == '-'), "9223372036854775807") <= 0)) {
      value->integer = strtoll(text, NULL, 10);
      value->integer_exact = 1;
    }
  }
  free(text);
  return value;
}

static int append(JValue *container, JValue *item, char *key) {
  JValue **items = realloc(container->items, (container->count + 1) * sizeof *items);
  if (!items) return 0;
  container->items = items;
  if (container->type == J_OBJECT) {
    char **keys = realloc(container->keys, (container->count + 1) * sizeof *keys);
    if (!keys) return 0;
    container->keys = keys;
    keys[container->count] = key;
  }
  items[container->count++] = item;
  return 1;
}

static JValue *parse_container(Parser *ps, int depth, int object) {
  if (depth > JSON_MAX_DEPTH) { fail(ps, "nested deeper than %d levels", JSON_MAX_DEPTH); return NULL; }
  ps->p++;
  JValue *value = make(object ? J_OBJECT : J_ARRAY);
  if (!value) { fail(ps, "out of memory"); return NULL; }
  skip_space(ps);
  if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
    ps->p++;
    return value;
  }
  for (;;) {
    char *key = NULL;
    skip_space(ps);
    if (object) {
      if (!(ps->p < ps->end && *ps->p == '"')) { fail(ps, "expected a string key"); break; }
      key = parse_string(ps);
      if (!key) break;
      skip_space(ps);
      if (!(ps->p < ps->end && *ps->p == ':')) { free(key); fail(ps, "expected ':'"); break; }
      ps->p++;
    }
    JValue *item = parse_value(ps, depth + 1);
    if (!item || !append(value, item, key)) { free(key); json_free(item); fail(ps, "bad value"); break; }
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
    if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) { ps->p++; return value; }
    fail(ps, "expected ',' or '%c'", object ? '}' : ']');
    break;
  }
  json_free(value);
  return NULL;
}

static JValue *parse_value(Parser *ps, int depth) {
  skip_space(ps);
  if (ps->p >= ps->end) { fail(ps, "unexpected end"); return NULL; }
  char c = *ps->p;
  if (c == '{' || c == '[') return parse_container(ps, depth, c == '{');
  if (c == '"') {
    char *text = parse_string(ps);
    if (!text) return NULL;
    JValue *value = make(J_STRING);
    if (!value) { free(text); fail(ps, "out of memory"); return NULL; }
    value->string = text;
    return value;
  }
  if (c == '-' || (c >= '0' && c <= '9')) return parse_number(ps);
  static const struct { const char *word; JType type; int boolean; } words[] = {{"true", J_BOOL, 1}, {"false", J_BOOL, 0}, {"null", J_NULL, 0}};
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(words[i].word);
    if ((size_t)(ps->end - ps->p) >= n && !memcmp(ps->p, words[i].word, n)) {
      ps->p += n;
      JValue *value = make(words[i].type);
      if (!value) { fail(ps, "out of memory"); return NULL; }
      value->boolean = words[i].boolean;
      return value;
    }
  }
  fail(ps, "unexpected character '%c' (NaN, Infinity and comments are not JSON)", c);
  return NULL;
}

JValue *json_parse(const char *text, size_t length, char *error, size_t error_size) {
  Parser ps = {text, text + length, error, error_size, 0};
  JValue *value = parse_value(&ps, 1);
  skip_space(&ps);
  if (value && ps.p != ps.end) fail(&ps, "extra data after the document");
  if (ps.failed) {
    json_free(value);
    return NULL;
  }
  return value;
}

void json_free(JValue *value) {
  if (!value) return;
  for (size_t i = 0; i < value->count; i++) {
    json_free(value->items[i]);
    if (value->keys) free(value->keys[i]);
  }
  free(value->items);
  free(value->keys);
  free(value->string);
  free(value);
}

const JValue *json_get(const JValue *object, const char *key) {
  if (!object || object->type != J_OBJECT) return NULL;
  for (size_t i = object->count; i-- > 0;)
    if (!strcmp(object->keys[i], key)) return object->items[i];
  return NULL;
}
