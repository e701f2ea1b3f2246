//! Config loading: sections, flattening, placeholders, overrides, typed deserialisation.
