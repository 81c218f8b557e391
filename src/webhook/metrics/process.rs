//! The standard `process_*` metrics (Prometheus' names, as client_golang exposes them on Linux):
//! CPU seconds, resident and virtual memory, open and maximum file descriptors, threads, start
//! time, read from /proc/self through `procfs` at each scrape. Owns no state; must not touch
//! anything but /proc/self (and the boot time in /proc/stat).

use procfs::WithCurrentSystemInfo as _;
use procfs::process::{LimitValue, Process};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads /proc/self when scraped. A file that cannot be read leaves its metrics out of that
/// scrape (never a made-up zero).
#[derive(Debug, Default)]
pub(super) struct ProcessCollector;

/// What one scrape read: each `None` could not be read.
#[derive(Debug, Default)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    threads: Option<i64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<f64>,
}

impl Sample {
    fn now() -> Sample {
        let Ok(me) = Process::myself() else {
            return Sample::default();
        };
        let mut s = Sample {
            open_fds: me.fd_count().ok().map(|n| n as u64),
            max_fds: me.limits().ok().map(|l| match l.max_open_files.soft_limit {
                LimitValue::Value(v) => v as f64,
                LimitValue::Unlimited => f64::INFINITY,
            }),
            ..Sample::default()
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second().max(1) as f64;
            s.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
            s.resident_bytes = Some(stat.rss_bytes().get());
            s.virtual_bytes = Some(stat.vsize);
            s.threads = Some(stat.num_threads);
            s.start_time_seconds = procfs::boot_time_secs()
                .ok()
                .map(|boot| boot as f64 + stat.starttime as f64 / ticks);
        }
        s
    }
}

/// One gauge: its name, help and value (left out when `None`).
fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<V>,
) -> Result<(), std::fmt::Error> {
    let Some(v) = value else { return Ok(()) };
    let g = ConstGauge::new(v);
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Sample::now();
        if let Some(cpu) = s.cpu_seconds {
            let c = ConstCounter::new(cpu);
            let help = "Total user and system CPU time spent in seconds.";
            let m =
                encoder.encode_descriptor("process_cpu_seconds", help, None, c.metric_type())?;
            c.encode(m)?;
        }
        let e = &mut encoder;
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors.",
            s.open_fds,
        )?;
        gauge(
            e,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            s.max_fds,
        )?;
        gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            s.virtual_bytes,
        )?;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            s.resident_bytes,
        )?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            s.start_time_seconds,
        )?;
        gauge(
            e,
            "process_threads",
            "Number of OS threads in the process.",
            s.threads,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read() {
        let s = Sample::now();
        assert!(s.resident_bytes.is_some_and(|b| b > 1 << 20), "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(s.max_fds.is_some_and(|m| m >= 3.0), "{s:?}");
        assert!(s.threads.is_some_and(|t| t >= 1), "{s:?}");
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0), "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let started = s.start_time_seconds.unwrap_or_default();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{s:?}, now {now}"
        );
    }
}
