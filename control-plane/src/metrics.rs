//! Request counters and latency, rendered as Prometheus text at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Counters of answered requests.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; 10],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl ApiMetrics {
    /// Records one answered request.
    pub fn observe(&self, status: u16, took: Duration) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String, database_up: bool) {
        let _ = writeln!(
            out,
            "# HELP cp_http_requests_total Answered requests by status class.\n# TYPE cp_http_requests_total counter"
        );
        for (i, n) in self.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "cp_http_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP cp_http_request_seconds Request latency.\n# TYPE cp_http_request_seconds histogram"
        );
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "cp_http_request_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "cp_http_request_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "cp_http_request_seconds_sum {sum}\ncp_http_request_seconds_count {count}"
        );
        let _ = writeln!(
            out,
            "# HELP cp_database_up 1 when the database answered the last health check.\n# TYPE cp_database_up gauge\ncp_database_up {}",
            u8::from(database_up)
        );
    }
}
