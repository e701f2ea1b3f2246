use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

/// A simulated endpoint on the paused clock: a token bucket of `burst` refilled at `rate` per
/// second (0: none) and, independently, a `noise` share of requests refused at random.
struct Server {
    rate: f64,
    burst: f64,
    noise: f64,
    latency: Duration,
    /// How long a 429 takes to come back (at once, unless a test says otherwise).
    refusal_latency: Duration,
    level: f64,
    last: Instant,
    /// A deterministic generator for the random refusals.
    lcg: u64,
    sent: u64,
    refused: u64,
    /// Its 429s carry rate-limit headers that state the refill interval (`1 / rate`).
    states_interval: bool,
}

impl Server {
    fn new(rate: f64, burst: f64, noise: f64, latency: Duration) -> Self {
        Self {
            rate,
            burst,
            noise,
            latency,
            refusal_latency: Duration::from_millis(1),
            level: burst,
            last: Instant::now(),
            lcg: 0x2545_f491_4f6c_dd1d,
            sent: 0,
            refused: 0,
            states_interval: false,
        }
    }

    /// Whether a request arriving now is refused, and its Retry-After.
    fn take(&mut self) -> Option<Duration> {
        let now = Instant::now();
        self.sent += 1;
        self.lcg = self
            .lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let draw = (self.lcg >> 11) as f64 / (1u64 << 53) as f64;
        if draw < self.noise {
            self.refused += 1;
            return Some(Duration::from_millis(300));
        }
        if self.rate > 0.0 {
            let refill = self.rate * now.duration_since(self.last).as_secs_f64();
            self.level = (self.level + refill).min(self.burst);
            self.last = now;
            if self.level < 1.0 {
                self.refused += 1;
                let wait = (1.0 - self.level) / self.rate;
                return Some(Duration::from_secs_f64(wait));
            }
            self.level -= 1.0;
        }
        None
    }
}

