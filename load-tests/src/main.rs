//! `sluice-load` binary: parses flags, runs [`sluice_load::run`], prints the
//! result table to stdout and optionally writes the JSON results and a PNG.

use std::process::ExitCode;

use clap::Parser;
use sluice_load::cli::Cli;
use sluice_load::{echo, plot, report};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    match (&cli.serve_echo, &cli.serve_echo_grpc) {
        (Some(rest), Some(grpc)) => {
            tokio::try_join!(echo::serve(rest), echo::serve_grpc(grpc))?;
            return Ok(());
        }
        (Some(rest), None) => return echo::serve(rest).await,
        (None, Some(grpc)) => return echo::serve_grpc(grpc).await,
        (None, None) => {}
    }
    let config = cli.to_config()?;
    let title = format!(
        "{} {} latency vs throughput",
        config.model,
        config.protocol.as_str()
    );
    let results = sluice_load::run(config).await?;
    print!("{}", report::table(&results));
    if let Some(path) = &cli.output {
        report::write_json(path, &results)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &cli.plot {
        plot::write_png(path, &results, &title)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
