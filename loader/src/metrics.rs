//! The OpenMetrics text a live run serves on `/metrics` (`--listen`):
//! the report's numbers as Prometheus counters, gauges and histograms,
//! encoded by `prometheus-client`, served by `tiny_http`.
//!
//! Names follow Prometheus' conventions: an `inxpect_` prefix, `_total`
//! on counters, the unit as a suffix (`_seconds` for nanosecond counters,
//! converted to seconds; `_cycles` for tsc, `_events` for pmc and perf
//! hardware events). Every region series carries the labels `program`,
//! `region`, `function`, `line` (file:line of its first START, or empty),
//! `event` and `device`.

use std::sync::mpsc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use inxpect_rewriter::runtime::hist;

use crate::report::Report;
use crate::stats::Snapshot;

/// OpenMetrics' content type, served when the scraper accepts it (as
/// Prometheus does); others get the Prometheus text format 0.0.4.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The text formats `/metrics` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    OpenMetrics,
    Prometheus,
}

impl Text {
    /// From a request's `Accept` header.
    pub fn negotiate(accept: Option<&str>) -> Text {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Text::OpenMetrics,
            _ => Text::Prometheus,
        }
    }
    pub fn content_type(self) -> &'static str {
        match self {
            Text::OpenMetrics => OPENMETRICS,
            Text::Prometheus => PROMETHEUS_TEXT,
        }
    }
}

/// The quantiles exported as gauges, one metric each (a `quantile` label is
/// for summaries only); the histogram's buckets are powers of two, these
/// come from the finer runtime histogram.
const QUANTILES: [(f64, &str); 4] = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")];

/// Everything one scrape shows: the report as of now, and the histograms.
#[derive(Debug, Clone)]
struct Scrape {
    report: Report,
    snap: Snapshot,
}

type Labels = Vec<(String, String)>;

/// The unit suffix of the value metrics and the divisor from the
/// counter's unit to it.
fn value_unit(unit: &str) -> (Unit, f64) {
    match unit {
        "ns" => (Unit::Seconds, 1e9),
        "cycles" => (Unit::Other("cycles".into()), 1.0),
        _ => (Unit::Other("events".into()), 1.0),
    }
}

/// Prometheus buckets at the powers of two (`le` = 2^k - 1, then +Inf;
/// counts per bucket, the encoder accumulates them) from the runtime's
/// histogram, divided by `f`. Each runtime bucket lies inside one
/// power-of-two range, so the counts are exact.
fn pow2_buckets(hist: &[u64], f: f64) -> Vec<(f64, u64)> {
    let mut per_k = [0u64; 34];
    for (b, &c) in hist.iter().enumerate() {
        let (_, hi) = hist::range(b);
        // Smallest k with hi <= 2^k - 1; above 2^32 - 1: +Inf (index 33).
        let k = if hi >= 1u64 << 32 {
            33
        } else {
            (64 - hi.leading_zeros()) as usize
        };
        per_k[k] += c;
    }
    per_k
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let le = if k == 33 {
                f64::INFINITY
            } else {
                ((1u64 << k) - 1) as f64 / f
            };
            (le, c)
        })
        .collect()
}

