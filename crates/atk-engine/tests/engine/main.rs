//! The engine's integration tests, in one binary: one link and one copy of the
//! dependencies instead of one per file (each file is a module of its own).

mod anthropic;
mod batch;
mod cancel;
mod common;
mod http;
mod plain_json;
mod real_servers;
mod schema;
mod schema_warnings;
mod secrets;
