//! The `walrus` binary: server, client, benchmark and inspection tools.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use walrus::bench::store::{StoreBenchConfig, run as run_store_bench};
use walrus::store::FsyncPolicy;

#[derive(Parser)]
#[command(name = "walrus", version, about = "A durable key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure walrus.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The storage engine without a server, against the original design.
    Store(StoreBenchArgs),
}

#[derive(Args)]
struct StoreBenchArgs {
    /// Writes per run.
    #[arg(long, default_value_t = 10_000)]
    writes: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Concurrent writer counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 8, 64])]
    writers: Vec<usize>,
    /// Directory for the durable stores' files (on the disk to measure).
    #[arg(long, default_value = "walrus-bench-data")]
    dir: PathBuf,
    /// Records for the replay, snapshot and RAM measurements (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    large_records: u64,
    /// fsync policy of the durable store: always, interval=MS or never.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Run only the in-memory stores (no disk), e.g. for profiling.
    #[arg(long)]
    memory_only: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Bench(BenchCommand::Store(args)) => bench_store(args),
    }
}

fn bench_store(args: StoreBenchArgs) -> Result<ExitCode> {
    let config = StoreBenchConfig {
        writes: args.writes,
        value_size: args.value_size,
        writer_counts: args.writers,
        dir: args.dir.clone(),
        large_records: args.large_records,
        fsync: args.fsync,
        progress: !args.json,
        memory_only: args.memory_only,
    };
    let report = run_store_bench(&config)?;
    std::fs::remove_dir_all(&args.dir).ok();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.render());
    }
    Ok(ExitCode::SUCCESS)
}
