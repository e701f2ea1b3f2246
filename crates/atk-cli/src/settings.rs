//! The runner's view of the common config: the library option structs it builds engines,
//! chunking and retries from, derived from [`CommonConfig`]. Every other setting is the
//! config's own field, read through [`Deref`]: nothing here copies a key or checks a value
//! (the config's rules did, once).

use std::ops::Deref;

use atk_chunk::{ChunkConfig, Subset};
use atk_engine::{Dialect, MockConfig, Mode, RetryConfig, Secret, Timeouts};

use crate::config::{CommonConfig, EnginesUsed};

/// One engine's settings.
#[derive(Debug, Clone)]
pub(crate) struct EngineSettings {
    pub label: String,
    pub mode: Mode,
    pub model: String,
    pub base_url: String,
    pub api_key: Secret,
    pub price_in: f64,
    pub price_out: f64,
    /// Price of cache reads (`None`: the input price).
    pub price_cached: Option<f64>,
    pub dialect: Dialect,
    pub prompt_cache: bool,
    pub require_finish_reason: bool,
    /// Ask the server to enforce output schemas.
    pub structured_output: bool,
    /// Several endpoints, when the config lists them.
    pub endpoints: Vec<atk_engine::Endpoint>,
    /// False when the pipeline declares it does not call this engine.
    pub used: bool,
}

/// The common config with what the runner derives from it.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    common: CommonConfig,
    /// `[small, large]`.
    pub engines: [EngineSettings; 2],
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    pub mock: MockConfig,
    /// Most requests in flight: `concurrency_limit`, raised to `batch_size` when an engine the
    /// pipeline calls is in batch mode (a whole batch must be able to gather).
    pub in_flight: usize,
    chunk: ChunkConfig,
}

impl Deref for Settings {
    type Target = CommonConfig;

    fn deref(&self) -> &CommonConfig {
        &self.common
    }
}

impl Settings {
    /// The runner's view of a loaded config; `used` marks the engines the pipeline calls
    /// (no step of the chain calls it: `Step::engines`).
    pub(crate) fn new(c: &CommonConfig, used: EnginesUsed) -> Self {
        let mut chunk = ChunkConfig::new(c.chunk_size).with_tokenizer(c.tokenizer);
        chunk.cache_dir = Some(
            c.chunking_output_dir
                .clone()
                .unwrap_or_else(|| c.output_dir.join("chunk_cache")),
        );
        if c.use_subset {
            chunk = chunk.with_subset(Subset::new(c.subset_size, c.seed));
        }
        let engine = |label: &str,
                      mode,
                      model: &str,
                      base_url: &str,
                      key: &Secret,
                      (price_in, price_out, price_cached),
                      (dialect, prompt_cache),
                      (finish, structured_output),
                      endpoints: &Vec<atk_engine::Endpoint>,
                      used| EngineSettings {
            label: label.to_string(),
            mode,
            model: model.to_string(),
            base_url: base_url.to_string(),
            api_key: key.clone(),
            price_in,
            price_out,
            price_cached,
            dialect,
            prompt_cache,
            require_finish_reason: finish,
            structured_output,
            endpoints: endpoints.clone(),
            used,
        };
        Self {
            engines: [
                engine(
                    "small",
                    c.small_mode,
                    &c.small_model,
                    &c.small_base_url,
                    &c.small_api_key,
                    (
                        c.cost_per_million_small_input,
                        c.cost_per_million_small_output,
                        c.cost_per_million_small_cached_input,
                    ),
                    (c.small_api, c.small_prompt_cache),
                    (c.small_require_finish_reason, c.small_structured_output),
                    &c.small_endpoints,
                    used.small,
                ),
                engine(
                    "large",
                    c.large_mode,
                    &c.large_model,
                    &c.large_base_url,
                    &c.large_api_key,
                    (
                        c.cost_per_million_large_input,
                        c.cost_per_million_large_output,
                        c.cost_per_million_large_cached_input,
                    ),
                    (c.large_api, c.large_prompt_cache),
                    (c.large_require_finish_reason, c.large_structured_output),
                    &c.large_endpoints,
                    used.large,
                ),
            ],
            timeouts: Timeouts {
                total: c.request_timeout,
                idle: c.idle_timeout,
                first_byte: c.first_byte_timeout,
                ..Timeouts::default()
            },
            retry: RetryConfig {
                max_attempts: c.max_attempts,
                ..RetryConfig::default()
            },
            mock: MockConfig {
                reply_template: c.mock_reply.clone(),
                latency: c.mock_latency,
                tokenizer: c.tokenizer,
            },
            in_flight: {
                let batch = (c.small_mode == Mode::Batch && used.small)
                    || (c.large_mode == Mode::Batch && used.large);
                if batch {
                    c.concurrency_limit.max(c.batch_size)
                } else {
                    c.concurrency_limit
                }
            },
            chunk,
            common: c.clone(),
        }
    }

    /// Chunking settings: `chunk_size`, `tokenizer`, the cache (`chunking_output_dir`, else
    /// `<output_dir>/chunk_cache`), and the seeded subset when `use_subset` is on.
    pub(crate) fn chunk_config(&self) -> ChunkConfig {
        self.chunk.clone()
    }

    /// Chunking settings for `--dry-run`: as above, but nothing is written under `output_dir`
    /// (the cache is used only when `chunking_output_dir` names one).
    pub(crate) fn dry_run_chunk_config(&self) -> ChunkConfig {
        let mut c = self.chunk.clone();
        if self.chunking_output_dir.is_none() {
            c.cache_dir = None;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(input: &str, output: &str) -> CommonConfig {
        let mut c = CommonConfig::default();
        c.input_dir = input.into();
        c.output_dir = output.into();
        c
    }

    #[test]
    fn a_dry_run_does_not_cache_under_output_dir() {
        let s = Settings::new(&common("/data/in", "/data/out"), EnginesUsed::BOTH);
        assert_eq!(
            s.chunk_config().cache_dir.as_deref(),
            Some(std::path::Path::new("/data/out/chunk_cache"))
        );
        assert_eq!(s.dry_run_chunk_config().cache_dir, None);
        assert_eq!(s.engines[0].label, "small");
        assert_eq!(s.engines[1].label, "large");
    }

    #[test]
    fn timeouts_burst_and_outage_limit_reach_the_engines() {
        let mut c = common("/data/in", "/data/out");
        c.first_byte_timeout = std::time::Duration::from_secs(5);
        c.burst = std::time::Duration::from_secs(1);
        c.outage_limit = std::time::Duration::from_secs(30);
        c.large_require_finish_reason = false;
        let s = Settings::new(&c, EnginesUsed::BOTH);
        assert_eq!(s.timeouts.first_byte, std::time::Duration::from_secs(5));
        assert_eq!(s.burst, std::time::Duration::from_secs(1));
        assert_eq!(s.outage_limit, std::time::Duration::from_secs(30));
        assert!(s.engines[0].require_finish_reason && !s.engines[1].require_finish_reason);
        let d = Settings::new(&common("/data/in", "/data/out"), EnginesUsed::BOTH);
        assert_eq!(d.timeouts.first_byte, std::time::Duration::from_secs(600));
        assert_eq!(d.burst, std::time::Duration::from_secs(3));
    }
}
