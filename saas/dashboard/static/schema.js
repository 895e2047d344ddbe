// Checks a by-value job input against its descriptor's `data_schema` as the user types. A subset of JSON Schema
// (type, enum, const, required, properties, additionalProperties: false, items, min/max, lengths, pattern) — the
// node validates in full at submission, so this only spares round trips; it never lets anything through.

const TYPES = {
  object: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
  array: Array.isArray,
  string: (v) => typeof v === "string",
  number: (v) => typeof v === "number",
  integer: Number.isInteger,
  boolean: (v) => typeof v === "boolean",
  null: (v) => v === null,
};

export function validate(value, schema, path = "value") {
  if (!schema || typeof schema !== "object") return [];
  const errors = [];
  const types = schema.type === undefined ? [] : [].concat(schema.type);
  if (types.length && !types.some((t) => TYPES[t] && TYPES[t](value))) {
    return [`${path}: must be ${types.join(" or ")}`];
  }
  if (schema.enum && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    errors.push(`${path}: must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`);
  }
  if ("const" in schema && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    errors.push(`${path}: must be ${JSON.stringify(schema.const)}`);
  }
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) errors.push(`${path}: must be ≥ ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) errors.push(`${path}: must be ≤ ${schema.maximum}`);
  }
  if (typeof value === "string") {
    if (schema.minLength !== undefined && value.length < schema.minLength) errors.push(`${path}: too short`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength) errors.push(`${path}: too long`);
    if (schema.pattern && !new RegExp(schema.pattern, "u").test(value)) errors.push(`${path}: does not match`);
  }
  if (TYPES.object(value)) {
    for (const name of schema.required || []) {
      if (!(name in value)) errors.push(`${path}.${name}: is required`);
    }
    const properties = schema.properties || {};
    for (const [name, item] of Object.entries(value)) {
      if (name in properties) errors.push(...validate(item, properties[name], `${path}.${name}`));
      else if (schema.additionalProperties === false) errors.push(`${path}.${name}: is not allowed`);
    }
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) errors.push(`${path}: too few items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) errors.push(`${path}: too many items`);
    if (schema.items && typeof schema.items === "object") {
      value.forEach((item, i) => errors.push(...validate(item, schema.items, `${path}[${i}]`)));
    }
  }
  return errors;
}

// The value of a JSON text and its problems: [value, errors].
export function check(text, schema) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return [undefined, [`not JSON: ${e.message}`]];
  }
  return [value, validate(value, schema)];
}
