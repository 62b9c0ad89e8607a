//! `image-archive`: the operator's container image as an archive, built without a container
//! engine: `docker load`, `kind load image-archive` and containerd import it.
//!
//! Two gzip-compressed layers: the shared libraries the binary links (as the build machine's Debian packages
//! installed them, found with `ldd`) with a passwd entry for the non-root user, and the binary.
//! The archive holds both an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) and
//! Docker's `manifest.json` pointing at the same blobs, as `docker save` writes since Docker 25.
//! Entries are sorted and dated `SOURCE_DATE_EPOCH` (default 0), so a build is reproducible.
//!
//! usage: image-archive BINARY OUTPUT.tar REPOSITORY:TAG

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The non-root user the image runs as (the chart's runAsUser).
const USER_ID: u32 = 65532;
const ENTRYPOINT: &str = "/usr/local/bin/tessera-operator";

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A layer's files: path in the image → (mode, content).
type Files = BTreeMap<String, (u32, Vec<u8>)>;

/// A tar of `files` (and their parent directories), reproducible.
fn layer(files: &Files, mtime: u64) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files.keys() {
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_path_buf());
            parent = dir.parent();
        }
    }
    for dir in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(0);
        builder.append_data(&mut header, format!("{}/", dir.display()), std::io::empty())?;
    }
    for (path, (mode, content)) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, path, content.as_slice())?;
    }
    Ok(builder.into_inner()?)
}

/// `layer` compressed the same way every time (gzip without a name or time in its header).
fn gzip(layer: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(layer)?;
    Ok(encoder.finish()?)
}

/// The shared libraries `binary` loads, with the dynamic loader, from `ldd`.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    if !output.status.success() {
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut paths = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, output, reference] = args.as_slice() else {
        bail!("usage: image-archive BINARY OUTPUT.tar REPOSITORY:TAG");
    };
    let mtime: u64 = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let binary = Path::new(binary);
    let version = reference
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");

    let mut base = Files::new();
    for library in libraries(binary)? {
        let content =
            std::fs::read(&library).with_context(|| format!("reading {}", library.display()))?;
        let path = library.display().to_string();
        base.insert(path.trim_start_matches('/').to_string(), (0o755, content));
    }
    base.insert(
        "etc/passwd".into(),
        (0o644, format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER_ID}:{USER_ID}:nonroot:/home/nonroot:/sbin/nologin\n").into_bytes()),
    );
    base.insert(
        "etc/group".into(),
        (
            0o644,
            format!("root:x:0:\nnonroot:x:{USER_ID}:\n").into_bytes(),
        ),
    );
    base.insert(
        "etc/nsswitch.conf".into(),
        (0o644, b"hosts: files dns\n".to_vec()),
    );
    let mut app = Files::new();
    app.insert(
        ENTRYPOINT.trim_start_matches('/').into(),
        (
            0o755,
            std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?,
        ),
    );
    let uncompressed = [layer(&base, mtime)?, layer(&app, mtime)?];
    let layers = [gzip(&uncompressed[0])?, gzip(&uncompressed[1])?];
    let diff_ids: Vec<String> = uncompressed
        .iter()
        .map(|l| format!("sha256:{}", sha256(l)))
        .collect();

    let created = "1970-01-01T00:00:00Z";
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": format!("{USER_ID}:{USER_ID}"),
            "Entrypoint": [ENTRYPOINT],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Labels": {
                "org.opencontainers.image.title": "tessera-operator",
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.description": "Tessera: microservices with their own roles and schemas on Citus",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": created, "created_by": "image-archive: shared libraries (ldd) and passwd"},
            {"created": created, "created_by": "image-archive: the operator binary"},
        ],
    }))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", sha256(l)),
            "size": l.len(),
        })).collect::<Vec<_>>(),
    }))?;
    let manifest_digest = sha256(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": format!("docker.io/{reference}"),
                "org.opencontainers.image.ref.name": version,
            },
        }],
    }))?;
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [reference],
        "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", sha256(l))).collect::<Vec<_>>(),
    }]))?;

    let mut archive = Files::new();
    archive.insert(
        "oci-layout".into(),
        (0o644, br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    archive.insert("index.json".into(), (0o644, index));
    archive.insert("manifest.json".into(), (0o644, docker_manifest));
    archive.insert(format!("blobs/sha256/{config_digest}"), (0o644, config));
    archive.insert(format!("blobs/sha256/{manifest_digest}"), (0o644, manifest));
    for l in &layers {
        archive.insert(format!("blobs/sha256/{}", sha256(l)), (0o644, l.clone()));
    }
    let tar = layer(&archive, mtime)?;
    if let Some(dir) = Path::new(output).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(output, &tar).with_context(|| format!("writing {output}"))?;
    println!(
        "wrote {output}: {reference}, {} MiB, manifest sha256:{manifest_digest}",
        tar.len() / (1024 * 1024)
    );
    Ok(())
}
