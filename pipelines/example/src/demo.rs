//! The offline demo's stand-in reply (the mock engine's answer for `write_poem`): shaped like a
//! real one, so the output processor and validator run for real. Not pipeline logic.

/// The mock reply template: `{lines}` is the chunk's first lines.
pub(crate) const POEM: &str = "Here is my poem.\n<poem>\n{lines}\n</poem>";
