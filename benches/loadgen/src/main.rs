//! `presence-loadgen`: set up, drive, report (`--help` for the flags).

use anyhow::Context;
use clap::Parser;
use presence_loadgen::cli::Args;
use presence_loadgen::{Load, Settings};
use std::process::ExitCode;

/// The run could not happen at all (bad flags, server unreachable, setup refused).
const CANNOT_RUN: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    match args
        .into_settings()
        .map_err(anyhow::Error::from)
        .and_then(|s| run(&s))
    {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(error) => {
                        eprintln!("presence-loadgen: writing the report: {error}");
                        return ExitCode::from(CANNOT_RUN);
                    }
                }
            } else {
                print!("{}", report.to_text());
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("presence-loadgen: {error:#}");
            ExitCode::from(CANNOT_RUN)
        }
    }
}

fn run(settings: &Settings) -> anyhow::Result<presence_loadgen::Report> {
    let runtime = if settings.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads)
            .enable_all()
            .build()
    }
    .context("building the runtime")?;
    runtime.block_on(async {
        eprintln!(
            "presence-loadgen: loading {} tickets and configuring {} devices on {} gates at {}",
            settings.tickets, settings.devices, settings.gates, settings.urls.join(",")
        );
        let prepared = presence_loadgen::prepare(settings).await.context("setup")?;
        let inventory = &prepared.setup().inventory;
        let load = match settings.load {
            Load::Closed { concurrency } => format!("closed loop, {concurrency} connections"),
            Load::Open { rate, max_in_flight } => {
                format!("open loop at {rate}/s, at most {max_in_flight} in flight")
            }
        };
        eprintln!(
            "presence-loadgen: {} tickets loaded in {:.2} s at venue {}; driving {load} for {:?} after {:?} warm-up",
            inventory.tickets, inventory.seconds, inventory.venue_id, settings.duration, settings.warmup
        );
        presence_loadgen::run(settings, prepared).await.context("drive")
    })
}
