//! End-to-end tests: the `example-pipeline` binary against a loopback test server.
//!
//! The tests land once `pipelines/example` exposes `pub fn main() -> ExitCode`; the harness
//! they use is the `atk_e2e` library.
