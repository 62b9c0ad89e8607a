//! The pinned control-plane binaries: built from their Go modules (`e2e/tools/<name>`) into a
//! cache outside the repository, keyed by version, so a second run costs nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// One Go module under `e2e/tools` and what it builds.
struct Tool {
    dir: &'static str,
    version_key: &'static str,
    module: &'static str,
    /// (package, binary name)
    binaries: &'static [(&'static str, &'static str)],
    /// Tessera's own Go source (not only a pin of an upstream command): the cache key includes
    /// a digest of it, so an edit is rebuilt.
    local: bool,
}

const TOOLS: &[Tool] = &[
    Tool {
        dir: "kubernetes",
        version_key: "KUBERNETES_VERSION",
        module: "k8s.io/kubernetes",
        binaries: &[
            ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
            (
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-controller-manager",
            ),
            ("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
            // The machine's kubectl may be several minors older; this one has no skew.
            ("k8s.io/kubernetes/cmd/kubectl", "kubectl"),
        ],
        local: false,
    },
    Tool {
        dir: "etcd",
        version_key: "ETCD_VERSION",
        module: "go.etcd.io/etcd/server/v3",
        binaries: &[("go.etcd.io/etcd/server/v3", "etcd")],
        local: false,
    },
    Tool {
        dir: "kwok",
        version_key: "KWOK_VERSION",
        module: "sigs.k8s.io/kwok",
        binaries: &[("sigs.k8s.io/kwok/cmd/kwok", "kwok")],
        local: false,
    },
    Tool {
        dir: "helm",
        version_key: "HELM_VERSION",
        module: "helm.sh/helm/v3",
        binaries: &[("helm.sh/helm/v3/cmd/helm", "helm")],
        local: false,
    },
    // Checks of shipped artifacts with upstream code: kind's config types, go-containerregistry
    // for the image, gopher-lua for the Argo CD health script.
    Tool {
        dir: "checks",
        version_key: "KIND_VERSION",
        module: "sigs.k8s.io/kind",
        binaries: &[("tessera.dev/e2e/tools/checks", "tessera-checks")],
        local: true,
    },
];

/// Where the built binaries are.
#[derive(Debug, Clone)]
pub struct Tools {
    paths: BTreeMap<String, PathBuf>,
    pub versions: BTreeMap<String, String>,
}

impl Tools {
    /// Runs one of `tessera-checks`' checks (kind's config types, go-containerregistry,
    /// gopher-lua); its stdout, or an error with its stderr.
    pub fn check(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(self.path("tessera-checks")?);
        command.args(args);
        crate::process::stdout_of(command, &format!("tessera-checks {}", args.join(" ")))
    }

    /// The path of binary `name` (kube-apiserver, etcd, kwok, helm, ...).
    pub fn path(&self, name: &str) -> Result<&Path> {
        self.paths
            .get(name)
            .map(PathBuf::as_path)
            .with_context(|| format!("no tool {name}"))
    }

    /// Builds whatever is missing from the cache and returns the paths of all binaries.
    pub fn ensure() -> Result<Self> {
        let tools_dir = tools_dir();
        let versions = read_versions(&tools_dir.join("versions.env"))?;
        let cache = cache_dir();
        std::fs::create_dir_all(&cache)?;
        // Tests (threads and processes) ask at once; one builds, the others wait and reuse.
        let _building = crate::lockfile::wait(&cache.join("build.lock"))?;
        let mut paths = BTreeMap::new();
        for tool in TOOLS {
            let version = versions
                .get(tool.version_key)
                .with_context(|| format!("versions.env lacks {}", tool.version_key))?;
            let module_dir = tools_dir.join(tool.dir);
            check_go_mod(&module_dir, tool.module, version)?;
            let key = if tool.local {
                format!("{version}-{:016x}", source_digest(&module_dir)?)
            } else {
                version.clone()
            };
            let bin_dir = cache.join(format!("{}-{key}", tool.dir)).join("bin");
            let missing = tool
                .binaries
                .iter()
                .any(|(_, name)| !bin_dir.join(name).is_file());
            if missing {
                build(tool, version, &module_dir, &bin_dir)?;
            }
            for (_, name) in tool.binaries {
                paths.insert(name.to_string(), bin_dir.join(name));
            }
        }
        Ok(Self { paths, versions })
    }
}

/// A digest of a module's Go source, go.mod and go.sum.
fn source_digest(module_dir: &Path) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<PathBuf> = std::fs::read_dir(module_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "go")
                || p.file_name()
                    .is_some_and(|n| n == "go.mod" || n == "go.sum")
        })
        .collect();
    files.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.file_name().hash(&mut hasher);
        std::fs::read(&file)?.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

