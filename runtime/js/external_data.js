// External-data locations named inside an ONNX model, read from the protobuf wire format (no onnx package).
// The same walk as runtime/ncsn_runtime/external_data.py: ModelProto.graph and .functions; in a graph its
// initializers, sparse initializers and every node attribute holding a tensor or a subgraph (Loop bodies),
// recursively. The host reads (and sha256-checks) exactly these files and hands them to onnxruntime as
// `externalData`, so onnxruntime never reads a file the manifest does not list.
// The walk reads through a ByteReader ({length, byte(pos), slice(start, end)}): a Uint8Array in memory, or (Node)
// a window over a file (node.js fileReader), so a graph with GBs of embedded weights is walked without reading them.

/**
 * @typedef {object} ByteReader
 * @property {number} length
 * @property {(pos: number) => number} byte
 * @property {(start: number, end: number) => Uint8Array} slice
 */

export const MAX_DEPTH = 64;
/** Longest external_data key / value read (a location is a relative path: PATH_MAX is 4096). */
export const MAX_ENTRY_BYTES = 4096;

/** A model file that is not a well-formed ONNX protobuf. */
export class ExternalDataError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ExternalDataError';
  }
}

/**
 * @param {Uint8Array | ByteReader} bytes
 * @returns {ByteReader}
 */
export function asReader(bytes) {
  if (typeof bytes?.byte === 'function') return /** @type {ByteReader} */ (bytes);
  const array = /** @type {Uint8Array} */ (bytes);
  return { length: array.byteLength, byte: (pos) => array[pos], slice: (start, end) => array.subarray(start, end) };
}

function varint(bytes, pos, end) {
  let result = 0;
  let scale = 1;
  for (let shift = 0; shift < 64; shift += 7) {
    if (pos >= end) throw new ExternalDataError('truncated varint');
    const byte = bytes.byte(pos++);
    result += (byte & 0x7f) * scale; // exact below 2^53: every length and enum we read is far smaller
    if (!(byte & 0x80)) return [result, pos];
    scale *= 128;
  }
  throw new ExternalDataError('overlong varint');
}

/** Calls visit(number, wire, start, end, value) for each field of the message bytes[start, end). */
function fields(bytes, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = varint(bytes, pos, end);
    const number = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      let value;
      [value, pos] = varint(bytes, pos, end);
      visit(number, wire, 0, 0, value);
    } else if (wire === 1 || wire === 5) {
      pos += wire === 1 ? 8 : 4;
      if (pos > end) throw new ExternalDataError('a fixed-size field runs past the end of its message');
    } else if (wire === 2) {
      let length;
      [length, pos] = varint(bytes, pos, end);
      if (pos + length > end) throw new ExternalDataError('a length-delimited field runs past the end of its message');
      visit(number, wire, pos, pos + length, 0);
      pos += length;
    } else {
      throw new ExternalDataError(`unsupported protobuf wire type ${wire}`);
    }
  }
}

const decoder = new TextDecoder();

function tensor(bytes, start, end, found) {
  let external = false;
  const locations = [];
  fields(bytes, start, end, (number, wire, s, e, value) => {
    if (number === 14 && wire === 0) external = value === 1; // data_location EXTERNAL
    else if (number === 13 && wire === 2) { // external_data: StringStringEntryProto {key = 1, value = 2}
      const entry = {};
      fields(bytes, s, e, (n, w, a, b) => {
        if (w !== 2) return;
        if (b - a > MAX_ENTRY_BYTES) throw new ExternalDataError(`an external_data entry is ${b - a} bytes (at most ${MAX_ENTRY_BYTES})`);
        entry[n] = decoder.decode(bytes.slice(a, b));
      });
      if (entry[1] === 'location') locations.push(entry[2] ?? '');
    }
  });
  if (external && !locations.length) throw new ExternalDataError('a tensor has data_location EXTERNAL but no `location`');
  found.push(...locations);
}

function sparse(bytes, start, end, found) {
  fields(bytes, start, end, (number, wire, s, e) => { if ((number === 1 || number === 2) && wire === 2) tensor(bytes, s, e, found); });
}

function node(bytes, start, end, found, depth) {
  fields(bytes, start, end, (number, wire, s, e) => {
    if (number !== 5 || wire !== 2) return; // NodeProto.attribute
    fields(bytes, s, e, (n, w, a, b) => {
      if (w !== 2) return;
      if (n === 5 || n === 10) tensor(bytes, a, b, found); // t, tensors
      else if (n === 22 || n === 23) sparse(bytes, a, b, found); // sparse_tensor(s)
      else if (n === 6 || n === 11) graph(bytes, a, b, found, depth + 1); // g, graphs
    });
  });
}

