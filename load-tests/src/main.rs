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
    if let Some(addr) = &cli.serve_echo {
        return echo::serve(addr).await;
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
