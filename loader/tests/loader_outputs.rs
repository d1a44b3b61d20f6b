//! The outputs besides the final report: the `--jsonl` stream (offline and
//! live) and the `/metrics` endpoint, scraped by `promtool` and by a real
//! Prometheus server.

mod common;
use common::netns::{finish, sigint, spawn_run, Pair};
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Splits a `--jsonl` stdout into its interval lines and the final report
/// (the last line), checking schemas and the line order.
fn stream(stdout: &[u8]) -> (Vec<Value>, Value) {
    let text = String::from_utf8_lossy(stdout);
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let report = lines.pop().expect("no lines");
    assert_eq!(report["schema"], "inxpect-report/3", "{report}");
    assert!(!lines.is_empty(), "no interval line");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["schema"], "inxpect-interval/1", "{l}");
        assert_eq!(l["seq"].as_u64(), Some(i as u64), "{l}");
    }
    (lines, report)
}

/// Per-interval values add up to the totals of the last line and to the
/// final report: runs, and per region count, invalid and every event sum.
fn check_sums(lines: &[Value], report: &Value) {
    let last = lines.last().unwrap();
    let sum = |f: &dyn Fn(&Value) -> u64| -> u64 { lines.iter().map(f).sum() };
    for k in ["runs", "sampled", "no_counter"] {
        let s = sum(&|l| l["interval"][k].as_u64().unwrap());
        assert_eq!(Some(s), last["total"][k].as_u64(), "{k}");
        assert_eq!(Some(s), report[k].as_u64(), "{k} vs the report");
    }
    let nreg = report["regions"].as_array().unwrap().len();
    for r in 0..nreg {
        for k in ["count", "invalid", "tail_ends"] {
            let s = sum(&|l| l["regions"][r]["interval"][k].as_u64().unwrap());
            assert_eq!(Some(s), last["regions"][r]["total"][k].as_u64(), "{k}");
            assert_eq!(Some(s), report["regions"][r][k].as_u64(), "region {r} {k}");
        }
        let s = sum(&|l| {
            l["regions"][r]["interval"]["events"][0]["sum"]
                .as_u64()
                .unwrap()
        });
        assert_eq!(Some(s), report["regions"][r]["events"][0]["sum"].as_u64());
    }
    // Elapsed time grows; each interval is at most the time elapsed.
    for w in lines.windows(2) {
        assert!(w[1]["elapsed_s"].as_f64() > w[0]["elapsed_s"].as_f64());
    }
}

