// JSON.parse that keeps "19398.0" apart from "19398" (as Python's json does: a float is not an int), for the
// manifest's integer checks. JSON.parse maps both to the same Number, and its source-text access (the reviver's
// context.source) is not in Node 20; so number tokens written with a fraction or exponent whose value is an integer
// are parsed as FloatNumber objects, which no integer check accepts, and integers beyond 2**53 (which a Number cannot
// hold exactly: 2**53 + 1 would read as 2**53) as BigInt, so a range check sees their exact value. plainNumbers()
// turns both back into Numbers.

/** A JSON number written as a float (a fraction or an exponent) whose value is an integer, e.g. 2.0 or 1e9. */
export class FloatNumber {
  /** @param {number} value */
  constructor(value) {
    this.value = value;
  }

  valueOf() {
    return this.value;
  }
}

const MARK = '__ncsn_json_float__';
const BIG = '__ncsn_json_bigint__';
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/**
 * Parse JSON text; integral numbers written as floats become FloatNumber, integers beyond 2**53 BigInt. Throws
 * SyntaxError as JSON.parse.
 * @param {string} text
 * @returns {any}
 */
export function parseJsonKeepingFloats(text) {
  let out = '';
  let last = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) { // a string: skip to its closing quote
      for (i++; i < text.length && text.charCodeAt(i) !== 34; i++) if (text.charCodeAt(i) === 92) i++;
    } else if (c === 45 || (c >= 48 && c <= 57)) {
      NUMBER.lastIndex = i;
      const match = NUMBER.exec(text);
      if (!match) continue; // malformed: JSON.parse below reports it
      const token = match[0];
      if (/[.eE]/.test(token) && Number.isInteger(Number(token))) {
        out += `${text.slice(last, i)}{"${MARK}":${token}}`;
        last = i + token.length;
      } else if (!/[.eE]/.test(token) && !Number.isSafeInteger(Number(token))) {
        out += `${text.slice(last, i)}{"${BIG}":"${token}"}`;
        last = i + token.length;
      }
      i += token.length - 1;
    }
  }
  const rewritten = last ? out + text.slice(last) : text;
  return JSON.parse(rewritten, (key, value) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || Object.keys(value).length !== 1) return value;
    if (typeof value[MARK] === 'number') return new FloatNumber(value[MARK]);
    if (typeof value[BIG] === 'string' && /^-?[0-9]+$/.test(value[BIG])) return BigInt(value[BIG]);
    return value;
  });
}

/**
 * Replace every FloatNumber in a parsed value by its number (in place); returns the value.
 * @param {any} value
 * @returns {any}
 */
export function plainNumbers(value) {
  if (value instanceof FloatNumber) return value.value;
  if (typeof value === 'bigint') return Number(value);
  if (value !== null && typeof value === 'object') {
    for (const key of Object.keys(value)) value[key] = plainNumbers(value[key]);
  }
  return value;
}

/**
 * JSON.stringify for messages about a value parsed here (BigInt and FloatNumber shown as the number they hold).
 * @param {any} value
 * @returns {string}
 */
export function show(value) {
  try {
    return JSON.stringify(value, (key, item) => (typeof item === 'bigint' ? Number(item) : item instanceof FloatNumber ? item.value : item))
      ?? String(value);
  } catch {
    return String(value);
  }
}
