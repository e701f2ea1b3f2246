//! atk-cli's integration tests, in one binary: one link and one copy of the
//! dependencies instead of one per file (each file is a module of its own).

mod config_example;
mod docs;
mod function_step;
mod iterate;
mod mock_reply;
mod run;