#[test]
fn jsonl_test_run_intervals_add_up() {
    let o = run(&[
        "test-run",
        &object("cms.clang-O2-g.o"),
        "--pcap",
        &corpus(),
        "--counter",
        "ktime",
        "--repeat",
        "3",
        "--no-calibrate",
        "--jsonl",
        "--interval",
        "30ms",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (lines, report) = stream(&o.stdout);
    check_sums(&lines, &report);
    // The oracle: every frame ran `repeat` times, and cms's parse region
    // is on every path once per run.
    let runs = 3 * corpus_frames();
    assert_eq!(report["runs"].as_u64(), Some(runs));
    assert_eq!(report["regions"][0]["name"], "parse");
    assert_eq!(report["regions"][0]["count"].as_u64(), Some(runs));
}

/// `inxpect run` with the given extra arguments, its stderr forwarded line
/// by line to the returned receiver.
fn start(p: &Pair, extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut args = vec!["--interval", "200ms", "--no-calibrate"];
    args.extend_from_slice(extra);
    let mut child = spawn_run(p, "router", "native", &args);
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    p.wait_attached(&mut child);
    (child, rx)
}

#[test]
fn jsonl_run_intervals_add_up() {
    let p = Pair::new("o");
    let (child, _err) = start(&p, &["--jsonl", "--duration", "2s"]);
    p.send(150);
    std::thread::sleep(Duration::from_millis(500));
    p.send(50);
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success());
    let (lines, report) = stream(&o.stdout);
    check_sums(&lines, &report);
    // The oracle: every frame sent went through parse once.
    assert_eq!(report["runs"].as_u64(), Some(200), "{report}");
    let counts = region_counts(&report);
    assert!(counts.contains(&("parse".into(), 200)), "{counts:?}");
    p.assert_clean();
}

/// `--window`: `/metrics` counts the windows and the time measured, and
/// stays valid exposition text.
#[test]
fn prometheus_counts_windows() {
    let p = Pair::new("o");
    let (child, err) = start(&p, &["--listen", "127.0.0.1:0", "--window", "20ms/100ms"]);
    let addr = listen_addr(&err);
    let t0 = Instant::now();
    let text = loop {
        let (st, text) = get(&addr, "/metrics", "text/plain");
        assert_eq!(st, 200, "{text}");
        if sample(&text, "inxpect_windows_opened_total", &[]).is_some_and(|n| n >= 2.0) {
            break text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no second window: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let measured = sample(&text, "inxpect_window_measured_seconds_total", &[]);
    assert!(measured.is_some_and(|m| m > 0.0), "{text}");
    promtool_check(&text);
    sigint(&child);
    let v = finish(child);
    assert!(v["live"]["window"]["opened"].as_u64() >= Some(2), "{v}");
    p.assert_clean();
}

/// `promtool check metrics` accepts `text`.
fn promtool_check(text: &str) {
    let mut pt = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/install)");
    pt.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = pt.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An HTTP/1.0 GET (no chunked answer): status and body.
fn get(addr: &str, path: &str, accept: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The address `inxpect run --listen 127.0.0.1:0` says it serves on.
fn listen_addr(err: &mpsc::Receiver<String>) -> String {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(l) = err.recv_timeout(Duration::from_secs(1)) {
            if let Some(rest) = l.split("serving metrics on http://").nth(1) {
                return rest.trim_end_matches("/metrics").to_string();
            }
        }
    }
    panic!("inxpect never said where it serves");
}

/// The value of the sample of `name` whose labels include each of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills the Prometheus child on every path out of the test.
struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_run() {
    let p = Pair::new("o");
    let (child, err) = start(&p, &["--listen", "127.0.0.1:0"]);
    let addr = listen_addr(&err);
    p.send(200);

    // promtool accepts what a plain scraper gets (Prometheus text 0.0.4),
    // and the counts are the frames sent.
    let (st, text) = get(&addr, "/metrics", "text/plain");
    assert_eq!(st, 200, "{text}");
    promtool_check(&text);
    let parse = "region=\"parse\"";
    assert_eq!(
        sample(&text, "inxpect_runs_total", &[]),
        Some(200.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "inxpect_region_measurements_total", &[parse]),
        Some(200.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "inxpect_region_seconds_count", &[parse]),
        Some(200.0),
        "{text}"
    );
    // Every measurement is in the +Inf bucket.
    assert_eq!(
        sample(
            &text,
            "inxpect_region_seconds_bucket",
            &[parse, "le=\"+Inf\""]
        ),
        Some(200.0),
        "{text}"
    );
    // OpenMetrics for those who ask for it.
    let (_, om) = get(&addr, "/metrics", "application/openmetrics-text");
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    assert_eq!(get(&addr, "/other", "*/*").0, 404);

    // A real Prometheus scrapes it; its API answers the region's count.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: inxpect\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let _prom = Reaped(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; .ci/install)"),
    );
    let query = "/api/v1/query?query=inxpect_region_measurements_total%7Bregion%3D%22parse%22%7D";
    let t0 = Instant::now();
    let got = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "Prometheus never returned the count"
        );
        std::thread::sleep(Duration::from_millis(500));
        if TcpStream::connect(&web).is_err() {
            continue;
        }
        let (st, body) = get(&web, query, "application/json");
        if st != 200 {
            continue;
        }
        let v: Value = serde_json::from_str(&body).expect("API JSON");
        let res = &v["data"]["result"];
        if let Some(first) = res.as_array().and_then(|a| a.first()) {
            assert_eq!(res.as_array().unwrap().len(), 1, "{v}");
            assert_eq!(first["metric"]["function"], "xdp_router", "{v}");
            assert_eq!(first["metric"]["job"], "inxpect", "{v}");
            break first["value"][1].as_str().unwrap().to_string();
        }
    };
    assert_eq!(got, "200");
    sigint(&child);
    let v = finish(child);
    assert!(region_counts(&v).contains(&("parse".into(), 200)));
    p.assert_clean();
}
