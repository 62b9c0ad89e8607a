//! `tessera-e2e tools | up DIR | down DIR`: build the pinned binaries, start a control plane
//! that keeps running, or stop it.

use std::path::PathBuf;
use std::process::ExitCode;

use tessera_e2e::controlplane::{self, ControlPlane};
use tessera_e2e::tools::Tools;

fn usage() -> ExitCode {
    eprintln!("usage: tessera-e2e tools | up DIR [NODES] | down DIR");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tools") => Tools::ensure().map(|tools| {
            for (name, version) in &tools.versions {
                println!("{name}={version}");
            }
        }),
        Some("up") => {
            let Some(dir) = args.get(1).map(PathBuf::from) else {
                return usage();
            };
            let nodes = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(3);
            Tools::ensure()
                .and_then(|tools| ControlPlane::start(&tools, &dir, nodes))
                .map(|plane| {
                    let state = plane.detach();
                    println!("export KUBECONFIG={}", state.admin_kubeconfig.display());
                })
        }
        Some("down") => {
            let Some(dir) = args.get(1).map(PathBuf::from) else {
                return usage();
            };
            controlplane::down(&dir);
            Ok(())
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tessera-e2e: {error:#}");
            ExitCode::FAILURE
        }
    }
}
