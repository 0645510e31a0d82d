//! Command-line flags, in the style of `datafusion-cli`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "hindcast",
    version,
    about = "Point-in-time SQL over Parquet and CSV"
)]
pub struct Args {
    #[command(subcommand)]
    pub subcommand: Option<Subcommand>,

    /// Feature repository to load first: a directory of `.sql` files with feature views,
    /// feature services and tables
    #[arg(long)]
    pub repo: Option<PathBuf>,

    /// SQL to run (repeatable; each may hold several `;`-separated statements)
    #[arg(short = 'c', long = "command")]
    pub command: Vec<String>,

    /// File of SQL statements to run (repeatable)
    #[arg(short = 'f', long = "file")]
    pub file: Vec<PathBuf>,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Print only results: no row counts or timings
    #[arg(short, long)]
    pub quiet: bool,

    /// Memory limit for query execution, e.g. 512M or 2G; past it operators spill to disk
    #[arg(short = 'm', long = "memory-limit", value_parser = hindcast::parse_memory_limit)]
    pub memory_limit: Option<usize>,

    /// File of statements to run first (default for the shell: ~/.hindcastrc, if present)
    #[arg(short = 'r', long = "rc")]
    pub rc: Option<PathBuf>,

    /// Open the interactive shell after running -c/-f (it opens by itself without them)
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Most rows to show in table format (0 for all)
    #[arg(long, default_value_t = 40)]
    pub maxrows: usize,

    /// Run queries on these `hindcast worker`s (HOST:PORT or http://HOST:PORT,
    /// comma-separated): this process plans, they execute
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Write deterministic synthetic labels and feature tables (the seed documents' schema)
    /// as Parquet, for benchmarks and trials at scale
    Generate(crate::generate::GenerateArgs),
    /// Serve as a worker of distributed queries: run the stages that coordinators
    /// (`hindcast --workers ...`) send, within this process's memory limit
    Worker(WorkerArgs),
    /// Check a training set written by `COPY (...) TO 'dir/' STORED AS PARQUET` against its
    /// manifest: its files and rows, leakage, null fractions, and its sources
    Validate(ValidateArgs),
    /// Run a training set's recorded query again (Delta tables at the recorded versions)
    /// into a new directory, and compare checksums
    Reproduce(ReproduceArgs),
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The training set's directory
    pub dir: PathBuf,

    /// Fail when a feature column has more nulls than this fraction of rows (0 to 1)
    #[arg(long, default_value_t = 1.0)]
    pub max_null_fraction: f64,
}

#[derive(Debug, clap::Args)]
pub struct ReproduceArgs {
    /// The training set's directory
    pub dir: PathBuf,

    /// The directory to write the reproduced training set to (new or empty)
    pub out: PathBuf,

    /// Memory limit for the query, e.g. 2G; past it operators spill to disk
    #[arg(short = 'm', long = "memory-limit", value_parser = hindcast::parse_memory_limit)]
    pub memory_limit: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Address to listen on, e.g. 0.0.0.0:50051
    #[arg(long)]
    pub listen: String,

    /// Memory limit for this worker's tasks, e.g. 4G; past it they spill to disk
    #[arg(short = 'm', long = "memory-limit", value_parser = hindcast::parse_memory_limit)]
    pub memory_limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Tsv,
    Json,
    Ndjson,
}