/// `n` requests through `learned` at `concurrency`, each retried after its Retry-After until
/// answered; returns the time taken and the server (its counts).
async fn run(
    learned: &Arc<Learned>,
    server: Server,
    n: u64,
    concurrency: usize,
) -> (Duration, Server) {
    let server = Arc::new(Mutex::new(server));
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (learned, server, next) = (learned.clone(), server.clone(), next.clone());
            tokio::spawn(async move {
                let fuse = Fuse::new("t");
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    loop {
                        let seq = learned.wait(&fuse).await.unwrap();
                        let (refusal, latency, refusal_latency, interval) = {
                            let mut s = server.lock().unwrap();
                            let interval = (s.states_interval && s.rate > 0.0)
                                .then(|| Duration::from_secs_f64(1.0 / s.rate));
                            (s.take(), s.latency, s.refusal_latency, interval)
                        };
                        match refusal {
                            None => {
                                tokio::time::sleep(latency).await;
                                learned.outcome(seq, Outcome::Answered);
                                break;
                            }
                            Some(retry_after) => {
                                // A 429 comes back at once, without the model's latency
                                // (unless the test's server says otherwise).
                                tokio::time::sleep(refusal_latency).await;
                                learned.outcome(
                                    seq,
                                    Outcome::Refused {
                                        used_up: false,
                                        retry_after: Some(retry_after),
                                        interval,
                                    },
                                );
                                tokio::time::sleep(retry_after).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = t0.elapsed();
    let server = Arc::try_unwrap(server).ok().unwrap().into_inner().unwrap();
    (elapsed, server)
}

/// A 429 asking for 10 ms (a bucket of 100/s found empty).
fn refused() -> Outcome {
    Outcome::Refused {
        used_up: false,
        retry_after: Some(Duration::from_millis(10)),
        interval: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_quantized_limit_is_learned_from_429s_alone() {
    // 100/s with a burst of 20 (per-minute headers say nothing useful), concurrency 200.
    let learned = Arc::new(Learned::default());
    let server = Server::new(100.0, 20.0, 0.0, Duration::from_millis(40));
    let (elapsed, s) = run(&learned, server, 1500, 200).await;
    let limit_time = (1500.0 - 20.0) / 100.0;
    let share = s.refused as f64 / s.sent as f64;
    assert!(share <= 0.05, "{} of {} refused", s.refused, s.sent);
    assert!(
        elapsed.as_secs_f64() <= 1.10 * limit_time,
        "{elapsed:?} for {limit_time} s of limit"
    );
    let rate = learned.rate().expect("paced");
    assert!((70.0..=130.0).contains(&rate), "{rate}");
}

#[tokio::test(start_paused = true)]
async fn a_reply_before_the_first_429_does_not_end_the_first_contact_unpaced() {
    // The same limit, but its 429s take as long as its replies (or a busy client reads them
    // late): the first reply lands before the refusals of the waves sent after it. Ending
    // the first contact at that reply let the whole concurrency out unpaced (the engine
    // bench's 7-12 % refused with per-minute headers).
    let learned = Arc::new(Learned::default());
    let mut server = Server::new(100.0, 20.0, 0.0, Duration::from_millis(40));
    server.refusal_latency = Duration::from_millis(40);
    let (elapsed, s) = run(&learned, server, 1500, 200).await;
    let limit_time = (1500.0 - 20.0) / 100.0;
    // The ramp's ~110 sends before any outcome cost ~90 refusals when a 429 takes the
    // model's latency; the rest must be paced (before: 300 of 1800 refused).
    assert!(s.refused <= 120, "{} of {} refused", s.refused, s.sent);
    assert!(
        elapsed.as_secs_f64() <= 1.10 * limit_time,
        "{elapsed:?} for {limit_time} s of limit"
    );
}

#[tokio::test(start_paused = true)]
async fn sustained_429s_lower_the_rate_and_successes_raise_it_again() {
    let learned = Learned::default();
    let fuse = Fuse::new("t");
    // First contact: 32 sent at once; 16 refused at once, then the other 16 answered (a
    // limit): paced from the Retry-After.
    let mut seqs = Vec::new();
    for _ in 0..32 {
        seqs.push(learned.wait(&fuse).await.unwrap());
    }
    for &seq in &seqs[16..] {
        learned.outcome(seq, refused());
    }
    for &seq in &seqs[..16] {
        learned.outcome(seq, Outcome::Answered);
    }
    let first = learned.rate().expect("a limit on first contact");
    assert!((80.0..=90.0).contains(&first), "{first}");
    // Sends are now spaced at that rate.
    let t0 = Instant::now();
    for _ in 0..10 {
        let seq = learned.wait(&fuse).await.unwrap();
        learned.outcome(seq, Outcome::Answered);
    }
    let spacing = t0.elapsed() / 10;
    let expected = Duration::from_secs_f64(1.0 / first);
    assert!(
        spacing >= expected.mul_f64(0.9) && spacing <= expected.mul_f64(1.3),
        "{spacing:?} vs {expected:?}"
    );
    // The pace crept above the limit: 429s again, one after another, until the rate comes
    // down (the cut in force is judged first: once a quarter of the attempts after it are
    // refused, it was not deep enough).
    let mut refusals = 0;
    while learned.rate().unwrap() >= first {
        let seq = learned.wait(&fuse).await.unwrap();
        learned.outcome(seq, refused());
        refusals += 1;
        assert!(
            refusals <= 12,
            "{refusals} 429s and still {:?}",
            learned.rate()
        );
    }
    let lowered = learned.rate().unwrap();
    assert!(lowered < 0.9 * first, "{lowered} after {first}");
    // Successes raise it again, step by step.
    let mut previous = lowered;
    for _ in 0..5 {
        for _ in 0..50 {
            let seq = learned.wait(&fuse).await.unwrap();
            learned.outcome(seq, Outcome::Answered);
        }
        let now = learned.rate().unwrap();
        assert!(now > previous, "{now} after {previous}");
        previous = now;
    }
}

#[tokio::test(start_paused = true)]
async fn random_429s_at_a_fixed_share_do_not_collapse_throughput() {
    // 10 % refused whatever the rate, no limit; 300 requests at concurrency 24, 40 ms:
    // without any pacing that takes about 300 / 24 × 40 ms plus the retries. Over many
    // seeds, because the bad cases are rare draws: before the fix 4 of 300 seeds took 33-44 s
    // (a few unlucky 429s on first contact paced the run at 3 requests a second for good; the
    // engine bench's fault mix once took 63.8 s), and 20 % refused took up to 81 s.
    let ideal = 300.0 / 24.0 * 0.040;
    for (share, seeds, worst_allowed) in [(0.10, 0..300u64, 3.5), (0.20, 0..40, 6.0)] {
        let mut times = Vec::new();
        for seed in seeds {
            let learned = Arc::new(Learned::default());
            let mut server = Server::new(0.0, 0.0, share, Duration::from_millis(40));
            server.lcg = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let (elapsed, s) = run(&learned, server, 300, 24).await;
            assert!(
                elapsed.as_secs_f64() < worst_allowed,
                "seed {seed}, {share} refused at random: {elapsed:?} (ideal {ideal} s), {} of {} refused, rate {:?}",
                s.refused,
                s.sent,
                learned.rate()
            );
            times.push(elapsed.as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        assert!(
            median < 3.0 * ideal + 0.6 * share * 10.0,
            "{share}: median {median} s"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_cut_never_paces_slower_than_the_retry_after_the_429s_asked_for() {
    // A slow client (sends seconds apart, as on a loaded machine) meets 429s asking to retry
    // after 300 ms: the send rate it measured says little, the Retry-After says the server
    // takes a request every 300 ms. Before issue 25's fix the cut spaced sends ~5 s apart.
    let learned = Learned::default();
    let fuse = Fuse::new("t");
    let seq = learned.wait(&fuse).await.unwrap();
    learned.outcome(seq, Outcome::Answered); // first contact: no limit
    for _ in 0..8 {
        tokio::time::advance(Duration::from_secs(2)).await;
        let seq = learned.wait(&fuse).await.unwrap();
        learned.outcome(seq, Outcome::Answered);
    }
    for _ in 0..4 {
        let seq = learned.wait(&fuse).await.unwrap();
        learned.outcome(
            seq,
            Outcome::Refused {
                used_up: false,
                retry_after: Some(Duration::from_millis(300)),
                interval: None,
            },
        );
    }
    let rate = learned.rate().expect("the 429s cut the rate");
    assert!(rate >= BETA / 0.3 - 1e-9, "{rate} per second");
}

#[tokio::test(start_paused = true)]
async fn a_high_share_of_rate_independent_429s_never_paces_slower_than_their_retry_after() {
    // Half of all requests refused at random with Retry-After 300 ms (a flaky proxy), few
    // requests at low concurrency: the cuts this sets off may never space sends further
    // apart than the server's own Retry-After asks (issue 25: seen at ~5 s apart under load).
    let learned = Arc::new(Learned::default());
    let server = Server::new(0.0, 0.0, 0.5, Duration::from_millis(40));
    let (elapsed, s) = run(&learned, server, 40, 4).await;
    assert!(
        elapsed < Duration::from_secs(12),
        "{elapsed:?}, {} of {} refused, rate {:?}",
        s.refused,
        s.sent,
        learned.rate()
    );
    assert!(
        learned.rate().is_none_or(|r| r >= BETA / 0.6 - 1e-9),
        "{:?}",
        learned.rate()
    );
}

#[tokio::test(start_paused = true)]
async fn a_first_contact_whose_429s_ask_for_a_fraction_of_the_interval_still_paces_the_limit() {
    // A 429 from a token bucket asks for the time to its next token: anything up to one refill
    // interval, depending on how much of a token the bucket held when the request came. The
    // first contact's refusals come in one burst, so they all ask for much the same fraction.
    // Here the bucket (100/s, burst 20) was 0.3 short of full when the run began: the ramp's
    // second wave empties it at 0.7 of a token, and every refusal asks for 3 ms, not 10. Taken
    // as the interval, that paced the run at 283/s; the trial then saw the refusals halve but
    // not vanish, judged them random and sent unpaced (the engine bench's per-minute scenario:
    // 11-19 % refused in some runs once the client got faster and its sends tighter).
    // (Other fractions too, with and without headers that state the interval.)
    for (level, headers) in [19.7, 19.9, 19.5, 19.3, 19.1]
        .into_iter()
        .flat_map(|level| [(level, true), (level, false)])
    {
        let learned = Arc::new(Learned::default());
        let mut server = Server::new(100.0, 20.0, 0.0, Duration::from_millis(40));
        server.level = level;
        server.states_interval = headers;
        let (elapsed, s) = run(&learned, server, 1500, 200).await;
        let limit_time = (1500.0 - 20.0) / 100.0;
        let share = s.refused as f64 / s.sent as f64;
        assert!(
            share <= 0.05,
            "level {level}, headers {headers}: {} of {} refused, rate {:?}",
            s.refused,
            s.sent,
            learned.rate()
        );
        assert!(
            elapsed.as_secs_f64() <= 1.10 * limit_time,
            "level {level}, headers {headers}: {elapsed:?} for {limit_time} s of limit"
        );
    }
}
