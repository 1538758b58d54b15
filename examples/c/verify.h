/* Checks of files an export directory lists: a streamed SHA-256, and the external-data locations an ONNX model
 * names (the protobuf walk of runtime/ncsn_runtime/external_data.py, on the model's bytes). */
#ifndef NCSN_VERIFY_H
#define NCSN_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#define ONNX_MAX_DEPTH 64
#define MAX_LOCATIONS 64

/* Lowercase hex SHA-256 (65 bytes with the NUL) of everything readable from `fd`; its byte count in *size.
   Returns 0 on a read error. */
int sha256_fd(int fd, char hex[65], uint64_t *size);

/* The distinct external-data `location`s of model[0, length) into locations (each malloc'ed), their count in
   *count. Returns NULL on success, else a message (a malformed protobuf, too deep, too many locations). */
const char *onnx_external_locations(const unsigned char *model, size_t length, char *locations[MAX_LOCATIONS], int *count);

#endif
