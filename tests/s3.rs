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
