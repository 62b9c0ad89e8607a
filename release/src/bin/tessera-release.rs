//! `tessera-release manifests [--check]` writes `manifests/install.yaml` from the chart (or fails
//! when it drifted); `tessera-release check-image ARCHIVE` reads an image archive back with
//! go-containerregistry and prints what it found.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use tessera_e2e::tools::Tools;

const USAGE: &str = "usage: tessera-release manifests [--check] | check-image ARCHIVE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result: Result<()> = match (args.first().map(String::as_str), args.get(1)) {
        (Some("manifests"), _) => Tools::ensure().and_then(|tools| {
            tessera_release::install::write_or_check(&tools, args.iter().any(|a| a == "--check"))
        }),
        (Some("check-image"), Some(archive)) => Tools::ensure().and_then(|tools| {
            println!(
                "{}",
                tessera_release::image::check(&tools, Path::new(archive))?
            );
            Ok(())
        }),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tessera-release: {error:#}");
            ExitCode::FAILURE
        }
    }
}
