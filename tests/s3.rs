//! Feature views on S3, against a real S3-compatible server: moto's, installed from PyPI
//! into its own virtual environment by `tests/support/setup_moto.sh` on first use and
//! started by `tests/support/moto_server.py` with credential checking on.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Output, Stdio};

use crate::common::{WorkerProcesses, repo_root};

/// A running moto server; stopped when dropped.
struct Moto {
    child: Child,
    stdin: Option<ChildStdin>,
    endpoint: String,
    access_key_id: String,
    secret_access_key: String,
    bucket: String,
}

impl Moto {
    fn start() -> Self {
        let support = repo_root().join("tests/support");
        let setup = Command::new("bash")
            .arg(support.join("setup_moto.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("runs tests/support/setup_moto.sh");
        assert!(setup.status.success(), "installing moto failed");
        let python = String::from_utf8(setup.stdout).expect("utf-8 path");
        let mut child = Command::new(python.trim())
            .arg(support.join("moto_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts moto_server.py");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("moto_server.py prints its settings");
        let field = |name: &str| -> String {
            let key = format!("\"{name}\": \"");
            let start = line
                .find(&key)
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                + key.len();
            line[start..][..line[start..].find('"').expect("closing quote")].to_string()
        };
        Self {
            endpoint: field("endpoint"),
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            bucket: field("bucket"),
            stdin,
            child,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with exactly the given `AWS_*` variables (none from the caller's shell).
fn hindcast(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hindcast"));
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
        .envs(env.iter().copied())
        .args(["-q", "--format", "csv"])
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("runs hindcast")
}

fn ok(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    String::from_utf8_lossy(&output.stdout).to_string()
}

// The sum in integer cents: a sum of doubles depends on the order rows arrive in, which
// differs between one process and workers.
const JOIN: &str = "SELECT count(*), count(s.avg_transaction_amount), \
    sum(CAST(round(s.total_spend_90d * 100) AS BIGINT)) \
    FROM labels l LEFT JOIN VIEW FOR SYSTEM_TIME AS OF l.event_timestamp AS s \
    ON s.user_id = l.user_id";

#[test]
fn feature_views_on_s3() {
    let moto = Moto::start();
    let location = format!("s3://{}/user_spending_stats/", moto.bucket);
    let env = [
        ("AWS_ACCESS_KEY_ID", moto.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", moto.secret_access_key.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", moto.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let view = |name: &str, options: &str| {
        format!(
            "CREATE FEATURE VIEW {name} ENTITY (user_id) TIMESTAMP event_timestamp \
             CREATED created_timestamp TTL INTERVAL '90 days' STORED AS PARQUET {options} \
             LOCATION '{location}'"
        )
    };
    let repo = ["--repo", "examples/feature_repo"];
    let expected = ok(&hindcast(
        &[],
        &[
            &repo[..],
            &["-c", &JOIN.replace("VIEW", "user_spending_stats")],
        ]
        .concat(),
    ));

    // Credentials from the environment: COPY the example's features to S3, then join a
    // view over them; the answer is the local one.
    let copy =
        format!("COPY (SELECT * FROM user_spending_stats) TO '{location}' STORED AS PARQUET");
    ok(&hindcast(&env, &[&repo[..], &["-c", &copy]].concat()));
    let from_env = ok(&hindcast(
        &env,
        &[
            &repo[..],
            &[
                "-c",
                &view("remote", ""),
                "-c",
                &JOIN.replace("VIEW", "remote"),
            ],
        ]
        .concat(),
    ));
    assert_eq!(from_env, expected);

    // The same on three worker processes, each reading S3 with its own environment's
    // credentials: the same answer, from a plan whose scans ran on the workers.
    let (_workers, addresses) = WorkerProcesses::start(3, &env);
    let workers = addresses.join(",");
    let on_workers = ok(&hindcast(
        &env,
        &[
            &repo[..],
            &[
                "--workers",
                &workers,
                "-c",
                "SET distributed.file_scan_config_bytes_per_partition = 1",
                "-c",
                &view("remote", ""),
                "-c",
                &JOIN.replace("VIEW", "remote"),
                "-c",
                &format!("EXPLAIN {}", JOIN.replace("VIEW", "remote")),
            ],
        ]
        .concat(),
    ));
    assert!(on_workers.starts_with(&expected), "{on_workers}");
    let stages = on_workers.split("physical_plan").nth(1).unwrap_or_default();
    let remote_scans = stages
        .lines()
        // An object's path within its bucket; the local files' are absolute.
        .filter(|l| l.contains("DataSourceExec") && l.contains("[[user_spending_stats/"))
        .count();
    assert!(
        stages.contains("DistributedExec") && remote_scans >= 3,
        "the S3 scan was not split across the workers: {on_workers}"
    );
    // Workers whose environment has no credentials cannot read it, whatever the
    // coordinator's has (and no instance metadata service answers in their place).
    let (_anonymous, addresses) = WorkerProcesses::start(
        3,
        &[
            ("AWS_ENDPOINT", moto.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_METADATA_ENDPOINT", "http://127.0.0.1:1"),
        ],
    );
    let failed = hindcast(
        &env,
        &[
            &repo[..],
            &[
                "--workers",
                &addresses.join(","),
                "-c",
                "SET distributed.file_scan_config_bytes_per_partition = 1",
                "-c",
                &view("remote", ""),
                "-c",
                &JOIN.replace("VIEW", "remote"),
            ],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "anonymous workers read S3");
    assert!(
        stderr.contains("worker http://127.0.0.1:") && stderr.contains("user_spending_stats/"),
        "the error names neither the worker nor the object: {stderr}"
    );

    // A Delta table on S3, made and appended to by hindcast (commits through S3's
    // conditional writes), read as a feature view: the same answer.
    let delta = format!("s3://{}/delta_spending_stats/", moto.bucket);
    ok(&hindcast(
        &env,
        &[
            &repo[..],
            &[
                "-c",
                &format!(
                    "CREATE EXTERNAL TABLE stats_delta (user_id BIGINT, event_timestamp TIMESTAMP, \
                     created_timestamp TIMESTAMP, avg_transaction_amount DOUBLE, total_spend_90d DOUBLE) \
                     STORED AS DELTA LOCATION '{delta}'"
                ),
                "-c",
                "INSERT INTO stats_delta SELECT user_id, event_timestamp, created_timestamp, \
                 avg_transaction_amount, total_spend_90d FROM user_spending_stats \
                 WHERE event_timestamp < TIMESTAMP '2025-02-01 00:00:00'",
                "-c",
                "INSERT INTO stats_delta SELECT user_id, event_timestamp, created_timestamp, \
                 avg_transaction_amount, total_spend_90d FROM user_spending_stats \
                 WHERE event_timestamp >= TIMESTAMP '2025-02-01 00:00:00'",
            ],
        ]
        .concat(),
    ));
    let delta_view = format!(
        "CREATE FEATURE VIEW remote ENTITY (user_id) TIMESTAMP event_timestamp \
         CREATED created_timestamp TTL INTERVAL '90 days' STORED AS DELTA LOCATION '{delta}'"
    );
    let from_delta = ok(&hindcast(
        &env,
        &[
            &repo[..],
            &[
                "-c",
                &delta_view,
                "-c",
                &JOIN.replace("VIEW", "remote"),
                "-c",
                "DESCRIBE remote",
            ],
        ]
        .concat(),
    ));
    assert!(from_delta.starts_with(&expected), "{from_delta}");
    assert!(
        from_delta.contains("delta version,2 (the newest)"),
        "{from_delta}"
    );

    // Credentials in OPTIONS, none in the environment; the secret shows up nowhere.
    let options = format!(
        "OPTIONS ('aws.access_key_id' '{}', 'aws.secret_access_key' '{}', \
         'aws.region' 'us-east-1', 'aws.endpoint' '{}', 'aws.allow_http' 'true')",
        moto.access_key_id, moto.secret_access_key, moto.endpoint
    );
    let with_options = hindcast(
        &[],
        &[
            &repo[..],
            &[
                "-c",
                &view("remote", &options),
                "-c",
                &JOIN.replace("VIEW", "remote"),
                "-c",
                "DESCRIBE remote",
                "-c",
                &format!("EXPLAIN {}", JOIN.replace("VIEW", "remote")),
            ],
        ]
        .concat(),
    );
    let text = ok(&with_options);
    assert!(text.starts_with(&expected), "{text}");
    assert!(text.contains(&location), "{text}");
    assert!(
        !text.contains(&moto.secret_access_key),
        "secret printed: {text}"
    );

    // A wrong secret: a clear error naming the location, and not the secret.
    let wrong = options.replace(&moto.secret_access_key, "not-the-secret-4711");
    let failed = hindcast(&[], &["-c", &view("remote", &wrong)]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "a wrong secret was accepted");
    assert!(stderr.contains(&location), "{stderr}");
    assert!(stderr.contains("403"), "{stderr}");
    assert!(stderr.contains("credentials"), "{stderr}");
    assert!(
        !stderr.contains("not-the-secret-4711"),
        "secret printed: {stderr}"
    );

    // No credentials at all: the same kind of error.
    let anonymous = hindcast(
        &[
            ("AWS_ENDPOINT", moto.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ],
        &["-c", &view("remote", "")],
    );
    assert!(
        !anonymous.status.success(),
        "an unsigned request was accepted"
    );
}

/// What [`FaultProxy`] does to the requests it passes on.
#[derive(Clone, Debug)]
enum Fault {
    None,
    /// Each request waits this long before it is passed on.
    Slow(std::time::Duration),
    /// `method` requests whose path contains the string get this status, with S3's error
    /// body, and reach no server.
    Fail(&'static str, String, u16),
}

/// An HTTP proxy in front of moto that injects faults: one request per connection (it asks
/// the server to close each), so every request can be judged on its own.
struct FaultProxy {
    endpoint: String,
    fault: std::sync::Arc<std::sync::Mutex<Fault>>,
    /// Every request's `METHOD path`, as seen.
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    injected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultProxy {
    fn start(upstream: &str) -> Self {
        use std::sync::{Arc, Mutex, atomic::AtomicUsize};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let proxy = Self {
            endpoint,
            fault: Arc::new(Mutex::new(Fault::None)),
            seen: Arc::new(Mutex::new(vec![])),
            injected: Arc::new(AtomicUsize::new(0)),
        };
        let (fault, seen, injected) = (
            Arc::clone(&proxy.fault),
            Arc::clone(&proxy.seen),
            Arc::clone(&proxy.injected),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (fault, seen, injected, upstream) = (
                    Arc::clone(&fault),
                    Arc::clone(&seen),
                    Arc::clone(&injected),
                    upstream.clone(),
                );
                std::thread::spawn(move || {
                    let _ = Self::serve(client, &upstream, &fault, &seen, &injected);
                });
            }
        });
        proxy
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().expect("lock") = fault;
    }

    fn serve(
        mut client: std::net::TcpStream,
        upstream: &str,
        fault: &std::sync::Mutex<Fault>,
        seen: &std::sync::Mutex<Vec<String>>,
        injected: &std::sync::atomic::AtomicUsize,
    ) -> std::io::Result<()> {
        use std::io::{Read, Write};
        let mut reader = BufReader::new(client.try_clone()?);
        let mut head = vec![];
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            if !lower.starts_with("connection:") {
                head.push(line);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let request = head.first().cloned().unwrap_or_default();
        let mut words = request.split_whitespace();
        let (method, path) = (
            words.next().unwrap_or_default().to_string(),
            words.next().unwrap_or_default().to_string(),
        );
        seen.lock().expect("lock").push(format!("{method} {path}"));
        match fault.lock().expect("lock").clone() {
            Fault::None => {}
            Fault::Slow(delay) => std::thread::sleep(delay),
            Fault::Fail(on, part, status) => {
                if method == on && path.contains(&part) {
                    injected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError\
                                </Code><Message>injected by the test</Message></Error>";
                    write!(
                        client,
                        "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )?;
                    return Ok(());
                }
            }
        }
        let mut server = std::net::TcpStream::connect(upstream)?;
        for line in &head {
            server.write_all(line.as_bytes())?;
        }
        server.write_all(b"Connection: close\r\n\r\n")?;
        server.write_all(&body)?;
        std::io::copy(&mut server, &mut client)?;
        Ok(())
    }
}

#[test]
fn object_store_faults_end_in_a_clear_error_after_bounded_retries() {
    let mut moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let location = format!("s3://{}/faulty_stats/", moto.bucket);
    let env = [
        ("AWS_ACCESS_KEY_ID", moto.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", moto.secret_access_key.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", proxy.endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let repo = ["--repo", "examples/feature_repo"];
    let view = format!(
        "CREATE FEATURE VIEW remote ENTITY (user_id) TIMESTAMP event_timestamp \
         CREATED created_timestamp TTL INTERVAL '90 days' STORED AS PARQUET \
         LOCATION '{location}'"
    );
    let join = JOIN.replace("VIEW", "remote");
    let query = [&repo[..], &["-c", &view, "-c", &join]].concat();
    let expected = ok(&hindcast(
        &[],
        &[
            &repo[..],
            &["-c", &JOIN.replace("VIEW", "user_spending_stats")],
        ]
        .concat(),
    ));
    let copy = |target: &str| {
        format!("COPY (SELECT * FROM user_spending_stats) TO '{target}' STORED AS PARQUET")
    };
    ok(&hindcast(
        &env,
        &[&repo[..], &["-c", &copy(&location)]].concat(),
    ));
    proxy.seen.lock().expect("lock").clear();
    assert_eq!(ok(&hindcast(&env, &query)), expected);

    // Slow answers: slower, the same answer.
    proxy.set(Fault::Slow(std::time::Duration::from_millis(200)));
    assert_eq!(ok(&hindcast(&env, &query)), expected);

    // One object answers 503 every time: an error naming it after the retries.
    let object = proxy
        .seen
        .lock()
        .expect("lock")
        .iter()
        .find_map(|r| {
            r.strip_prefix("GET ")
                .filter(|p| p.ends_with(".parquet"))
                .map(str::to_string)
        })
        .expect("a Parquet object was read");
    let key = object.rsplit('/').next().expect("a name").to_string();
    proxy.set(Fault::Fail("GET", key.clone(), 503));
    let started = std::time::Instant::now();
    let failed = hindcast(&env, &query);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "a failing object was read");
    println!("one object failing: {stderr}");
    assert!(stderr.contains(&key) && stderr.contains("503"), "{stderr}");
    assert!(stderr.contains("retries"), "{stderr}");
    let attempts = proxy.injected.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (hindcast::storage::S3_RETRIES + 1..=4 * (hindcast::storage::S3_RETRIES + 1))
            .contains(&attempts),
        "{attempts} requests for the failing object"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "the retries took {:?}",
        started.elapsed()
    );

    // A COPY one of whose files fails to upload leaves nothing at its target: the files
    // go under a hidden sibling prefix first, and those written are deleted.
    let target = format!("s3://{}/copied/", moto.bucket);
    // Hive partitions, so that the COPY writes several files.
    let partitioned = format!(
        "COPY (SELECT *, user_id % 3 AS part FROM user_spending_stats) TO '{target}' \
         STORED AS PARQUET PARTITIONED BY (part)"
    );
    // (The request path is URL-encoded.)
    proxy.set(Fault::Fail("PUT", "part%3D1/".to_string(), 500));
    proxy.seen.lock().expect("lock").clear();
    let failed = hindcast(&env, &[&repo[..], &["-c", &partitioned]].concat());
    assert!(
        !failed.status.success(),
        "a failed upload was reported as written: {:?}",
        proxy.seen.lock().expect("lock")
    );
    let requests = proxy.seen.lock().expect("lock").clone();
    let bucket = format!("/{}/", moto.bucket);
    let written: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains(&format!("{bucket}.hindcast-tmp-")))
        .collect();
    assert!(
        written.len() >= 2,
        "one file failed, another was written: {requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains(&format!("{bucket}copied/"))),
        "the failed COPY wrote at its target: {requests:?}"
    );
    assert!(
        // object_store deletes in bulk: POST /bucket?delete.
        requests
            .iter()
            .any(|r| r.starts_with(&format!("POST {}?delete", bucket.trim_end_matches('/')))),
        "what the failed COPY wrote was not deleted: {requests:?}"
    );
    // The same COPY, nothing failing: every file at the target.
    proxy.set(Fault::None);
    ok(&hindcast(
        &env,
        &[&repo[..], &["-c", &partitioned]].concat(),
    ));
    let copied_view = view
        .replace("faulty_stats/", "copied/")
        .replace("remote", "copied");
    let copied = ok(&hindcast(
        &env,
        &[
            &repo[..],
            &["-c", &copied_view, "-c", &JOIN.replace("VIEW", "copied")],
        ]
        .concat(),
    ));
    assert_eq!(copied, expected);
    // A single-file target: the one object written is copied to it.
    let file = format!("s3://{}/one/stats.parquet", moto.bucket);
    ok(&hindcast(
        &env,
        &[&repo[..], &["-c", &copy(&file)]].concat(),
    ));
    let file_view = view
        .replace("faulty_stats/", "one/stats.parquet")
        .replace("remote", "one");
    let one = ok(&hindcast(
        &env,
        &[
            &repo[..],
            &["-c", &file_view, "-c", &JOIN.replace("VIEW", "one")],
        ]
        .concat(),
    ));
    assert_eq!(one, expected);

    // The server stopped in the middle of a query: an error, not a hang.
    proxy.set(Fault::Slow(std::time::Duration::from_millis(300)));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hindcast"))
        .envs(env.iter().copied())
        .args(["-q", "--format", "csv"])
        .args(&query)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs hindcast");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("status").is_none(),
        "the query ended before the server stopped"
    );
    let _ = moto.child.kill();
    let _ = moto.child.wait();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("status") {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "hindcast hangs with its server gone"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    println!("server stopped: {stderr}");
    assert!(
        !status.success(),
        "the query succeeded with its server gone"
    );
    assert!(stderr.contains("faulty_stats/"), "{stderr}");
}