function graph(bytes, start, end, found, depth) {
  if (depth > MAX_DEPTH) throw new ExternalDataError(`subgraphs nest deeper than ${MAX_DEPTH} levels`);
  fields(bytes, start, end, (number, wire, s, e) => {
    if (wire !== 2) return;
    if (number === 5) tensor(bytes, s, e, found); // initializer
    else if (number === 15) sparse(bytes, s, e, found); // sparse_initializer
    else if (number === 1) node(bytes, s, e, found, depth);
  });
}

/**
 * The distinct `location` strings of every external tensor of an ONNX model, in order.
 * @param {Uint8Array | ByteReader} model the model file (its bytes, or a reader over it)
 * @returns {string[]}
 */
export function externalDataLocations(model) {
  const bytes = asReader(model);
  const found = [];
  fields(bytes, 0, bytes.length, (number, wire, s, e) => {
    if (wire !== 2) return;
    if (number === 7) graph(bytes, s, e, found, 1); // ModelProto.graph
    else if (number === 25) { // ModelProto.functions: FunctionProto.node = 7
      fields(bytes, s, e, (n, w, a, b) => { if (n === 7 && w === 2) node(bytes, a, b, found, 1); });
    }
  });
  return [...new Set(found)];
}

function encodeVarint(value) {
  const out = [];
  let rest = value;
  while (rest >= 0x80) {
    out.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Uint8Array.from(out);
}

function concat(chunks) {
  const out = new Uint8Array(chunks.reduce((total, chunk) => total + chunk.byteLength, 0));
  let pos = 0;
  for (const chunk of chunks) {
    out.set(chunk, pos);
    pos += chunk.byteLength;
  }
  return out;
}

/** Field `number` (length-delimited) holding `content`, encoded. */
function field(number, content) {
  return concat([encodeVarint(number * 8 + 2), encodeVarint(content.byteLength), content]);
}

/** Every field of bytes[start, end) as {number, wire, s, e (value), raw (key + value)}. */
function fieldList(bytes, start, end) {
  const out = [];
  let pos = start;
  while (pos < end) {
    const begin = pos;
    let key;
    [key, pos] = varint(bytes, pos, end);
    const number = Math.floor(key / 8);
    const wire = key % 8;
    let s = pos;
    let e = pos;
    if (wire === 0) [, pos] = varint(bytes, pos, end);
    else if (wire === 1 || wire === 5) pos += wire === 1 ? 8 : 4;
    else if (wire === 2) {
      let length;
      [length, s] = varint(bytes, pos, end);
      e = s + length;
      pos = e;
    } else throw new ExternalDataError(`unsupported protobuf wire type ${wire}`);
    if (pos > end) throw new ExternalDataError('a field runs past the end of its message');
    out.push({ number, wire, s, e, raw: bytes.slice(begin, pos) });
  }
  return out;
}

function isExternal(bytes, s, e) {
  const found = [];
  tensor(bytes, s, e, found);
  return found.length > 0;
}

/** The graph bytes[start, end) re-encoded without its subgraphs' external initializers (collected in `moved`). */
function stripSubgraphs(bytes, start, end, moved, depth, isMain) {
  if (depth > MAX_DEPTH) throw new ExternalDataError(`subgraphs nest deeper than ${MAX_DEPTH} levels`);
  const chunks = [];
  for (const item of fieldList(bytes, start, end)) {
    if (!isMain && item.number === 5 && item.wire === 2 && isExternal(bytes, item.s, item.e)) {
      moved.push(item.raw); // GraphProto.initializer: now an outer-scope value of the body
    } else if (item.number === 1 && item.wire === 2) { // NodeProto: its attributes may hold subgraphs
      const attributes = fieldList(bytes, item.s, item.e).map((attribute) => {
        if (attribute.number !== 5 || attribute.wire !== 2) return attribute.raw;
        const parts = fieldList(bytes, attribute.s, attribute.e).map((part) => (
          (part.number === 6 || part.number === 11) && part.wire === 2
            ? field(part.number, stripSubgraphs(bytes, part.s, part.e, moved, depth + 1, false)) : part.raw));
        return field(5, concat(parts));
      });
      chunks.push(field(1, concat(attributes)));
    } else {
      chunks.push(item.raw);
    }
  }
  if (isMain) chunks.push(...moved);
  return concat(chunks);
}

/**
 * The model with every external-data initializer of a subgraph (a Loop body) moved to the main graph, where the
 * body reads it as an outer-scope value. onnxruntime-web (and onnxruntime-node from bytes) cannot load the
 * external data of a subgraph initializer ("external data path could not be canonicalized"); a main-graph one it
 * can. The model is returned unchanged when no subgraph holds external data.
 * @param {Uint8Array} bytes
 * @returns {Uint8Array}
 */
export function hoistExternalInitializers(bytes) {
  const reader = asReader(bytes);
  const items = fieldList(reader, 0, reader.length);
  const moved = [];
  const chunks = items.map((item) => (item.number === 7 && item.wire === 2
    ? field(7, stripSubgraphs(reader, item.s, item.e, moved, 1, true)) : item.raw));
  return moved.length ? concat(chunks) : bytes;
}