impl Scrape {
    fn base(&self) -> Labels {
        let r = &self.report;
        let dev = r
            .live
            .as_ref()
            .map(|l| l.device.clone())
            .unwrap_or_default();
        vec![
            ("program".into(), r.program.clone()),
            ("device".into(), dev),
        ]
    }
}

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    ty: MetricType,
    rows: &[(Labels, M)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, unit, ty)?;
    for (labels, v) in rows {
        v.encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A histogram series (the crate has no constant histogram type).
#[derive(Debug)]
struct Hist {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for Hist {
    fn encode(
        &self,
        mut e: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        e.encode_histogram::<Labels>(self.sum, self.count, &self.buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = &self.report;
        let base = self.base();
        let mut info = base.clone();
        info.extend([
            ("object".into(), r.object.clone()),
            ("counter".into(), r.counter.clone()),
            (
                "mode".into(),
                r.live.as_ref().map(|l| l.mode.clone()).unwrap_or_default(),
            ),
        ]);
        family(
            &mut enc,
            "inxpect_run",
            "The profiled program (value 1).",
            None,
            MetricType::Gauge,
            &[(info, ConstGauge::new(1i64))],
        )?;
        for (name, help, v) in [
            ("inxpect_runs", "Program runs (packets).", r.runs.runs),
            (
                "inxpect_sampled_runs",
                "Runs chosen by sampling.",
                r.runs.sampled,
            ),
            (
                "inxpect_unmeasured_runs",
                "Sampled runs the backend had no counter for (module absent): nothing measured.",
                r.runs.no_counter,
            ),
        ] {
            family(
                &mut enc,
                name,
                help,
                None,
                MetricType::Counter,
                &[(base.clone(), ConstCounter::new(v))],
            )?;
        }
        family(
            &mut enc,
            "inxpect_sample_period",
            "One run in this many is measured.",
            None,
            MetricType::Gauge,
            &[(base.clone(), ConstGauge::new(r.sample as i64))],
        )?;
        if let Some(w) = r.live.as_ref().and_then(|l| l.window.as_ref()) {
            family(
                &mut enc,
                "inxpect_window_measured_seconds",
                "--window: time the instrumented build was attached (runs are of that time only).",
                None,
                MetricType::Counter,
                &[(base.clone(), ConstCounter::new(w.measured_seconds))],
            )?;
            family(
                &mut enc,
                "inxpect_windows_opened",
                "--window: windows opened so far.",
                None,
                MetricType::Counter,
                &[(base.clone(), ConstCounter::new(w.opened))],
            )?;
        }
        let region_labels = |reg: &crate::report::RegionReport| -> Labels {
            let mut l = base.clone();
            l.extend([
                ("region".into(), reg.name.clone()),
                ("function".into(), reg.function.clone()),
                ("line".into(), reg.line.clone().unwrap_or_default()),
            ]);
            l
        };
        let gauges: Vec<(Labels, ConstGauge<i64>)> = r
            .regions
            .iter()
            .map(|g| (region_labels(g), ConstGauge::new(i64::from(g.enabled))))
            .collect();
        family(
            &mut enc,
            "inxpect_region_enabled",
            "1 when the region is measured, 0 when it is off.",
            None,
            MetricType::Gauge,
            &gauges,
        )?;
        type Pick = fn(&crate::report::RegionReport) -> u64;
        let counters: [(&str, &str, Pick); 3] = [
            (
                "inxpect_region_measurements",
                "Completed measurements of the region (sampled runs through its START and END).",
                |g| g.count,
            ),
            (
                "inxpect_region_invalid",
                "Measurements dropped for an invalid counter read (in no other metric).",
                |g| g.invalid,
            ),
            (
                "inxpect_region_tail_ends",
                "Of the measurements, those a tail call ended.",
                |g| g.tail_ends,
            ),
        ];
        for (name, help, pick) in counters {
            let rows: Vec<(Labels, ConstCounter<u64>)> = r
                .regions
                .iter()
                .map(|g| (region_labels(g), ConstCounter::new(pick(g))))
                .collect();
            family(&mut enc, name, help, None, MetricType::Counter, &rows)?;
        }
        let (unit, f) = value_unit(&r.unit);
        let ev_labels = |g: &crate::report::RegionReport, e: &str| {
            let mut l = region_labels(g);
            l.push(("event".into(), e.to_string()));
            l
        };
        let mut hists = Vec::new();
        let mut quant: Vec<Vec<(Labels, ConstGauge<f64>)>> =
            QUANTILES.iter().map(|_| Vec::new()).collect();
        let mut cal = Vec::new();
        for (g, s) in r.regions.iter().zip(&self.snap.regions) {
            for (e, ev) in g.events.iter().enumerate() {
                hists.push((
                    ev_labels(g, &ev.event),
                    Hist {
                        sum: ev.sum as f64 / f,
                        count: g.count,
                        buckets: pow2_buckets(&s.hist[e], f),
                    },
                ));
                if g.count > 0 {
                    for (i, (q, _)) in QUANTILES.iter().enumerate() {
                        quant[i].push((
                            ev_labels(g, &ev.event),
                            ConstGauge::new(s.quantile(e, *q) / f),
                        ));
                    }
                }
                if let Some(c) = &ev.calibrated {
                    cal.push((ev_labels(g, &ev.event), ConstGauge::new(c.mean / f)));
                }
            }
        }
        family(
            &mut enc,
            "inxpect_region",
            "Per-measurement counter deltas of the region (raw: the probes' own cost included).",
            Some(&unit),
            MetricType::Histogram,
            &hists,
        )?;
        for ((_, name), rows) in QUANTILES.iter().zip(&quant) {
            family(
                &mut enc,
                &format!("inxpect_region_{name}"),
                &format!(
                    "The {name} of the raw deltas since the start, from the runtime's histogram."
                ),
                Some(&unit),
                MetricType::Gauge,
                rows,
            )?;
        }
        family(
            &mut enc,
            "inxpect_region_calibrated_mean",
            "Mean delta minus the calibration offset (the empty region's minimum).",
            Some(&unit),
            MetricType::Gauge,
            &cal,
        )?;
        if let Some(c) = &r.calibration {
            let rows: Vec<(Labels, ConstGauge<f64>)> = r
                .events
                .iter()
                .zip(&c.offset)
                .map(|(e, o)| {
                    let mut l = base.clone();
                    l.push(("event".into(), e.clone()));
                    (l, ConstGauge::new(o / f))
                })
                .collect();
            family(
                &mut enc,
                "inxpect_calibration_offset",
                "Smallest delta of an empty region: the probes' own cost, subtracted in calibrated values.",
                Some(&unit),
                MetricType::Gauge,
                &rows,
            )?;
        }
        Ok(())
    }
}

/// The `/metrics` text for `report` and the histograms of `snap`.
pub fn render(report: &Report, snap: &Snapshot, text: Text) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(Scrape {
        report: report.clone(),
        snap: snap.clone(),
    }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = match text {
        Text::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &reg),
        Text::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &reg),
    };
    out
}

/// A scrape waiting for its text: the run's loop answers it.
pub struct Request {
    pub text: Text,
    pub reply: mpsc::Sender<String>,
}

/// How long a scrape waits for the run loop before answering 503.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Serves `/metrics` on `addr` from a thread; each scrape is sent to the
/// returned receiver as a [`Request`] the caller answers with [`render`]'s
/// text (the maps belong to the caller's thread). Returns the bound
/// address (`addr` may ask for port 0).
pub fn serve(addr: &str) -> anyhow::Result<(std::net::SocketAddr, mpsc::Receiver<Request>)> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| anyhow::anyhow!("--listen {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow::anyhow!("--listen {addr}: not an IP address"))?;
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let path = req.url().split('?').next().unwrap_or_default().to_string();
            let resp = if path != "/metrics" {
                tiny_http::Response::from_string("inxpect: see /metrics\n").with_status_code(404)
            } else {
                let accept = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Accept"))
                    .map(|h| h.value.as_str().to_string());
                let text = Text::negotiate(accept.as_deref());
                let (atx, arx) = mpsc::channel();
                let body = tx
                    .send(Request { text, reply: atx })
                    .ok()
                    .and_then(|_| arx.recv_timeout(ANSWER_WITHIN).ok());
                match body {
                    Some(t) => tiny_http::Response::from_string(t).with_header(
                        tiny_http::Header::from_bytes("Content-Type", text.content_type())
                            .expect("a valid header"),
                    ),
                    None => tiny_http::Response::from_string("inxpect: run is stopping\n")
                        .with_status_code(503),
                }
            };
            let _ = req.respond(resp);
        }
    });
    Ok((bound, rx))
}
