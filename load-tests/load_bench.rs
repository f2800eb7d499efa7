//! (One file past 600 lines: a benchmark is read top to bottom as the run it makes.)
//!
//! Load test of one node: N live sessions (nobody watching, render slots raised so that slots are
//! not the limit), held, then stopped; then N again, ended by SIGTERM. The server is the release
//! binary run as its own process (so that its RSS and CPU are its own), on SQLite and on
//! PostgreSQL. Prints, per database:
//! - the bare floor: an actix-web handler doing one insert into the same kind of database, driven
//!   at concurrency 8 by the same client in the same run;
//! - start+stop at concurrency 8 with 100 live: p50/p99 and rate, against that floor;
//! - starting N at concurrency 8: p50/p99, rate, answers other than 200 (503/429);
//! - RSS and CPU of the idle node with N live;
//! - stopping N at concurrency 8: p50/p99 and rate;
//! - SIGTERM with N live: seconds to exit, exit code;
//! - from the database afterwards: stuck sessions (not ended), counter drift (an account's
//!   live_sessions against its sessions not ended), billed seconds against live seconds per
//!   session (ended_at - started_at), and the balance against the ledger.
//!
//! ```text
//! make load-test                      # or:
//! cargo build --release --bin avatar-supervisor --example load_bench
//! target/release/examples/load_bench [--sessions 10000] [--db sqlite,postgres] [--hold 20]
//!     [--pairs 1000] [--server target/release/avatar-supervisor] [--assets .setup]
//!     [--postgres postgres://postgres@127.0.0.1:5432/postgres]
//! ```

#[path = "support/mod.rs"]
mod support;

use support::arg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{json, Value};

const CONCURRENCY: usize = 8;

#[derive(Default)]
struct Timings {
    times: Vec<Duration>,
    wall: Duration,
    rejected: Vec<u16>,
}

impl Timings {
    fn pct(&self, p: f64) -> Duration {
        let mut sorted = self.times.clone();
        sorted.sort();
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    }

    fn report(&self, what: &str) {
        let mut rejected = self.rejected.clone();
        rejected.sort();
        rejected.dedup();
        println!(
            "  {what:<44} n={:<6} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms  rate={:>8.1}/s  refused={}{}",
            self.times.len(),
            self.pct(0.5).as_secs_f64() * 1e3,
            self.pct(0.99).as_secs_f64() * 1e3,
            self.pct(1.0).as_secs_f64() * 1e3,
            self.times.len() as f64 / self.wall.as_secs_f64().max(1e-9),
            self.rejected.len(),
            if rejected.is_empty() {
                String::new()
            } else {
                format!(" {rejected:?}")
            }
        );
    }
}

/// Runs `n` jobs at concurrency 8; each returns its latency, or the HTTP status that refused it.
async fn drive<F, Fut>(n: usize, job: F) -> Timings
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Duration, u16>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Timings::default()));
    let wall = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (job, next, out) = (job.clone(), next.clone(), out.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let result = job(i).await;
                    let mut out = out.lock().unwrap();
                    match result {
                        Ok(t) => out.times.push(t),
                        Err(status) => out.rejected.push(status),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    let mut timings = std::mem::take(&mut *out.lock().unwrap());
    timings.wall = wall.elapsed();
    timings
}

/// The server under test, as its own process.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    fn common_args(data_dir: &Path, database_url: &str) -> Vec<String> {
        let mut args = vec!["--data-dir".into(), data_dir.display().to_string()];
        if !database_url.is_empty() {
            args.extend(["--database-url".into(), database_url.into()]);
        }
        args
    }

    fn start(bin: &Path, data_dir: &Path, database_url: &str, sessions: usize) -> Server {
        let log = data_dir.join("server.log");
        let mut child = Command::new(bin)
            .args(Self::common_args(data_dir, database_url))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env("AVS_RENDER__SLOTS_PER_DEVICE", (sessions + 256).to_string())
            .env("AVS_SESSIONS__IDLE_TIMEOUT_SECONDS", "86400")
            .env("AVS_SERVER__SHUTDOWN_GRACE_SECONDS", "30")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("server log"))
            .spawn()
            .expect("spawn the server (build it: cargo build --release --bin avatar-supervisor)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("avatar-supervisor listening on ") {
                        break url.trim().to_string();
                    }
                }
                _ => panic!(
                    "the server exited before listening; its log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        };
        // Keep draining stdout so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) so far.
    fn cpu_seconds(&self) -> f64 {
        support::cpu_seconds(self.pid())
    }

    fn rss_mib(&self) -> f64 {
        support::rss_mib(self.pid())
    }

    /// SIGTERM, then the seconds until the process exited and its exit code.
    fn terminate(mut self) -> (f64, Option<i32>) {
        let t0 = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let status = self.child.wait().expect("wait for the server");
        (t0.elapsed().as_secs_f64(), status.code())
    }

    fn errors_logged(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }
}

struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> Result<Value, u16> {
        let reply = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
            .json(&body)
            .send()
            .await
            .map_err(|_| 0u16)?;
        let status = reply.status().as_u16();
        let body = reply.json::<Value>().await.unwrap_or(Value::Null);
        if status >= 300 {
            return Err(status);
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    async fn start(&self, agent: &str) -> Result<(String, Duration), u16> {
        let t0 = Instant::now();
        let body = self
            .post("/v1/sessions", json!({"agent_id": agent}))
            .await?;
        let id = body["session_id"].as_str().ok_or(0u16)?.to_string();
        Ok((id, t0.elapsed()))
    }

    async fn stop(&self, id: &str) -> Result<Duration, u16> {
        let t0 = Instant::now();
        self.post(&format!("/v1/sessions/{id}/stop"), json!({}))
            .await?;
        Ok(t0.elapsed())
    }
}

/// Starts `n` sessions at concurrency 8; their ids go to `ids`.
async fn start_many(
    client: &Arc<Client>,
    agent: &str,
    n: usize,
    ids: &Arc<Mutex<Vec<String>>>,
) -> Timings {
    let (c, agent, ids) = (client.clone(), agent.to_string(), ids.clone());
    drive(n, move |_| {
        let (c, agent, ids) = (c.clone(), agent.clone(), ids.clone());
        async move {
            let (id, t) = c.start(&agent).await?;
            ids.lock().unwrap().push(id);
            Ok(t)
        }
    })
    .await
}

async fn stop_many(client: &Arc<Client>, ids: Vec<String>) -> Timings {
    let (c, ids) = (client.clone(), Arc::new(ids));
    let n = ids.len();
    drive(n, move |i| {
        let (c, ids) = (c.clone(), ids.clone());
        async move { c.stop(&ids[i]).await }
    })
    .await
}

/// The floor: a bare actix-web handler doing one insert into the same kind of database.
fn spawn_floor(database_url: String) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let db = Database::connect(&database_url)
                .await
                .expect("floor database");
            let backend = db.get_database_backend();
            if backend == sea_orm::DatabaseBackend::Sqlite {
                for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"] {
                    db.execute_unprepared(pragma).await.expect("pragma");
                }
            }
            db.execute_unprepared(
                "CREATE TABLE IF NOT EXISTS floor (id TEXT PRIMARY KEY, at BIGINT NOT NULL)",
            )
            .await
            .expect("floor table");
            let db = actix_web::web::Data::new(db);
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new().app_data(db.clone()).route(
                    "/insert",
                    actix_web::web::post().to(
                        |db: actix_web::web::Data<DatabaseConnection>| async move {
                            let id = format!("{:032x}", rand::random::<u128>());
                            let sql = match db.get_database_backend() {
                                sea_orm::DatabaseBackend::Postgres => {
                                    "INSERT INTO floor (id, at) VALUES ($1, $2)"
                                }
                                _ => "INSERT INTO floor (id, at) VALUES (?, ?)",
                            };
                            let stmt = Statement::from_sql_and_values(
                                db.get_database_backend(),
                                sql,
                                [id.into(), chrono::Utc::now().timestamp_millis().into()],
                            );
                            match db.execute_raw(stmt).await {
                                Ok(_) => actix_web::HttpResponse::Ok().json(json!({"ok": true})),
                                Err(_) => actix_web::HttpResponse::ServiceUnavailable().finish(),
                            }
                        },
                    ),
                )
            })
            .bind("127.0.0.1:0")
            .expect("bind the floor");
            let addr = server.addrs()[0];
            tx.send(format!("http://{addr}")).expect("floor address");
            server.run().await.expect("floor server");
        })
    });
    rx.recv().expect("floor started")
}

