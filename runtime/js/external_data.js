// External-data locations named inside an ONNX model, read from the protobuf wire format (no onnx package).
// The same walk as runtime/ncsn_runtime/external_data.py: ModelProto.graph and .functions; in a graph its
// initializers, sparse initializers and every node attribute holding a tensor or a subgraph (Loop bodies),
// recursively. The host reads (and sha256-checks) exactly these files and hands them to onnxruntime as
// `externalData`, so onnxruntime never reads a file the manifest does not list.

export const MAX_DEPTH = 64;

/** A model file that is not a well-formed ONNX protobuf. */
export class ExternalDataError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ExternalDataError';
  }
}

function varint(bytes, pos, end) {
  let result = 0;
  let scale = 1;
  for (let shift = 0; shift < 64; shift += 7) {
    if (pos >= end) throw new ExternalDataError('truncated varint');
    const byte = bytes[pos++];
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
      fields(bytes, s, e, (n, w, a, b) => { if (w === 2) entry[n] = decoder.decode(bytes.subarray(a, b)); });
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
 * @param {Uint8Array} bytes the model file
 * @returns {string[]}
 */
export function externalDataLocations(bytes) {
  const found = [];
  fields(bytes, 0, bytes.byteLength, (number, wire, s, e) => {
    if (wire !== 2) return;
    if (number === 7) graph(bytes, s, e, found, 1); // ModelProto.graph
    else if (number === 25) { // ModelProto.functions: FunctionProto.node = 7
      fields(bytes, s, e, (n, w, a, b) => { if (n === 7 && w === 2) node(bytes, a, b, found, 1); });
    }
  });
  return [...new Set(found)];
}
