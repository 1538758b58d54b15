/* A strict JSON reader (RFC 8259: no NaN / Infinity, no trailing commas, no comments) for manifest.json and
 * scheduler_config.json: a tree of JValue, nesting at most JSON_MAX_DEPTH levels. */
#ifndef NCSN_JSON_H
#define NCSN_JSON_H

#include <stddef.h>

#define JSON_MAX_DEPTH 64

typedef enum { J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } JType;

typedef struct JValue {
  JType type;
  int boolean;
  double number;
  int is_integer;     /* written without fraction or exponent (as Python's json reads an int) */
  int integer_exact;  /* is_integer and exactly representable in [-2^63, 2^63) */
  long long integer;  /* the value when integer_exact */
  char *string;       /* J_STRING: UTF-8, NUL-terminated (a \u0000 inside refuses the document) */
  size_t count;       /* J_ARRAY / J_OBJECT: items */
  struct JValue **items;
  char **keys;        /* J_OBJECT: the key of each item (a repeated key: the last one wins, as Python's json) */
} JValue;

/* Parse text[0, length); NULL with a message in `error` (size `error_size`) on a malformed document. */
JValue *json_parse(const char *text, size_t length, char *error, size_t error_size);
void json_free(JValue *value);
/* The member `key` of an object, or NULL (also when `object` is not an object). */
const JValue *json_get(const JValue *object, const char *key);

#endif