async fn query_i64(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect(sql)
        .expect("a row");
    row.try_get_by_index::<i64>(0).unwrap_or(0)
}

/// What the database says once the server has exited.
async fn audit(database_url: &str, initial_balance_ms: i64) -> bool {
    let db = Database::connect(database_url)
        .await
        .expect("audit database");
    let stuck = query_i64(
        &db,
        "SELECT COUNT(*) FROM sessions WHERE state NOT IN ('stopped', 'failed')",
    )
    .await;
    let drift = query_i64(
        &db,
        "SELECT COUNT(*) FROM accounts a WHERE a.live_sessions <> (SELECT COUNT(*) FROM sessions s \
         WHERE s.account_id = a.id AND s.state NOT IN ('stopped', 'failed'))",
    )
    .await;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT started_at, ended_at, billed_seconds FROM sessions WHERE started_at IS NOT NULL",
        ))
        .await
        .expect("sessions");
    let (mut live_total, mut billed_total, mut worst, mut off) = (0.0f64, 0i64, 0.0f64, 0usize);
    for row in &rows {
        let started: i64 = row.try_get_by_index(0).unwrap_or(0);
        let ended: Option<i64> = row.try_get_by_index(1).unwrap_or(None);
        let billed: i64 = row.try_get_by_index(2).unwrap_or(0);
        let live = ended.map_or(f64::NAN, |e| (e - started) as f64 / 1000.0);
        live_total += live;
        billed_total += billed;
        let diff = (billed as f64 - live).abs();
        if diff.is_nan() || diff > 1.0 {
            off += 1;
        }
        if diff > worst || diff.is_nan() {
            worst = diff;
        }
    }
    let balance = query_i64(
        &db,
        "SELECT CAST(COALESCE(SUM(balance_ms), 0) AS BIGINT) FROM accounts",
    )
    .await;
    let ledger = query_i64(&db, "SELECT COUNT(*) FROM usage_ledger").await;
    let spent_ms = initial_balance_ms - balance;
    println!(
        "  audit: sessions={} stuck={stuck} drift={drift} live={live_total:.0} s billed={billed_total} s \
         worst |billed-live|={worst:.3} s, sessions off by >1 s={off}; balance spent={:.0} s; ledger lines={ledger}",
        rows.len(),
        spent_ms as f64 / 1000.0,
    );
    stuck == 0 && drift == 0 && off == 0 && spent_ms == billed_total * 1000
}

struct Run {
    name: &'static str,
    database_url: String,
    audit_url: String,
    floor_url: String,
}

