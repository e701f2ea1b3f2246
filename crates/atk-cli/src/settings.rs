//! The runner's view of the common config: what it builds engines, chunking and steps from.
//! The only place that reads [`CommonConfig`] fields, so a config change touches one file.

use std::path::PathBuf;

use atk_chunk::{ChunkConfig, Subset};
use atk_engine::{MockConfig, Mode, RetryConfig, Secret, Timeouts};

use crate::config::CommonConfig;

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
    /// False when the pipeline declares it does not call this engine.
    pub used: bool,
}

/// What the runner needs from the common config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `[small, large]`.
    pub engines: [EngineSettings; 2],
    pub input_dir: PathBuf,
    pub output_dir: PathBuf,
    pub prompts: Option<PathBuf>,
    pub default_prompts: Option<PathBuf>,
    pub completion_mode: bool,
    pub use_stop: bool,
    pub concurrency_limit: usize,
    pub do_meta_datagen: bool,
    pub meta_datagen_keys: Vec<String>,
    pub meta_datagen_extras: Vec<PathBuf>,
    pub stream: bool,
    pub debug_outputs: bool,
    pub timeouts: Timeouts,
    pub retry: RetryConfig,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub mock: MockConfig,
    pub read_files_manually: bool,
    chunk: ChunkConfig,
    /// True when `chunking_output_dir` was set (a dry run then still uses the cache).
    explicit_chunk_cache: bool,
}

impl Settings {
    /// Converts the loaded common config; `Err` is a config message (exit 2).
    pub fn from_common(c: &CommonConfig) -> Result<Self, String> {
        // concurrency_limit, chunk_size and the other counts are at least 1 by the config's
        // types (one message for the rule, from `config::rules`); `max(1)` below guards
        // configs built in code.
        if c.read_files_manually
            && !c.input_dir.as_os_str().is_empty()
            && c.output_dir.starts_with(&c.input_dir)
        {
            return Err(format!(
                "output_dir ({}) is inside input_dir ({}): the next run would read its own outputs as inputs; \
                 choose an output_dir outside the input folder",
                c.output_dir.display(),
                c.input_dir.display()
            ));
        }
        let mut chunk = ChunkConfig::new(c.chunk_size.max(1)).with_tokenizer(c.tokenizer);
        chunk.cache_dir = Some(
            c.chunking_output_dir
                .clone()
                .unwrap_or_else(|| c.output_dir.join("chunk_cache")),
        );
        if c.use_subset {
            chunk = chunk.with_subset(Subset::new(c.subset_size, c.seed));
        }
        let timeouts = Timeouts {
            total: c.request_timeout,
            idle: c.idle_timeout,
            ..Timeouts::default()
        };
        let retry = RetryConfig {
            max_attempts: c.max_attempts.max(1),
            ..RetryConfig::default()
        };
        let mock = MockConfig {
            reply_template: c.mock_reply.clone(),
            latency: c.mock_latency,
        };
        let engine =
            |label: &str, mode, model: &str, base_url: &str, key: &Secret, price_in, price_out| {
                EngineSettings {
                    label: label.to_string(),
                    mode,
                    model: model.to_string(),
                    base_url: base_url.to_string(),
                    api_key: key.clone(),
                    price_in,
                    price_out,
                    used: true,
                }
            };
        Ok(Self {
            engines: [
                engine(
                    "small",
                    c.small_mode,
                    &c.small_model,
                    &c.small_base_url,
                    &c.small_api_key,
                    c.cost_per_million_small_input,
                    c.cost_per_million_small_output,
                ),
                engine(
                    "large",
                    c.large_mode,
                    &c.large_model,
                    &c.large_base_url,
                    &c.large_api_key,
                    c.cost_per_million_large_input,
                    c.cost_per_million_large_output,
                ),
            ],
            input_dir: c.input_dir.clone(),
            output_dir: c.output_dir.clone(),
            prompts: c.prompts.clone(),
            default_prompts: c.default_prompts.clone(),
            completion_mode: c.completion_mode,
            use_stop: c.use_stop,
            concurrency_limit: c.concurrency_limit,
            do_meta_datagen: c.do_meta_datagen,
            meta_datagen_keys: c.meta_datagen_keys.clone(),
            meta_datagen_extras: c.meta_datagen_extras.clone(),
            stream: c.stream,
            debug_outputs: c.debug_outputs,
            timeouts,
            retry,
            requests_per_minute: c.requests_per_minute,
            tokens_per_minute: c.tokens_per_minute,
            mock,
            read_files_manually: c.read_files_manually,
            chunk,
            explicit_chunk_cache: c.chunking_output_dir.is_some(),
        })
    }

    /// Marks the engines the pipeline does not call ([`crate::Pipeline::engines_used`]).
    pub fn with_engines_used(mut self, used: crate::config::EnginesUsed) -> Self {
        self.engines[0].used = used.small;
        self.engines[1].used = used.large;
        self
    }

    /// Chunking settings: `chunk_size`, `tokenizer`, the cache (`chunking_output_dir`, else
    /// `<output_dir>/chunk_cache`), and the seeded subset when `use_subset` is on.
    pub fn chunk_config(&self) -> ChunkConfig {
        self.chunk.clone()
    }

    /// Chunking settings for `--dry-run`: as above, but nothing is written under `output_dir`
    /// (the cache is used only when `chunking_output_dir` names one).
    pub fn dry_run_chunk_config(&self) -> ChunkConfig {
        let mut c = self.chunk.clone();
        if !self.explicit_chunk_cache {
            c.cache_dir = None;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(input: &str, output: &str) -> CommonConfig {
        CommonConfig {
            input_dir: input.into(),
            output_dir: output.into(),
            ..CommonConfig::default()
        }
    }

    #[test]
    fn an_output_dir_inside_the_input_dir_is_refused() {
        let err = Settings::from_common(&common("/data/in", "/data/in/out")).unwrap_err();
        assert!(err.contains("inside input_dir"), "{err}");
        assert!(Settings::from_common(&common("/data/in", "/data/input-out")).is_ok());
    }

    #[test]
    fn a_dry_run_does_not_cache_under_output_dir() {
        let s = Settings::from_common(&common("/data/in", "/data/out")).unwrap();
        assert_eq!(
            s.chunk_config().cache_dir.as_deref(),
            Some(std::path::Path::new("/data/out/chunk_cache"))
        );
        assert_eq!(s.dry_run_chunk_config().cache_dir, None);
        assert_eq!(s.engines[0].label, "small");
        assert_eq!(s.engines[1].label, "large");
    }
}
