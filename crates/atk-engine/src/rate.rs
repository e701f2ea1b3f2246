//! Optional requests-per-minute and tokens-per-minute limits, as a smooth rate: each bucket holds
//! only `burst` (a few seconds' worth), never a minute's worth, since providers that enforce
//! per-minute limits at per-second granularity answer a minute's burst with 429s.
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

/// A bucket holding up to `burst` of the rate (at least one unit), starting full, refilled
/// continuously; may go into debt when a reply used more tokens than were reserved.
struct Bucket {
    per_sec: f64,
    capacity: f64,
    level: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u32, burst: Duration) -> Self {
        let per_sec = f64::from(per_minute.max(1)) / 60.0;
        let capacity = (per_sec * burst.as_secs_f64()).max(1.0);
        Self {
            per_sec,
            capacity,
            level: capacity,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        self.level = (self.level + self.per_sec * now.duration_since(self.last).as_secs_f64())
            .min(self.capacity);
        self.last = now;
    }

    /// Takes `n` now, or says how long until it can (a request larger than the bucket waits for
    /// a full bucket and then takes it all).
    fn take(&mut self, n: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let need = n.min(self.capacity);
        if self.level >= need {
            self.level -= n;
            None
        } else {
            Some(Duration::from_secs_f64((need - self.level) / self.per_sec))
        }
    }

    fn give_back(&mut self, n: f64) {
        self.refill(Instant::now());
        self.level = (self.level + n).min(self.capacity);
    }
}

impl RateLimiter {
    /// `None` when neither limit is set; each bucket holds `burst` of its rate.
    pub(crate) fn new(rpm: Option<u32>, tpm: Option<u32>, burst: Duration) -> Option<Self> {
        if rpm.is_none() && tpm.is_none() {
            return None;
        }
        Some(Self {
            rpm: rpm.map(|n| Mutex::new(Bucket::new(n, burst))),
            tpm: tpm.map(|n| Mutex::new(Bucket::new(n, burst))),
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
    async fn rpm_60_sends_no_more_than_the_burst_plus_one_per_second() {
        let burst = Duration::from_secs(3);
        let rl = RateLimiter::new(Some(60), None, burst).unwrap();
        let fuse = Fuse::new("t");
        let req = Request::completion("hi");
        let t0 = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..30 {
            rl.admit(&req, &fuse).await.unwrap();
            sent.push(t0.elapsed());
        }
        // 3 at once (3 s worth of 1 per second), then one a second: never a minute's worth.
        assert_eq!(sent.iter().filter(|t| t.is_zero()).count(), 3);
        for (i, start) in sent.iter().enumerate() {
            let in_a_second = sent[i..]
                .iter()
                .take_while(|t| **t < *start + Duration::from_secs(1))
                .count();
            assert!(
                in_a_second <= 3 + 1,
                "{in_a_second} within 1 s of {start:?}"
            );
        }
        let last = *sent.last().unwrap();
        assert!(
            last >= Duration::from_millis(26_990) && last < Duration::from_millis(27_100),
            "{last:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tpm_reserves_max_tokens_and_settles_on_usage() {
        // A burst of 60 s: the bucket holds a minute's worth, to keep this test's arithmetic.
        let rl = RateLimiter::new(None, Some(1000), Duration::from_secs(60)).unwrap();
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
