//! What the benchmarks in `load-tests/` share.

// Each benchmark includes this file and uses part of it.
#![allow(dead_code)]

/// The value after `--name` on the command line, parsed, or `default`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): 14th and 15th overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// One line of a benchmark's output: count, p50, p99 and throughput of `times` over `wall`.
pub fn report(what: &str, mut times: Vec<std::time::Duration>, wall: std::time::Duration) {
    if times.is_empty() {
        println!("{what:<52} no samples");
        return;
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "{what:<52} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms  throughput={:>9.1}/s",
        times.len(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        times.len() as f64 / wall.as_secs_f64()
    );
}

/// A new, empty database `<prefix>_<random>` on the PostgreSQL server of `admin_url`; its URL.
pub async fn fresh_postgres(admin_url: &str, prefix: &str) -> String {
    use sea_orm::{ConnectionTrait, Database};
    let name = format!("{prefix}_{:x}", rand::random::<u32>());
    let admin = Database::connect(admin_url).await.expect("PostgreSQL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("--postgres: no database name in {admin_url}"),
    }
}