/// `e2e/tools` in this checkout.
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools")
}

/// `$TESSERA_E2E_CACHE`, else `$XDG_CACHE_HOME/tessera-e2e`, else `~/.cache/tessera-e2e`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESSERA_E2E_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("tessera-e2e")
}

fn read_versions(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn check_go_mod(module_dir: &Path, module: &str, version: &str) -> Result<()> {
    let go_mod = module_dir.join("go.mod");
    let text =
        std::fs::read_to_string(&go_mod).with_context(|| format!("read {}", go_mod.display()))?;
    let wanted = format!("{module} {version}");
    if !text
        .lines()
        .any(|l| l.trim().trim_start_matches("require ").trim() == wanted)
    {
        bail!(
            "{} does not require {wanted} as versions.env says; update both together",
            go_mod.display()
        );
    }
    Ok(())
}

/// Stamps the release into Kubernetes binaries, which otherwise report v0.0.0-master (kubectl
/// then warns about version skew on every call).
fn version_ldflags(tool: &Tool, version: &str) -> String {
    if tool.dir != "kubernetes" {
        return String::new();
    }
    let numbers: Vec<&str> = version.trim_start_matches('v').split('.').collect();
    let (major, minor) = (
        numbers.first().copied().unwrap_or("1"),
        numbers.get(1).copied().unwrap_or("0"),
    );
    ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"]
        .iter()
        .map(|package| {
            format!(
                "-X {package}.gitVersion={version} -X {package}.gitMajor={major} -X {package}.gitMinor={minor} -X {package}.gitTreeState=clean"
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The name `go build -o DIR` gives a command: the last path element, or the one before it when
/// the last is a major-version suffix (`go.etcd.io/etcd/server/v3` builds `server`).
fn go_binary_name(package: &str) -> &str {
    let mut elements = package.rsplit('/');
    let last = elements.next().unwrap_or(package);
    let is_version_suffix =
        last.len() > 1 && last.starts_with('v') && last[1..].chars().all(|c| c.is_ascii_digit());
    if is_version_suffix {
        elements.next().unwrap_or(last)
    } else {
        last
    }
}

fn build(tool: &Tool, version: &str, module_dir: &Path, bin_dir: &Path) -> Result<()> {
    let started = Instant::now();
    eprintln!(
        "building {} {version} from its Go module (first run only; cached in {})",
        tool.dir,
        bin_dir.display()
    );
    let staging = bin_dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let mut command = Command::new(std::env::var_os("GO").unwrap_or_else(|| "go".into()));
    command
        .current_dir(module_dir)
        .env("GOFLAGS", "-mod=readonly")
        .env("CGO_ENABLED", "0")
        .args(["build", "-trimpath"])
        .arg(format!("-ldflags=-s -w {}", version_ldflags(tool, version)))
        .arg("-o")
        .arg(&staging)
        .args(tool.binaries.iter().map(|(package, _)| *package));
    let status = command
        .status()
        .with_context(|| format!("run go build for {} (is Go installed?)", tool.dir))?;
    if !status.success() {
        bail!("go build for {} {version} failed with {status}", tool.dir);
    }
    for (package, name) in tool.binaries {
        let built = staging.join(go_binary_name(package));
        let wanted = staging.join(name);
        if built != wanted && built.is_file() {
            std::fs::rename(&built, &wanted)?;
        }
        if !wanted.is_file() {
            bail!("go build did not produce {}", wanted.display());
        }
    }
    let _ = std::fs::remove_dir_all(bin_dir);
    std::fs::rename(&staging, bin_dir)?;
    eprintln!("built {} {version} in {:.0?}", tool.dir, started.elapsed());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_binaries_like_go_build() {
        assert_eq!(
            go_binary_name("k8s.io/kubernetes/cmd/kube-apiserver"),
            "kube-apiserver"
        );
        assert_eq!(go_binary_name("go.etcd.io/etcd/server/v3"), "server");
    }

    #[test]
    fn versions_file_agrees_with_every_go_mod() {
        let versions = read_versions(&tools_dir().join("versions.env")).expect("versions.env");
        for tool in TOOLS {
            let version = &versions[tool.version_key];
            check_go_mod(&tools_dir().join(tool.dir), tool.module, version).expect("go.mod agrees");
        }
    }
}
