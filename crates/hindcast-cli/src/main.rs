//! `hindcast`: run point-in-time SQL from the command line.

mod args;
mod command;
mod error;
mod exec;
mod generate;
mod helper;
mod input;
mod print;
mod repl;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use datafusion::common::{DataFusionError, Result};
use hindcast::Hindcast;

use args::Args;
use print::Printer;

/// mimalloc, as `datafusion-cli` uses: the sorts allocate and free buffers of hundreds of
/// megabytes, which the system allocator returns to the kernel and then faults back in page
/// by page; mimalloc keeps and reuses them.
///
/// Built without transparent huge pages (`no_thp`): mimalloc asks for them with
/// `madvise`, and where the kernel then compacts memory on a page fault (`defrag=madvise`)
/// a query's system time grew tenfold whenever memory was fragmented, which it is after
/// other large processes (`docs/benchmarks.md`, "Huge pages").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads for blocking file I/O; see `main`.
const BLOCKING_THREADS: usize = 8;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(args::Subcommand::Generate(generate)) = &args.subcommand {
        return match generate::run(generate) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {}", hindcast::error_message(&e));
                ExitCode::FAILURE
            }
        };
    }
    // Local files are read on tokio's blocking pool, one task per file or directory. Its
    // default of 512 threads made a query over hundreds of daily partitions start as many
    // threads (docs/benchmarks.md); a few per core keep the disk as busy.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &args.subcommand {
        Some(args::Subcommand::Worker(worker)) => runtime.block_on(serve_worker(worker)),
        Some(args::Subcommand::Validate(validate)) => {
            match runtime.block_on(validate_set(validate)) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::FAILURE,
                Err(e) => Err(e),
            }
        }
        Some(args::Subcommand::Reproduce(reproduce)) => runtime.block_on(reproduce_set(reproduce)),
        _ => runtime.block_on(run(args)),
    };
    // Every statement has finished or failed, so the runtime is left to end with the
    // process instead of shutting it down: shutdown cancels the background tasks of a failed
    // distributed query, and datafusion-distributed's coordinator then panics in one of them
    // ("task N was cancelled", its `drain_pending_tasks`), after the query's real error.
    std::mem::forget(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", hindcast::error_message(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let hc = session(&args)?;
    let workers = hindcast::WorkerList::parse(&args.workers)?;
    let interactive = (args.command.is_empty() && args.file.is_empty()) || args.interactive;
    if let Some(repo) = &args.repo {
        match hc.load_repository(repo).await {
            Ok(()) if interactive => println!("{}", command::summary(&hc, repo).await),
            Ok(()) => {}
            // The shell starts anyway, so the user can fix the file and retry.
            Err(e) if interactive => eprintln!("Error: {}", hindcast::error_message(&e)),
            Err(e) => return Err(e),
        }
    }
    // After the repository, so the command line wins over a `SET hindcast.workers` in it
    // (and before the rc file and the commands, which win over the command line's).
    if !workers.urls().is_empty() {
        hc.set_workers(workers);
    }
    let mut printer = Printer::new(args.format, args.maxrows, args.quiet);
    // An explicit rc file always runs first; ~/.hindcastrc only for the shell.
    let rc = args.rc.clone().or_else(|| {
        let default = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".hindcastrc"));
        default.filter(|p| interactive && p.is_file())
    });
    let read = |file: &PathBuf| {
        std::fs::read_to_string(file).map_err(|e| {
            datafusion::common::DataFusionError::from(e)
                .context(format!("cannot read {}", file.display()))
        })
    };
    let mut sources: Vec<String> = vec![];
    if let Some(rc) = &rc {
        sources.push(read(rc)?);
    }
    sources.extend(args.command.iter().cloned());
    for file in &args.file {
        sources.push(read(file)?);
    }
    for text in sources {
        exec::run_sql(&hc, &printer, &text).await?;
    }
    if interactive {
        repl::run(&hc, &mut printer).await?;
    }
    Ok(())
}

/// A session configured from the command line.
fn session(args: &Args) -> Result<Hindcast> {
    Hindcast::builder().memory_limit(args.memory_limit).build()
}

/// `hindcast validate`: each check on a line; whether all passed.
async fn validate_set(args: &args::ValidateArgs) -> Result<bool> {
    if !(0.0..=1.0).contains(&args.max_null_fraction) {
        return Err(DataFusionError::Plan(format!(
            "--max-null-fraction is a fraction of rows, from 0 to 1, not {}",
            args.max_null_fraction
        )));
    }
    let checks = hindcast::manifest::validate(&args.dir, args.max_null_fraction).await?;
    let failed = checks.iter().filter(|c| !c.passed).count();
    for check in &checks {
        println!(
            "{} {}",
            if check.passed { "ok  " } else { "FAIL" },
            check.what
        );
    }
    if failed == 0 {
        println!("{}: valid", args.dir.display());
    } else {
        println!(
            "{}: {failed} of {} checks failed",
            args.dir.display(),
            checks.len()
        );
    }
    Ok(failed == 0)
}

/// `hindcast reproduce`: the recorded query again, into `out`, and the checksums compared.
async fn reproduce_set(args: &args::ReproduceArgs) -> Result<()> {
    let hc = Hindcast::builder()
        .memory_limit(args.memory_limit)
        .build()?;
    let out = args.out.to_string_lossy();
    let reproduced = hindcast::manifest::reproduce(&hc, &args.dir, &out).await?;
    if !reproduced.matches() {
        return Err(DataFusionError::Execution(format!(
            "the reproduced training set in {out} differs: checksum {} against the recorded {}",
            reproduced.checksum, reproduced.recorded
        )));
    }
    println!(
        "{out}: {} rows, checksum {} as recorded in {}",
        reproduced.rows,
        reproduced.checksum,
        args.dir.display()
    );
    Ok(())
}

/// `hindcast worker`: serve until killed.
async fn serve_worker(args: &args::WorkerArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            DataFusionError::Execution(format!("cannot listen on {}: {e}", args.listen))
        })?;
    // The bound address, so a worker started on port 0 says which port it got.
    match listener.local_addr() {
        Ok(address) => eprintln!("hindcast worker listening on {address}"),
        Err(_) => eprintln!("hindcast worker listening on {}", args.listen),
    }
    hindcast::distributed::serve_worker(listener, args.memory_limit).await
}
