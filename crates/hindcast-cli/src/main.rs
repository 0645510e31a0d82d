//! `hindcast`: run point-in-time SQL from the command line.

mod args;
mod print;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use datafusion::common::Result;
use hindcast::Hindcast;

use args::Args;
use print::Printer;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let hc = session(&args)?;
    if let Some(repo) = &args.repo {
        hc.load_repository(repo).await?;
    }
    let printer = Printer::new(args.format, args.maxrows, args.quiet);
    let mut sources: Vec<(String, String)> = args
        .command
        .iter()
        .map(|c| ("-c".to_string(), c.clone()))
        .collect();
    for file in &args.file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            datafusion::common::DataFusionError::Execution(format!(
                "cannot read {}: {e}",
                file.display()
            ))
        })?;
        sources.push((file.display().to_string(), text));
    }
    if sources.is_empty() {
        return Err(datafusion::common::plan_datafusion_err!(
            "nothing to run: pass SQL with -c \"...\" or a file with -f FILE (the interactive shell is not built yet)"
        ));
    }
    for (_origin, text) in sources {
        for statement in hc.parse_sql(&text)? {
            let start = Instant::now();
            let df = hc.execute_statement(statement).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            printer.print(&schema, &batches, start.elapsed())?;
        }
    }
    Ok(())
}

/// A session configured from the command line.
fn session(args: &Args) -> Result<Hindcast> {
    let config = Hindcast::default_config(args.memory_limit).with_information_schema(true);
    match args.memory_limit {
        Some(limit) => Hindcast::with_memory_limit(config, limit),
        None => Ok(Hindcast::new_with_config_rt(
            config,
            hindcast::storage::runtime_env_builder().build_arc()?,
        )),
    }
}
