//! Optional requests-per-minute and tokens-per-minute limits.
//!
//! Hand-written token buckets rather than `governor`: governor reads its own clock (quanta), so
//! tokio's paused-clock tests cannot drive it, and a TPM limit must reserve an estimate before
//! the call and correct it once the server reports usage, which governor's cells cannot express.
//! The bucket is a dozen lines.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::fuse::Fuse;
use crate::{Error, Prompt, Request};

/// RPM and/or TPM buckets of one engine.
pub(crate) struct RateLimiter {
    rpm: Option<Mutex<Bucket>>,
    tpm: Option<Mutex<Bucket>>,
}

/// A bucket holding up to one minute's allowance, refilled continuously; may go into debt when
/// a reply used more tokens than were reserved.
struct Bucket {
    per_minute: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self {
            per_minute,
            level: per_minute,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let per_sec = self.per_minute / 60.0;
        self.level = (self.level + per_sec * now.duration_since(self.last).as_secs_f64())
            .min(self.per_minute);
        self.last = now;
    }

    /// Takes `n` now, or says how long until it can (a request larger than the bucket waits for
    /// a full bucket and then takes it all).
    fn take(&mut self, n: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let need = n.min(self.per_minute);
        if self.level >= need {
            self.level -= n;
            None
        } else {
            Some(Duration::from_secs_f64(
                (need - self.level) * 60.0 / self.per_minute,
            ))
        }
    }

    fn give_back(&mut self, n: f64) {
        self.refill(Instant::now());
        self.level = (self.level + n).min(self.per_minute);
    }
}

impl RateLimiter {
    /// `None` when neither limit is set.
    pub(crate) fn new(rpm: Option<u32>, tpm: Option<u32>) -> Option<Self> {
        if rpm.is_none() && tpm.is_none() {
            return None;
        }
        Some(Self {
            rpm: rpm.map(|n| Mutex::new(Bucket::new(n))),
            tpm: tpm.map(|n| Mutex::new(Bucket::new(n))),
        })
    }

    /// Waits until the request fits both limits; returns the tokens reserved for it.
    pub(crate) async fn admit(&self, request: &Request, fuse: &Fuse) -> Result<u64, Error> {
        if let Some(rpm) = &self.rpm {
            wait_for(rpm, 1.0, fuse).await?;
        }
        let Some(tpm) = &self.tpm else { return Ok(0) };
        let reserve = estimate_prompt_tokens(request) + request.max_tokens().unwrap_or(0);
        wait_for(tpm, reserve as f64, fuse).await?;
        Ok(reserve)
    }

    /// Corrects the TPM bucket once the real usage is known (`used` = 0 for a failed attempt).
    pub(crate) fn settle(&self, reserved: u64, used: u64) {
        if let Some(tpm) = &self.tpm {
            let mut b = tpm.lock().unwrap_or_else(|e| e.into_inner());
            b.give_back(reserved as f64 - used as f64);
        }
    }
}

async fn wait_for(bucket: &Mutex<Bucket>, n: f64, fuse: &Fuse) -> Result<(), Error> {
    loop {
        let wait = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(n, Instant::now());
        let Some(wait) = wait else { return Ok(()) };
        tokio::select! {
            biased;
            () = fuse.tripped() => return Err(fuse.error()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// A cheap prompt-size estimate (4 bytes per token) for reserving TPM before the call; the real
/// count replaces it when the reply arrives.
fn estimate_prompt_tokens(request: &Request) -> u64 {
    let bytes = match &request.prompt {
        Prompt::Chat(messages) => messages.iter().map(|m| m.content.len() + 4).sum(),
        Prompt::Completion(text) => text.len(),
    };
    (bytes as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rpm_spaces_requests_after_the_burst() {
        let rl = RateLimiter::new(Some(60), None).unwrap();
        let fuse = Fuse::new("t");
        let req = Request::completion("hi");
        let t0 = Instant::now();
        for _ in 0..60 {
            rl.admit(&req, &fuse).await.unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_millis(1),
            "a minute's allowance is available at once"
        );
        rl.admit(&req, &fuse).await.unwrap();
        rl.admit(&req, &fuse).await.unwrap();
        let e = t0.elapsed();
        assert!(
            e >= Duration::from_millis(1990) && e < Duration::from_millis(2100),
            "{e:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tpm_reserves_max_tokens_and_settles_on_usage() {
        let rl = RateLimiter::new(None, Some(1000)).unwrap();
        let fuse = Fuse::new("t");
        let req = Request::completion("abcd").with_param("max_tokens", 600);
        let reserved = rl.admit(&req, &fuse).await.unwrap();
        assert_eq!(reserved, 601);
        rl.settle(reserved, 101); // the reply was short: 500 tokens come back
        let t0 = Instant::now();
        rl.admit(&req, &fuse).await.unwrap();
        assert!(t0.elapsed() < Duration::from_millis(1));
        // Now ~298 left; the next 601 must wait for ~303 tokens = ~18 s.
        rl.admit(&req, &fuse).await.unwrap();
        let e = t0.elapsed();
        assert!(
            e > Duration::from_secs(17) && e < Duration::from_secs(20),
            "{e:?}"
        );
    }
}