async fn run(
    bin: &Path,
    assets: &Path,
    run: Run,
    sessions: usize,
    hold: u64,
    pairs: usize,
) -> bool {
    println!("== {} ==", run.name);
    let dir = tempfile::tempdir().expect("temp dir");
    let minutes = 100_000_000u64;
    let initial_balance_ms = minutes as i64 * 60_000;
    let created = Command::new(bin)
        .args(Server::common_args(dir.path(), &run.database_url))
        .args(["account", "create", "--name", "load"])
        .args(["--concurrency-limit", &(sessions + 256).to_string()])
        .args(["--minutes", &minutes.to_string()])
        .args(["--max-session-seconds", "86400", "--credits", "100000"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("account create");
    let created: Value = serde_json::from_slice(&created.stdout).unwrap_or_else(|_| {
        panic!(
            "account create: {}",
            String::from_utf8_lossy(&created.stderr)
        )
    });
    let server = Server::start(bin, dir.path(), &run.database_url, sessions);
    let client = Arc::new(Client {
        base: server.base.clone(),
        key: created["api_key"].as_str().expect("api_key").to_string(),
        http: avatar_supervisor::net::http_client(Duration::from_secs(120)),
    });
    let portrait = std::fs::read(assets.join("images/astronaut.png")).expect("astronaut.png");
    let image = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, portrait);
    let agent = client
        .post("/v1/agent/generate", json!({"image": image}))
        .await
        .expect("generate")["agent_id"]
        .as_str()
        .expect("agent_id")
        .to_string();
    loop {
        let status = client.get(&format!("/v1/agent/status/{agent}")).await;
        match status["data"]["status"].as_str() {
            Some("ready") => break,
            Some("failed") => panic!("generation failed: {status}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    // The floor, in the same run.
    let floor_base = spawn_floor(run.floor_url.clone());
    let http = avatar_supervisor::net::http_client(Duration::from_secs(60));
    let floor = drive(pairs * 2, move |_| {
        let (http, url) = (http.clone(), format!("{floor_base}/insert"));
        async move {
            let t0 = Instant::now();
            let r = http.post(url).send().await.map_err(|_| 0u16)?;
            if !r.status().is_success() {
                return Err(r.status().as_u16());
            }
            Ok(t0.elapsed())
        }
    })
    .await;
    floor.report("floor: bare actix-web, one insert");
    // Start+stop with nothing else live, then with 100 live: a quiet node must not be slower.
    // The first 100 pairs are not counted: the pool's connections opened, the avatar prepared.
    let floor_p99 = floor.pct(0.99).as_secs_f64();
    let [_, _, warm] = run_pairs(&client, &agent, 100).await;
    assert!(
        warm.rejected.is_empty(),
        "warm-up refused: {:?}",
        warm.rejected
    );
    start_stop_pairs(&client, &agent, pairs, "idle", floor_p99).await;
    let background = Arc::new(Mutex::new(Vec::new()));
    start_many(&client, &agent, 100, &background).await;
    start_stop_pairs(&client, &agent, pairs, "100 live", floor_p99).await;
    let background = std::mem::take(&mut *background.lock().unwrap());
    stop_many(&client, background).await;

    // N live, held, stopped.
    let ids = Arc::new(Mutex::new(Vec::new()));
    let cpu0 = server.cpu_seconds();
    let started = start_many(&client, &agent, sessions, &ids).await;
    started.report(&format!("start {sessions}"));
    println!(
        "  CPU while starting: {:.0} % of a core",
        (server.cpu_seconds() - cpu0) / started.wall.as_secs_f64() * 100.0
    );
    tokio::time::sleep(Duration::from_secs(hold.min(5))).await;
    let (cpu0, t0) = (server.cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(hold.saturating_sub(5).max(5))).await;
    let idle_cpu = (server.cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let live = ids.lock().unwrap().len();
    let rss = server.rss_mib();
    println!(
        "  {live} live, idle: RSS {rss:.0} MiB ({:.0} KiB a session), CPU {idle_cpu:.1} % of a core",
        rss * 1024.0 / live.max(1) as f64
    );
    let all = std::mem::take(&mut *ids.lock().unwrap());
    let stopped = stop_many(&client, all).await;
    stopped.report(&format!("stop {live}"));

    // N live again, then SIGTERM.
    let again = start_many(&client, &agent, sessions, &ids).await;
    again.report(&format!("start {sessions} (before SIGTERM)"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let errors = server.errors_logged();
    let (took, code) = server.terminate();
    println!(
        "  SIGTERM with {} live: exited {code:?} after {took:.1} s",
        ids.lock().unwrap().len()
    );
    if !errors.is_empty() {
        println!(
            "  {} ERROR lines in the server log, first: {}",
            errors.len(),
            errors[0]
        );
    }
    let audit_url = if run.audit_url.is_empty() {
        format!(
            "sqlite://{}?mode=ro",
            dir.path().join("avatar-supervisor.db").display()
        )
    } else {
        run.audit_url.clone()
    };
    let ok = audit(&audit_url, initial_balance_ms).await;
    println!(
        "  result: {}",
        if ok && code == Some(0) {
            "PASS"
        } else {
            "FAIL"
        }
    );
    ok && code == Some(0)
}

/// `pairs` start+stop pairs at `CONCURRENCY`: the starts', the stops' and the pairs' timings.
async fn run_pairs(client: &Arc<Client>, agent: &str, pairs: usize) -> [Timings; 3] {
    let (c, a) = (client.clone(), agent.to_string());
    let (starts, stops) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (s1, s2) = (starts.clone(), stops.clone());
    let both = drive(pairs, move |_| {
        let (c, a, s1, s2) = (c.clone(), a.clone(), s1.clone(), s2.clone());
        async move {
            let (id, t_start) = c.start(&a).await?;
            let t_stop = c.stop(&id).await?;
            s1.lock().unwrap().push(t_start);
            s2.lock().unwrap().push(t_stop);
            Ok(t_start + t_stop)
        }
    })
    .await;
    let part = |times: &Arc<Mutex<Vec<Duration>>>| Timings {
        times: times.lock().unwrap().clone(),
        wall: both.wall,
        rejected: vec![],
    };
    [part(&starts), part(&stops), both]
}

/// `pairs` start+stop pairs: each part's and the pair's p50/p99, and their p99 over the floor's.
async fn start_stop_pairs(
    client: &Arc<Client>,
    agent: &str,
    pairs: usize,
    what: &str,
    floor_p99: f64,
) {
    let [starts, stops, both] = run_pairs(client, agent, pairs).await;
    starts.report(&format!("start, {what}"));
    stops.report(&format!("stop, {what}"));
    both.report(&format!("start+stop, {what}"));
    for (part, p99) in [("start", starts.pct(0.99)), ("start+stop", both.pct(0.99))] {
        println!(
            "  {part} p99 / floor p99 = {:.2}x ({what})",
            p99.as_secs_f64() / floor_p99.max(1e-9)
        );
    }
}

#[tokio::main]
async fn main() {
    let sessions: usize = arg("--sessions", 10_000);
    let hold: u64 = arg("--hold", 20);
    let pairs: usize = arg("--pairs", 1000);
    let dbs: String = arg("--db", "sqlite,postgres".to_string());
    let bin = PathBuf::from(arg(
        "--server",
        "target/release/avatar-supervisor".to_string(),
    ));
    let assets = PathBuf::from(arg("--assets", ".setup".to_string()));
    let postgres: String = arg(
        "--postgres",
        "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
    );
    println!(
        "load test: {sessions} sessions, concurrency {CONCURRENCY}, hold {hold} s, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut all_ok = true;
    for db in dbs.split(',') {
        let scratch = tempfile::tempdir().expect("temp dir");
        let run_spec = match db {
            "sqlite" => {
                // The server's own file in its data dir; the audit reads it after the server exits.
                let floor = format!("sqlite://{}/floor.db?mode=rwc", scratch.path().display());
                Run {
                    name: "SQLite",
                    database_url: String::new(),
                    audit_url: String::new(),
                    floor_url: floor,
                }
            }
            "postgres" => {
                let url = support::fresh_postgres(&postgres, "avs_load").await;
                Run {
                    name: "PostgreSQL",
                    database_url: url.clone(),
                    audit_url: url.clone(),
                    floor_url: url,
                }
            }
            other => panic!("--db: unknown database {other:?} (sqlite, postgres)"),
        };
        let dropped = run_spec.name == "PostgreSQL";
        let url = run_spec.database_url.clone();
        all_ok &= run(&bin, &assets, run_spec, sessions, hold, pairs).await;
        if dropped {
            let name = url.rsplit('/').next().unwrap_or_default().to_string();
            let admin = Database::connect(&postgres).await.expect("PostgreSQL");
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                .await;
        }
    }
    std::process::exit(if all_ok { 0 } else { 1 });
}
